"""Validation and coercion of CSR arrays at the edge of the kernels, plus CSR transposition.

``check_csr`` is called once by each public wrapper: it returns C-contiguous int64 ``indptr``,
int32 ``indices`` and float32 ``data`` with column indices sorted within every row, or raises
``DataError`` naming what is wrong. Numba compiles one specialisation per dtype, so coercing
here avoids silent recompiles and float64 slow paths.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ._config import kernel


@kernel
def first_unsorted_row(indptr, indices):
    """-1 if every row's indices increase strictly; else the first row that does not (as ``row``),
    returning ``-2 - row`` when the problem is a duplicate rather than the order."""
    n_rows = indptr.shape[0] - 1
    unsorted = -1
    for r in range(n_rows):
        for p in range(indptr[r] + 1, indptr[r + 1]):
            if indices[p] == indices[p - 1]:
                return -2 - r
            if indices[p] < indices[p - 1] and unsorted < 0:
                unsorted = r
    return unsorted


@kernel
def _sort_rows(indptr, indices, data):
    out_i = indices.copy()
    out_d = data.copy()
    for r in range(indptr.shape[0] - 1):
        lo, hi = indptr[r], indptr[r + 1]
        order = np.argsort(indices[lo:hi], kind="mergesort")
        for q in range(hi - lo):
            out_i[lo + q] = indices[lo + order[q]]
            out_d[lo + q] = data[lo + order[q]]
    return out_i, out_d


@kernel
def transpose(indptr, indices, data, n_cols):
    """The (n_cols x n_rows) CSR transpose; each output row lists row ids in increasing order.

    An empty ``data`` transposes the structure only (the returned data is empty too).
    """
    n_rows = indptr.shape[0] - 1
    nnz = indices.shape[0]
    has_data = data.shape[0] > 0
    t_indptr = np.zeros(n_cols + 1, dtype=np.int64)
    for p in range(nnz):
        t_indptr[indices[p] + 1] += 1
    for c in range(n_cols):
        t_indptr[c + 1] += t_indptr[c]
    fill = t_indptr[:-1].copy()
    t_indices = np.empty(nnz, dtype=np.int32)
    t_data = np.empty(nnz if has_data else 0, dtype=data.dtype)
    for r in range(n_rows):
        for p in range(indptr[r], indptr[r + 1]):
            c = indices[p]
            q = fill[c]
            t_indices[q] = r
            if has_data:
                t_data[q] = data[p]
            fill[c] = q + 1
    return t_indptr, t_indices, t_data


def as_vector(arr, dtype, what: str, source: str | None = None, convert: bool = True) -> np.ndarray:
    """``arr`` as a C-contiguous 1-d array of ``dtype`` (integer dtypes take integer input only);
    ``convert=False`` checks the kind only and returns the array as given."""
    arr = np.asarray(arr)
    kinds = "iu" if np.issubdtype(dtype, np.integer) else "iuf"
    if arr.ndim != 1 or not (arr.size == 0 or arr.dtype.kind in kinds):
        kind = "integer" if kinds == "iu" else "numeric"
        raise DataError(f"{what} must be a 1-d {kind} array, got {arr.dtype} with shape {arr.shape}", source=source)
    return np.ascontiguousarray(arr, dtype=dtype) if convert else arr


def exclusion_rows(excl_indptr, excl_indices, n_rows: int, n_items: int, name: str, validate: bool = False):
    """The items excluded per row, as int64 ``indptr`` / int32 ``indices``: empty (or None) for
    none, or a CSR of one row per request row. O(rows) checks of the index pointer; ``validate``
    also checks every index is in ``[0, n_items)`` (O(nnz)); that each row is sorted is the
    caller's promise. Bad input raises ``DataError`` naming ``name``."""
    excl_indptr = _optional_vector(excl_indptr, np.int64, "excl_indptr", name)
    excl_indices = _optional_vector(excl_indices, np.int32, "excl_indices", name)
    n_ptr = excl_indptr.shape[0] if excl_indptr.ndim == 1 else -1
    if n_ptr == 0 and excl_indices.ndim == 1:
        return excl_indptr, excl_indices
    if (n_ptr != n_rows + 1 or excl_indices.ndim != 1 or excl_indptr[0] != 0
            or excl_indptr[n_rows] != excl_indices.shape[0]
            or (n_rows > 1 and bool(np.any(excl_indptr[1:] < excl_indptr[:-1])))):  # O(rows): no read past the end
        raise DataError(f"excl_indptr must be empty (no exclusions) or a CSR index pointer of {n_rows + 1} "
                        f"entries over the {excl_indices.shape[0] if excl_indices.ndim else 0} 1-d excl_indices",
                        source=name)
    if validate:
        check_structure(excl_indptr, excl_indices, n_items, f"{name} excl")
    return excl_indptr, excl_indices


def allowed_mask(allowed, n_items: int, name: str) -> np.ndarray:
    """``allowed`` as a C-contiguous bool mask over ``n_items`` items, or empty (None) for all."""
    allowed = np.asarray(allowed if allowed is not None else _NO_MASK)
    if allowed.size and allowed.dtype.kind not in "biu":
        raise DataError(f"allowed must be a bool mask, got {allowed.dtype}", source=name)
    allowed = np.ascontiguousarray(allowed, dtype=np.bool_)
    if allowed.ndim != 1 or allowed.shape[0] not in (0, n_items):
        raise DataError(f"allowed must be empty (every item) or a bool mask over the {n_items} items, "
                        f"got shape {allowed.shape}", source=name)
    return allowed


def _optional_vector(arr, dtype, what: str, name: str) -> np.ndarray:
    """``as_vector``, with None or an empty array meaning an empty one of ``dtype``."""
    if arr is None:
        return np.zeros(0, dtype)
    arr = np.asarray(arr)
    if arr.ndim == 1 and arr.size == 0:
        return np.zeros(0, dtype)
    return as_vector(arr, dtype, what, name)


_NO_MASK = np.zeros(0, np.bool_)


def check_structure(indptr, indices, n_cols: int, source: str | None = None) -> None:
    """A valid CSR index pointer over ``indices``, and every column index in ``[0, n_cols)``."""
    nnz = indices.shape[0]
    if indptr.shape[0] == 0 or indptr[0] != 0 or indptr[-1] != nnz or np.any(np.diff(indptr) < 0):
        raise DataError(f"indptr must start at 0, never decrease and end at nnz = {nnz}", source=source)
    if nnz:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= n_cols:
            raise DataError(f"column index {lo if lo < 0 else hi} out of range [0, {n_cols})", source=source)


def check_values(indptr, indices, data, source: str | None = None) -> None:
    """One finite value per stored entry."""
    if indices.shape[0] != data.shape[0]:
        raise DataError(f"indices and data must have the same length, got {indices.shape[0]} and "
                        f"{data.shape[0]}", source=source)
    if data.size and not np.isfinite(data).all():
        at = int(np.flatnonzero(~np.isfinite(data))[0])
        row = int(np.searchsorted(indptr, at, side="right") - 1)
        raise DataError(f"values must be finite, got {data[at]}", source=source, row=row)


def check_csr(indptr, indices, data, n_rows, n_cols, *, name: str):
    """Validate and coerce CSR arrays; returns ``(indptr int64, indices int32, data float32)``.

    Unsorted rows are sorted (a copy); duplicate column indices in a row, NaN/inf values,
    out-of-range indices and inconsistent lengths raise ``DataError`` naming ``name``.
    """
    n_rows, n_cols = _as_size(n_rows, "n_rows", name), _as_size(n_cols, "n_cols", name)
    if n_cols > np.iinfo(np.int32).max or n_rows > np.iinfo(np.int32).max:
        raise DataError(f"n_rows and n_cols must fit in int32, got {n_rows} x {n_cols}", source=name)
    indptr = as_vector(indptr, np.int64, "indptr", name)
    indices = as_vector(indices, np.int32, "indices", name, convert=False)
    data = as_vector(data, np.float32, "data", name)
    if indptr.shape[0] != n_rows + 1:
        raise DataError(f"indptr must have n_rows + 1 = {n_rows + 1} entries, got {indptr.shape[0]}",
                        source=name)
    check_structure(indptr, indices, n_cols, name)  # before the int32 cast: out-of-range values do not wrap
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    check_values(indptr, indices, data, name)
    status = first_unsorted_row(indptr, indices)
    if status <= -2:
        row = -2 - status
        raise DataError("duplicate column index in a row; sum or drop duplicates first",
                        source=name, row=row)
    if status >= 0:
        indices, data = _sort_rows(indptr, indices, data)
        status = first_unsorted_row(indptr, indices)
        if status <= -2:
            raise DataError("duplicate column index in a row; sum or drop duplicates first",
                            source=name, row=-2 - status)
    return indptr, indices, data


def _as_size(value, what, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise DataError(f"{what} must be a non-negative integer, got {value!r}", source=name)
    return int(value)
