"""CSR utilities on plain arrays shared by the models, evaluation, batch scoring and serving."""

from __future__ import annotations

import numpy as np


def gather_rows(indptr, indices, data, rows):
    """CSR rows ``rows`` of a matrix as a CSR (indptr int64, indices int32, data float32); a row
    index of -1 gives an empty row. Vectorised: no Python loop over rows. When ``rows`` is every
    row in order (scoring all users) the input arrays come back uncopied: read them only."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 1:  # one request: copy a slice, without the vectorised gather's dozen array operations
        r = int(rows[0])
        lo, hi = (int(indptr[r]), int(indptr[r + 1])) if r >= 0 else (0, 0)
        return (np.array([0, hi - lo], dtype=np.int64), np.array(indices[lo:hi], dtype=np.int32),
                np.array(data[lo:hi], dtype=np.float32))
    n_src = len(indptr) - 1
    if len(rows) == n_src and n_src > 0 and rows[0] == 0 and np.array_equal(rows, np.arange(n_src)):
        return (np.asarray(indptr).astype(np.int64, copy=False), np.asarray(indices).astype(np.int32, copy=False),
                np.asarray(data).astype(np.float32, copy=False))
    safe = np.where(rows >= 0, rows, 0)
    starts = np.asarray(indptr, dtype=np.int64)[safe]
    lens = np.where(rows >= 0, np.asarray(indptr, dtype=np.int64)[safe + 1] - starts, 0)
    out_indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lens, out=out_indptr[1:])
    pos = np.arange(out_indptr[-1], dtype=np.int64) + np.repeat(starts - out_indptr[:-1], lens)
    return (out_indptr, np.asarray(indices)[pos].astype(np.int32, copy=False),
            np.asarray(data)[pos].astype(np.float32, copy=False))
