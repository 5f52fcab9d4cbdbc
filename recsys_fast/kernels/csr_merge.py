"""Merging new entries into a CSR matrix whose rows and columns are renumbered: what
``Recommender.update`` does to the training matrix, in linear time (both inputs are sorted).

``merge_csr`` equals building the matrix again from the old entries followed by the new ones with
``Interactions``' duplicate rule (``"last"``: the new entry; ``"first"``: the old one; ``"sum"``:
float64 sum rounded to float32, the new entry's rating; ``"max"``: the larger weight, the old entry
on ties), without sorting the whole matrix's keys again.
"""

from __future__ import annotations

import numpy as np
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


@kernel(fastmath=False)
def _merge(a_ptr, a_idx, a_val, a_rat, row_pos, col_pos, remap_cols, b_ptr, b_idx, b_val, b_rat, policy, n_cols):
    """Both passes walk each output row's old and new entries in column order. The loop bodies bind
    no array to a new name and call no function taking arrays: in Numba that costs a reference
    count update per row, atomic and shared by the threads."""
    n_rows = b_ptr.shape[0] - 1
    has_rat = a_rat.shape[0] > 0
    big = np.int64(n_cols) + 1
    src = np.full(n_rows, -1, dtype=np.int64)  # the old row of each new row
    for r in range(row_pos.shape[0]):
        src[row_pos[r]] = r
    lens = np.zeros(n_rows, dtype=np.int64)
    added = np.zeros(n_cols, dtype=np.int64)
    for r in range(n_rows):
        s = src[r]
        p = 0 if s < 0 else a_ptr[s]
        pe = p if s < 0 else a_ptr[s + 1]
        q, qe = b_ptr[r], b_ptr[r + 1]
        if q == qe:
            lens[r] = pe - p
            continue
        n = 0
        while p < pe or q < qe:
            ca = (col_pos[a_idx[p]] if remap_cols else a_idx[p]) if p < pe else big
            cb = b_idx[q] if q < qe else big
            if cb < ca:
                added[cb] += 1
            p += ca <= cb
            q += cb <= ca
            n += 1
        lens[r] = n
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    for r in range(n_rows):
        indptr[r + 1] = indptr[r] + lens[r]
    nnz = indptr[n_rows]
    out_i = np.empty(nnz, dtype=np.int32)
    out_v = np.empty(nnz, dtype=np.float32)
    out_r = np.empty(nnz if has_rat else 0, dtype=np.float32)
    for r in range(n_rows):  # serial: a memory-bound copy, faster than waking the pool
        s = src[r]
        o = indptr[r]
        p = 0 if s < 0 else a_ptr[s]
        pe = p if s < 0 else a_ptr[s + 1]
        q, qe = b_ptr[r], b_ptr[r + 1]
        while p < pe or q < qe:
            ca = (col_pos[a_idx[p]] if remap_cols else a_idx[p]) if p < pe else big
            cb = b_idx[q] if q < qe else big
            if ca < cb:  # old only
                out_i[o] = ca
                out_v[o] = a_val[p]
                if has_rat:
                    out_r[o] = a_rat[p]
                p += 1
            elif cb < ca:  # new only
                out_i[o] = cb
                out_v[o] = b_val[q]
                if has_rat:
                    out_r[o] = b_rat[q]
                q += 1
            else:  # both: the duplicate rule
                w, new_rating = _pick(policy, a_val[p], b_val[q])
                out_i[o] = cb
                out_v[o] = w
                if has_rat:
                    out_r[o] = b_rat[q] if new_rating else a_rat[p]
                p += 1
                q += 1
            o += 1
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
