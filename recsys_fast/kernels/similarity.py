"""Row-row similarity of a sparse matrix, keeping the top k neighbours of every row.

``topk_similarity`` takes a CSR matrix X (n_rows x n_cols: items x users for item-kNN, users x
items for user-kNN) and returns a CSR matrix S (n_rows x n_rows) whose row i holds at most k
other rows j with their scores, sorted by score descending, ties broken by the lower j.

Definitions (x_i is row i over its stored entries; explicit zeros are dropped first and are
not interactions; c_ij, the co-count, is the number of columns stored in both rows):

- ``cosine``: x_i.x_j / (|x_i| |x_j|).
- ``jaccard``: on binarised rows, c_ij / (n_i + n_j - c_ij), n_i = stored entries of row i.
- ``asymmetric_cosine`` (Aiolli 2013): x_i.x_j / (|x_i|^(2 alpha) |x_j|^(2 (1 - alpha))),
  |.| the L2 norm; on binary data c_ij / (n_i^alpha n_j^(1-alpha)); alpha = 0.5 is cosine.
  Row i is the query, j its neighbour, so S is not symmetric.
- ``pearson``: cosine after subtracting from every stored entry of row i the mean of row i's
  stored entries (the correlation over the row's non-zeros; co-rated means are not used).
- ``adjusted_cosine``: cosine after subtracting from every stored entry of column u the mean
  of column u's stored entries (for item-kNN on ratings: the user's mean rating).

Then ``shrink`` multiplies a score by c_ij / (c_ij + shrink). An entry (i, j) is kept when
c_ij >= max(1, min_support), its final score is > 0 (negative correlations and rows whose
centred values are all zero give nothing), and j != i unless ``exclude_self=False``; of
those, the k best. Output is identical for any thread count: each row is computed by one
thread in a fixed order.

Algorithm: parallel over chunks of rows; each chunk owns one dense float32 accumulator over
rows, a touched list and (when shrink/min_support need it) a co-count array, so memory is
O(threads x n_rows + n_rows x k), never n_rows^2. Row i scatters x_iu * x_ju over every
row j of every column u of row i (the transposed copy lists them). Top-k: a bounded heap when
k is small against the candidate count, else a threshold selection (np.partition) followed
by a sort of the k survivors, so large k does not degrade into k-sized heap operations.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..errors import DataError
from ._config import kernel
from ._csr_checks import check_csr, transpose
from .topk import heap_push, heap_sorted_into

SIMILARITIES = ("cosine", "jaccard", "asymmetric_cosine", "pearson", "adjusted_cosine")

_HEAP_FACTOR = 16  # heap when candidates >= 16 k, else partition-based selection


@kernel
def _select_into(cand_s, cand_i, n_cand, k, heap_s, heap_i, out_i, out_s):
    """Best min(k, n_cand) of the candidates into out_i/out_s, best first, ties by lower index."""
    if n_cand <= k:
        heap_sorted_into(cand_s, cand_i, n_cand, out_i, out_s)
        return n_cand
    if n_cand >= _HEAP_FACTOR * k:
        size = 0
        for t in range(n_cand):
            size = heap_push(heap_s, heap_i, size, k, cand_s[t], cand_i[t])
        heap_sorted_into(heap_s, heap_i, size, out_i, out_s)
        return size
    # threshold = k-th largest score; keep everything above it, then the lowest-index ties
    neg = -cand_s[:n_cand]
    thr = -np.partition(neg, k - 1)[k - 1]
    g = 0
    n_ties = 0
    for t in range(n_cand):
        s = cand_s[t]
        if s > thr:
            heap_s[g] = s
            heap_i[g] = cand_i[t]
            g += 1
        elif s == thr:
            n_ties += 1
    ties = np.empty(n_ties, dtype=np.int32)
    n_ties = 0
    for t in range(n_cand):
        if cand_s[t] == thr:
            ties[n_ties] = cand_i[t]
            n_ties += 1
    ties.sort()
    for t in range(k - g):
        heap_s[g + t] = thr
        heap_i[g + t] = ties[t]
    heap_sorted_into(heap_s, heap_i, k, out_i, out_s)
    return k


@kernel(parallel=True)
def _topk_similarity(indptr, indices, ldata, t_indptr, t_indices, t_data, n_rows, k, jaccard,
                     row_nnz, shrink, min_support, exclude_self, chunk_ptr, chunk_rows):
    """Per row: scatter-accumulate dot products with every co-occurring row, score, select.

    ``chunk_rows[chunk_ptr[c]:chunk_ptr[c + 1]]`` are the rows of chunk c; each chunk owns its
    buffers. With ``jaccard`` the data are all ones, so the accumulator is the co-count.
    Returns per-row lengths and (n_rows, min(k, n_rows)) index/score arrays.
    """
    kk = min(k, n_rows)
    out_i = np.empty((n_rows, kk), dtype=np.int32)
    out_s = np.empty((n_rows, kk), dtype=np.float32)
    lens = np.zeros(n_rows, dtype=np.int64)
    need_count = (shrink > 0.0 or min_support > 1) and not jaccard
    n_chunks = chunk_ptr.shape[0] - 1
    for c in prange(n_chunks):
        acc = np.zeros(n_rows, dtype=np.float32)
        cnt = np.zeros(n_rows if need_count else 0, dtype=np.int32)
        mark = np.full(n_rows, -1, dtype=np.int32)
        touched = np.empty(n_rows, dtype=np.int32)
        cand_s = np.empty(n_rows, dtype=np.float32)
        cand_i = np.empty(n_rows, dtype=np.int32)
        heap_s = np.empty(kk, dtype=np.float32)
        heap_i = np.empty(kk, dtype=np.int32)
        for q in range(chunk_ptr[c], chunk_ptr[c + 1]):
            i = chunk_rows[q]
            nt = 0
            for p in range(indptr[i], indptr[i + 1]):
                u = indices[p]
                v = ldata[p]
                for t in range(t_indptr[u], t_indptr[u + 1]):
                    j = t_indices[t]
                    if mark[j] != i:
                        mark[j] = i
                        touched[nt] = j
                        nt += 1
                        acc[j] = v * t_data[t]
                        if need_count:
                            cnt[j] = 1
                    else:
                        acc[j] += v * t_data[t]
                        if need_count:
                            cnt[j] += 1
            n_cand = 0
            for t in range(nt):
                j = touched[t]
                if exclude_self and j == i:
                    continue
                if jaccard:
                    co = acc[j]
                    s = co / (row_nnz[i] + row_nnz[j] - co)
                elif need_count:
                    co = np.float32(cnt[j])
                    s = acc[j]
                else:
                    co = np.float32(1.0)
                    s = acc[j]
                if co < min_support:
                    continue
                if shrink > 0.0:
                    s = s * (co / (co + shrink))
                if s > 0.0:
                    cand_s[n_cand] = s
                    cand_i[n_cand] = j
                    n_cand += 1
            lens[i] = _select_into(cand_s, cand_i, n_cand, kk, heap_s, heap_i, out_i[i], out_s[i])
    return lens, out_i, out_s


@kernel
def _compact(lens, out_i, out_s):
    n_rows = lens.shape[0]
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    for r in range(n_rows):
        indptr[r + 1] = indptr[r] + lens[r]
    indices = np.empty(indptr[-1], dtype=np.int32)
    data = np.empty(indptr[-1], dtype=np.float32)
    for r in range(n_rows):
        base = indptr[r]
        for t in range(lens[r]):
            indices[base + t] = out_i[r, t]
            data[base + t] = out_s[r, t]
    return indptr, indices, data


@kernel
def _row_work(indptr, indices, t_indptr):
    """Scatter-adds row i costs: sum of the column lengths over row i's columns."""
    n_rows = indptr.shape[0] - 1
    work = np.zeros(n_rows, dtype=np.int64)
    for i in range(n_rows):
        w = 0
        for p in range(indptr[i], indptr[i + 1]):
            u = indices[p]
            w += t_indptr[u + 1] - t_indptr[u]
        work[i] = w
    return work


def _chunks(work, n_chunks):
    """Rows sorted by work (heaviest first) and dealt round-robin into ``n_chunks`` chunks."""
    order = np.argsort(-work, kind="stable").astype(np.int32)
    n_rows = order.shape[0]
    n_chunks = max(1, min(n_chunks, n_rows))
    rows = np.concatenate([order[c::n_chunks] for c in range(n_chunks)]) if n_rows else order
    sizes = np.array([order[c::n_chunks].shape[0] for c in range(n_chunks)], dtype=np.int64)
    ptr = np.zeros(n_chunks + 1, dtype=np.int64)
    np.cumsum(sizes, out=ptr[1:])
    return ptr, np.ascontiguousarray(rows, dtype=np.int32)


def _drop_zeros(indptr, indices, data):
    keep = data != 0
    if keep.all():
        return indptr, indices, data
    counts = np.bincount(_row_ids(indptr)[keep], minlength=indptr.shape[0] - 1)
    new_ptr = np.zeros_like(indptr)
    np.cumsum(counts, out=new_ptr[1:])
    return new_ptr, np.ascontiguousarray(indices[keep]), np.ascontiguousarray(data[keep])


def _row_ids(indptr):
    return np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))


def _scaled_values(indptr, indices, data, n_cols, similarity, alpha):
    """Left (query row) and right (neighbour row) values whose dot product is the similarity."""
    rows = _row_ids(indptr)
    x = data.astype(np.float64)
    if similarity == "jaccard":
        ones = np.ones(x.shape[0], dtype=np.float32)
        return ones, ones
    if similarity == "pearson":
        n = np.diff(indptr)
        means = np.bincount(rows, weights=x, minlength=n.shape[0]) / np.maximum(n, 1)
        x = x - means[rows]
    elif similarity == "adjusted_cosine":
        n = np.bincount(indices, minlength=n_cols)
        means = np.bincount(indices, weights=x, minlength=n_cols) / np.maximum(n, 1)
        x = x - means[indices]
    ss = np.bincount(rows, weights=x * x, minlength=indptr.shape[0] - 1)
    with np.errstate(divide="ignore"):
        if similarity == "asymmetric_cosine":
            left = np.where(ss > 0, ss ** -alpha, 0.0)
            right = np.where(ss > 0, ss ** -(1.0 - alpha), 0.0)
            return (x * left[rows]).astype(np.float32), (x * right[rows]).astype(np.float32)
        inv = np.where(ss > 0, 1.0 / np.sqrt(ss), 0.0)
    y = (x * inv[rows]).astype(np.float32)
    return y, y


def topk_similarity(indptr, indices, data, n_cols: int, k: int, similarity: str = "cosine",
                    shrink: float = 0.0, min_support: int = 1, alpha: float = 0.5,
                    exclude_self: bool = True):
    """Top-k most similar rows of every row of a CSR matrix; see the module docstring.

    Returns ``(indptr int64, indices int32, data float32)`` of the n_rows x n_rows result,
    each row sorted by score descending, ties by lower index. Identical for any thread count.
    """
    n_rows = np.asarray(indptr).shape[0] - 1
    if n_rows < 0:
        raise DataError("indptr must have at least one entry", source="topk_similarity")
    indptr, indices, data = check_csr(indptr, indices, data, n_rows, n_cols, name="topk_similarity")
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}; expected one of {', '.join(SIMILARITIES)}")
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not (shrink >= 0 and np.isfinite(shrink)):
        raise ValueError(f"shrink must be a finite number >= 0, got {shrink!r}")
    if isinstance(min_support, (bool, np.bool_)) or not isinstance(min_support, (int, np.integer)) \
            or min_support < 1:
        raise ValueError(f"min_support must be an integer >= 1, got {min_support!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    n_cols = int(n_cols)
    if n_rows == 0:
        return np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)

    indptr, indices, data = _drop_zeros(indptr, indices, data)
    left, right = _scaled_values(indptr, indices, data, n_cols, similarity, float(alpha))
    t_indptr, t_indices, t_data = transpose(indptr, indices, right, n_cols)
    row_nnz = np.diff(indptr).astype(np.float32)
    work = _row_work(indptr, indices, t_indptr)
    import numba

    chunk_ptr, chunk_rows = _chunks(work, 8 * numba.get_num_threads())
    lens, out_i, out_s = _topk_similarity(
        indptr, indices, left, t_indptr, t_indices, t_data, n_rows, int(k),
        similarity == "jaccard", row_nnz, np.float32(shrink), int(min_support), bool(exclude_self),
        chunk_ptr, chunk_rows)
    return _compact(lens, out_i, out_s)
