"""CSR utilities on plain arrays shared by the models, evaluation, batch scoring and serving."""

from __future__ import annotations

import numpy as np


def gather_rows(indptr, indices, data, rows):
    """CSR rows ``rows`` of a matrix as a CSR (indptr int64, indices int32, data float32); a row
    index of -1 gives an empty row. Vectorised: no Python loop over rows. When ``rows`` is a run of
    consecutive rows (every row in order when scoring all users, a chunk of a batch job) the
    entries come back as views of the input arrays, uncopied: read them only."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 1:  # one request: copy a slice, without the vectorised gather's dozen array operations
        r = int(rows[0])
        lo, hi = (int(indptr[r]), int(indptr[r + 1])) if r >= 0 else (0, 0)
        return (np.array([0, hi - lo], dtype=np.int64), np.array(indices[lo:hi], dtype=np.int32),
                np.array(data[lo:hi], dtype=np.float32))
    if len(rows) and rows[0] >= 0 and rows[-1] - rows[0] == len(rows) - 1 and rows[-1] < len(indptr) - 1 \
            and (np.diff(rows) == 1).all():
        first, stop = int(rows[0]), int(rows[-1]) + 1
        lo, hi = int(indptr[first]), int(indptr[stop])
        sub = np.asarray(indptr[first:stop + 1]).astype(np.int64, copy=bool(first))  # rebased: a copy
        if first:
            sub -= lo
        return (sub, np.asarray(indices[lo:hi]).astype(np.int32, copy=False),
                np.asarray(data[lo:hi]).astype(np.float32, copy=False))
    safe = np.where(rows >= 0, rows, 0)
    starts = np.asarray(indptr, dtype=np.int64)[safe]
    lens = np.where(rows >= 0, np.asarray(indptr, dtype=np.int64)[safe + 1] - starts, 0)
    out_indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lens, out=out_indptr[1:])
    pos = np.arange(out_indptr[-1], dtype=np.int64) + np.repeat(starts - out_indptr[:-1], lens)
    return (out_indptr, np.asarray(indices)[pos].astype(np.int32, copy=False),
            np.asarray(data)[pos].astype(np.float32, copy=False))
