"""Sparse (CSR) x dense products, in Numba: LightGCN's graph propagation.

``csr_dense_mm(indptr, indices, data, x)`` is ``A @ x`` (optionally ``base + A @ x``, added into
an accumulator in the same pass, at some rows only, or from some rows of ``x`` only) for a CSR ``A`` (n x m) and a dense
float32 ``x`` (m x d), parallel over blocks of rows cut so that each holds about the same number
of stored entries (a bipartite graph's item rows hold as many edges as all its user rows). Each
output row is written by one thread, in the order of its stored entries: the result does not
depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._config import kernel

_BLOCKS_PER_THREAD = 8


@kernel(parallel=True)
def _csr_dense_mm(indptr, indices, data, x, rows, bounds, base, acc, src_mask, out):
    d = x.shape[1]
    with_base, with_acc, masked = base.shape[0] > 0, acc.shape[0] > 0, len(src_mask) > 0
    for b in prange(len(bounds) - 1):
        for k in range(bounds[b], bounds[b + 1]):
            r = rows[k]
            if with_base:
                for j in range(d):
                    out[k, j] = base[r, j]
            else:
                for j in range(d):
                    out[k, j] = 0.0
            for p in range(indptr[r], indptr[r + 1]):
                c = indices[p]
                if masked and not src_mask[c]:
                    continue
                v = data[p]
                for j in range(d):
                    out[k, j] += v * x[c, j]
            if with_acc:
                for j in range(d):
                    acc[r, j] += out[k, j]


def row_blocks(indptr: np.ndarray, n_blocks: int, rows: np.ndarray | None = None) -> np.ndarray:
    """int64 boundaries of ``n_blocks`` (at most) contiguous ranges of ``rows`` (default: every row)
    with about equal numbers of stored entries, for ``csr_dense_mm``'s ``bounds``."""
    if rows is None:
        cum = indptr
    else:
        cum = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(indptr[rows + 1] - indptr[rows], out=cum[1:])
    n = len(cum) - 1
    targets = np.linspace(0, cum[-1], max(1, n_blocks) + 1)
    bounds = np.searchsorted(cum, targets, side="left").astype(np.int64)
    bounds[0], bounds[-1] = 0, n
    return np.unique(np.clip(bounds, 0, n))


def csr_dense_mm(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, x: np.ndarray,
                 bounds: np.ndarray | None = None, base: np.ndarray | None = None, acc: np.ndarray | None = None,
                 rows: np.ndarray | None = None, src_mask: np.ndarray | None = None, n_threads: int | None = None,
                 check: bool = True) -> np.ndarray:
    """``(base + A @ x)[rows]`` (``base`` None: ``A @ x``; ``rows`` None: every row), added into
    ``acc[rows]`` in place when ``acc`` is given. ``src_mask`` (bool, one per row of ``x``): only
    those rows of ``x`` contribute (the others are taken as zero, and not read). ``A`` is the CSR
    ``(indptr int64, indices int32, data float32)`` with ``len(indptr) - 1`` rows and ``x.shape[0]``
    columns, ``x`` float32 (m, d); ``base`` and ``acc`` float32 C-order (n, d). ``bounds``: blocks
    of ``rows`` (``row_blocks(indptr, n, rows)``; computed when None). ``check=False`` skips the
    scan of the indices (for a caller that multiplies by the same checked matrix at every step).
    Returns float32 (len(rows), d), C order."""
    import numba

    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    data = np.ascontiguousarray(data, dtype=np.float32)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-d (columns of A x d), got shape {x.shape}")
    n, d = len(indptr) - 1, x.shape[1]
    if len(indices) != len(data) or indptr[-1] != len(data):
        raise ValueError(f"CSR arrays disagree: indptr ends at {indptr[-1]}, {len(indices)} indices, "
                         f"{len(data)} values")
    if check and len(indices) and (indices.min() < 0 or indices.max() >= x.shape[0]):
        raise ValueError(f"column indices must lie in [0, {x.shape[0]}) (x's rows), got "
                         f"{indices.min()}..{indices.max()}")
    empty = np.zeros((0, d), dtype=np.float32)
    for name, arr in (("base", base), ("acc", acc)):
        if arr is not None and (arr.shape != (n, d) or arr.dtype != np.float32 or not arr.flags.c_contiguous):
            raise ValueError(f"{name} must be a C-order float32 array of shape {(n, d)}, got {arr.dtype} "
                             f"{arr.shape}")
    if rows is None:
        rows = np.arange(n, dtype=np.int64)
    else:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise ValueError(f"rows must lie in [0, {n}), got {rows.min()}..{rows.max()}")
    if src_mask is None:
        src_mask = np.zeros(0, dtype=np.bool_)
    elif src_mask.shape != (x.shape[0],) or src_mask.dtype != np.bool_:
        raise ValueError(f"src_mask must be bool of shape {(x.shape[0],)}, got {src_mask.dtype} {src_mask.shape}")
    if bounds is None:
        bounds = row_blocks(indptr, _BLOCKS_PER_THREAD * (n_threads or numba.get_num_threads()),
                            None if len(rows) == n else rows)
    out = np.empty((len(rows), d), dtype=np.float32)
    if len(rows):
        _csr_dense_mm(indptr, indices, data, x, rows, np.ascontiguousarray(bounds, dtype=np.int64),
                      empty if base is None else base, empty if acc is None else acc, src_mask, out)
    return out
