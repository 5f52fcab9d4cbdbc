"""Merging new entries into a CSR matrix whose rows and columns are renumbered: what
``Recommender.update`` does to the training matrix, in linear time (both inputs are sorted).

``merge_csr`` equals building the matrix again from the old entries followed by the new ones with
``Interactions``' duplicate rule (``"last"``: the new entry; ``"first"``: the old one; ``"sum"``:
float64 sum rounded to float32, the new entry's rating; ``"max"``: the larger weight, the old entry
on ties), without sorting the whole matrix's keys again.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..errors import DataError
from ._config import kernel

POLICIES = ("last", "first", "sum", "max")


@kernel(inline=True)
def _pick(policy, wa, wb):
    """(weight, take the new rating) of a pair present on both sides."""
    if policy == 0:
        return wb, True
    if policy == 1:
        return wa, False
    if policy == 2:
        return np.float32(np.float64(wa) + np.float64(wb)), True
    return (wb, True) if wb > wa else (wa, False)


@kernel(inline=True)
def _copy_run(a_idx, a_val, a_rat, col_pos, remap_cols, lo, hi, out_i, out_v, out_r, o):
    """Old entries ``lo:hi`` to the output at ``o`` (columns renamed when ``remap_cols``); the next ``o``."""
    n = hi - lo  # loops, not slices: a slice's reference count is shared by the threads
    if remap_cols:
        for t in range(n):
            out_i[o + t] = col_pos[a_idx[lo + t]]
    else:
        for t in range(n):
            out_i[o + t] = a_idx[lo + t]
    for t in range(n):
        out_v[o + t] = a_val[lo + t]
    if a_rat.shape[0] > 0:
        for t in range(n):
            out_r[o + t] = a_rat[lo + t]
    return o + n


@kernel(parallel=True, fastmath=False)
def _merge(a_ptr, a_idx, a_val, a_rat, row_pos, col_pos, remap_cols, b_ptr, b_idx, b_val, b_rat, policy, n_cols):
    n_rows = b_ptr.shape[0] - 1
    has_rat = a_rat.shape[0] > 0
    src = np.full(n_rows, -1, dtype=np.int64)  # the old row of each new row
    for r in range(row_pos.shape[0]):
        src[row_pos[r]] = r
    lens = np.zeros(n_rows, dtype=np.int64)
    added = np.zeros(n_cols, dtype=np.int64)
    for r in range(n_rows):
        s = src[r]
        la = 0 if s < 0 else a_ptr[s + 1] - a_ptr[s]
        lb = b_ptr[r + 1] - b_ptr[r]
        if lb == 0:
            lens[r] = la
            continue
        p = 0 if s < 0 else a_ptr[s]
        pe = p + la
        n = 0
        for q in range(b_ptr[r], b_ptr[r + 1]):
            c = b_idx[q]
            while p < pe and (col_pos[a_idx[p]] if remap_cols else a_idx[p]) < c:
                p += 1
                n += 1
            if p < pe and (col_pos[a_idx[p]] if remap_cols else a_idx[p]) == c:
                p += 1
            else:
                added[c] += 1
            n += 1
        lens[r] = n + (pe - p)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    for r in range(n_rows):
        indptr[r + 1] = indptr[r] + lens[r]
    nnz = indptr[n_rows]
    out_i = np.empty(nnz, dtype=np.int32)
    out_v = np.empty(nnz, dtype=np.float32)
    out_r = np.empty(nnz if has_rat else 0, dtype=np.float32)
    for r in prange(n_rows):
        s = src[r]
        o = indptr[r]
        p = 0 if s < 0 else a_ptr[s]
        pe = p if s < 0 else a_ptr[s + 1]
        for q in range(b_ptr[r], b_ptr[r + 1]):
            c = b_idx[q]
            start = p
            while p < pe and (col_pos[a_idx[p]] if remap_cols else a_idx[p]) < c:
                p += 1
            o = _copy_run(a_idx, a_val, a_rat, col_pos, remap_cols, start, p, out_i, out_v, out_r, o)
            out_i[o] = c
            if p < pe and (col_pos[a_idx[p]] if remap_cols else a_idx[p]) == c:
                w, new_rating = _pick(policy, a_val[p], b_val[q])
                out_v[o] = w
                if has_rat:
                    out_r[o] = b_rat[q] if new_rating else a_rat[p]
                p += 1
            else:
                out_v[o] = b_val[q]
                if has_rat:
                    out_r[o] = b_rat[q]
            o += 1
        _copy_run(a_idx, a_val, a_rat, col_pos, remap_cols, p, pe, out_i, out_v, out_r, o)
    return indptr, out_i, out_v, out_r, added


def merge_csr(old, row_pos, col_pos, new, n_cols: int, duplicates: str = "last", old_ratings=None,
              new_ratings=None):
    """``old`` (a CSR triple, sorted rows) with its row r moved to ``row_pos[r]`` and its column c
    renamed ``col_pos[c]`` (both increasing), merged with ``new`` (a CSR triple over the new rows
    and ``n_cols`` columns, sorted rows, no repeated pair). Returns ``(indptr, indices, data,
    ratings, added)``: ratings merged alike (None unless both are given) and, per column, how many
    pairs are new."""
    if duplicates not in POLICIES:
        raise DataError(f"duplicates must be one of {POLICIES}, got {duplicates!r}", source="merge_csr")
    a_ptr, a_idx, a_val = (np.ascontiguousarray(old[0], np.int64), np.ascontiguousarray(old[1], np.int32),
                           np.ascontiguousarray(old[2], np.float32))
    b_ptr, b_idx, b_val = (np.ascontiguousarray(new[0], np.int64), np.ascontiguousarray(new[1], np.int32),
                           np.ascontiguousarray(new[2], np.float32))
    row_pos = np.ascontiguousarray(row_pos, np.int64)
    col_pos = np.ascontiguousarray(col_pos, np.int32)
    n_rows = b_ptr.shape[0] - 1
    if a_ptr.shape[0] != row_pos.shape[0] + 1 or a_idx.shape != a_val.shape or b_idx.shape != b_val.shape or (
            row_pos.size and (row_pos[-1] >= n_rows or np.any(np.diff(row_pos) <= 0))) or (
            col_pos.size and (col_pos[-1] >= n_cols or np.any(np.diff(col_pos) <= 0))) or (
            a_idx.size and a_idx.max() >= col_pos.size):
        raise DataError("old, row_pos, col_pos and new do not fit together", source="merge_csr")
    with_ratings = old_ratings is not None and new_ratings is not None
    a_rat = np.ascontiguousarray(old_ratings, np.float32) if with_ratings else np.zeros(0, np.float32)
    b_rat = np.ascontiguousarray(new_ratings, np.float32) if with_ratings else np.zeros(0, np.float32)
    if with_ratings and (a_rat.shape != a_val.shape or b_rat.shape != b_val.shape):
        raise DataError("ratings must align with the entries", source="merge_csr")
    remap = not (col_pos.size == n_cols and (n_cols == 0 or col_pos[-1] == n_cols - 1))
    indptr, idx, val, rat, added = _merge(a_ptr, a_idx, a_val, a_rat, row_pos, col_pos, remap, b_ptr, b_idx, b_val,
                                          b_rat, POLICIES.index(duplicates), int(n_cols))
    return indptr, idx, val, (rat if with_ratings else None), added
