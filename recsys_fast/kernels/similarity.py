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
- ``dot``: x_i.x_j, unnormalised (computed as ``asymmetric_cosine`` with alpha = 1, which orders
  a row's neighbours the same, then multiplied by |x_i|^2).

Then ``shrink`` multiplies a score by c_ij / (c_ij + shrink). An entry (i, j) is kept when
c_ij >= max(1, min_support), its final score is > 0 (negative correlations and rows whose
centred values are all zero give nothing), and j != i unless ``exclude_self=False``; of
those, the k best. Output is identical for any thread count: each row is computed by one
thread in a fixed order.

Algorithm (the work is one scatter-add per (row i, shared column u, row j) triple, i.e.
sum over columns of nnz(column)^2): rows are sorted by that work and dealt round-robin into
8 chunks per thread; a ``prange`` over chunks gives each chunk one dense float32 accumulator
over rows, a touched list, candidate buffers and (only when shrink/min_support need it on
non-binary data) a co-count array, so memory is O(threads x n_rows + n_rows x k), never
n_rows^2. Row i scatters x_iu * x_ju over every row j of every column u of row i, read from a
transposed copy whose rows are prefetched a few entries ahead (they come from DRAM). When all
stored values are equal (implicit feedback) the scatter only counts co-occurrences and the
similarity is computed from the count and row sizes afterwards. Light rows keep a touched list
(new rows found branch-free: accumulator still 0); heavy rows accumulate densely and bound the
k-th best score from per-group maxima (exact pruning: only groups that may hold a top-k entry
are scanned). Selection, the same for every k (k = 1000 costs a sort of 1000 keys, not
k-sized heap operations): a histogram of the candidates' score bits finds the bucket of the
k-th best, a branch-free pass keeps the candidates from there up as int64 keys (score bits,
then index), and a counting sort by bucket plus a sort inside buckets orders them.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .. import validation
from ..errors import DataError
from ._config import kernel, kernel_pair
from ._csr_checks import check_csr, transpose
from ._intrinsics import maximum_into, prefetch
from .topk import run_parallel

# the one list of similarity names (models validate against it too)
SIMILARITIES = ("cosine", "jaccard", "asymmetric_cosine", "pearson", "adjusted_cosine", "dot")

_GROUP = 16  # values per group of the group-maximum bound in the dense path
_HIST_SHIFT = 17  # histogram of group maxima by float32 bits >> 17: 1/64-octave buckets
_SPARSE_DIVISOR = 8  # rows with fewer than n_rows / 8 scatter-adds keep a touched list
_LOW = np.int64(0x7FFFFFFF)
_INSERTION_MAX = 256  # a threshold bucket with more keys is sorted by a full sort
_PREFETCH_AHEAD = 4  # prefetch the transposed row of the user 4 entries ahead ...
_PREFETCH_ENTRIES = 128  # ... up to its first 128 entries (8 cache lines of int32)


@kernel(fastmath=False, inline=True)
def _sort_desc(keys, n):
    """Insertion sort of ``keys[:n]``, largest first (the lists arrive nearly sorted)."""
    for a in range(1, n):
        key = keys[a]
        b = a - 1
        while b >= 0 and keys[b] < key:
            keys[b + 1] = keys[b]
            b -= 1
        keys[b + 1] = key


@kernel
def _select_into(cand_s, cand_i, n_cand, k, hist, keys, out_i, out_s):
    """Best min(k, n_cand) positive candidates into out_i/out_s, best first, ties by lower index.

    Candidates' scores must be > 0: then their float32 bits order like the scores, and one
    int64 key ``bits << 32 | (2^31 - 1 - index)`` orders by score, then lower index. A
    histogram of the scores' top bits (1/64-octave buckets) gives the bucket holding the k-th
    best; the candidates from that bucket up are kept, counting-sorted by bucket (best first),
    and sorts inside the buckets finish the order. Two branch-free passes over the
    candidates and a sort of about k nearly sorted keys: a quickselect mispredicts on random
    scores and cost as much as the whole accumulation at size M. ``hist`` must be all zero;
    it is returned so. ``keys`` holds 2 n_cand. Allocation-free.
    """
    if n_cand == 0:
        return 0
    bits = cand_s.view(np.int32)
    lo_b = np.int32(bits[0] >> _HIST_SHIFT)
    hi_b = lo_b
    for t in range(n_cand):
        b = bits[t] >> _HIST_SHIFT
        hist[b] += 1
        lo_b = min(lo_b, b)
        hi_b = max(hi_b, b)
    # the bucket of the k-th best: counts from the top until k are reached
    seen = 0
    thr_b = hi_b
    while thr_b > lo_b and seen + hist[thr_b] < k:
        seen += hist[thr_b]
        thr_b -= 1
    # keep the candidates from that bucket up (branch-free compaction) ...
    thr_bits = np.int32(thr_b << _HIST_SHIFT)
    n_kept = 0
    for t in range(n_cand):
        keys[n_kept] = (np.int64(bits[t]) << 32) | (_LOW - cand_i[t])
        n_kept += bits[t] >= thr_bits
    # ... and counting-sort them by bucket, best bucket first, into the second half of keys
    m = 0
    for b in range(hi_b, thr_b - 1, -1):
        c = hist[b]
        hist[b] = m
        m += c
    sorted_keys = keys[n_kept:n_kept + m]
    for t in range(n_kept):
        b = np.int32(keys[t] >> (32 + _HIST_SHIFT))
        sorted_keys[hist[b]] = keys[t]
        hist[b] += 1
    hist[lo_b:hi_b + 1] = 0
    # the buckets above the threshold hold ``seen`` < k keys, nearly sorted: insertion sort. So
    # does the threshold bucket unless it is large (ties on binary data): then a full sort of it,
    # ascending, so insertion sort never meets a long unsorted run
    n_head = seen if m - seen > _INSERTION_MAX else m  # keys ordered by insertion sort
    head = sorted_keys[:n_head]
    _sort_desc(head, n_head)
    last = sorted_keys[n_head:m]
    last.sort()
    out_bits = out_s.view(np.int32)
    size = min(k, m)
    for t in range(size):
        key = head[t] if t < n_head else last[m - 1 - t]
        out_i[t] = np.int32(_LOW - (key & _LOW))
        out_bits[t] = np.int32(key >> 32)
    return size


@kernel
def _dense_candidates(acc, n, k, n_groups, gmax, hist, cand_s, cand_i):
    """Entries of ``acc[:n]`` that may be among its k best positive values; zeroes ``acc``.

    ``acc`` (zero-padded to ``n_groups * G``) is seen as G rows of ``n_groups``: group b is
    {b, b + n_groups, ...}, so the group maxima are an element-wise max of contiguous rows,
    which vectorises. Positive float32 values order like their int32 bits and negative ones
    fall below every positive one, so this is an integer max. If at least k group maxima are
    >= thr, at least k values are, so the k best all are >= thr: only groups whose maximum
    reaches thr are scanned (exact pruning). thr is found from a histogram of the maxima's
    top bits (1/64-octave buckets) rather than an exact selection.
    """
    bits = acc.view(np.int32)
    g = acc.shape[0] // n_groups
    gmax[:] = bits[:n_groups]
    for r in range(1, g):
        maximum_into(gmax, bits[r * n_groups:(r + 1) * n_groups])  # vectorises; a loop did not
    top = 0
    n_pos = 0
    for b in range(n_groups):
        mb = gmax[b]
        if mb > 0:
            h = mb >> _HIST_SHIFT
            hist[h] += 1
            n_pos += 1
            top = max(top, h)
    thr = np.int32(1)
    if n_pos > k:
        seen = 0
        h = top
        while True:
            seen += hist[h]
            if seen >= k:
                break
            h -= 1
        thr = np.int32(h << _HIST_SHIFT)
    for b in range(n_groups):
        mb = gmax[b]
        if mb > 0:
            hist[mb >> _HIST_SHIFT] = 0
    n_cand = 0
    for b in range(n_groups):
        if gmax[b] >= thr:
            for r in range(g):
                j = r * n_groups + b
                if bits[j] >= thr:  # padding is 0, below any thr
                    cand_s[n_cand] = acc[j]
                    cand_i[n_cand] = j
                    n_cand += 1
    acc[:] = 0.0
    return n_cand


@kernel(fastmath=False)
def _accumulate(i, indptr, indices, ldata, t_indptr, t_indices, t_data, binary, need_count,
                track, positive, acc, cnt, mark, touched):
    """Scatter row i's dot products (or co-counts when ``binary``) into ``acc``.

    With ``track`` the rows touched are listed in ``touched`` (returns their number): when all
    values are positive a row is new exactly when its accumulator is still 0, a branch-free
    test (an underflow to 0 can list a row twice; the scoring pass resets it after the first
    visit, so it is not kept twice); otherwise a stamp array ``mark`` tells.
    """
    nt = 0
    end = indptr[i + 1]
    for p in range(indptr[i], end):
        if p + _PREFETCH_AHEAD < end:  # hide the DRAM latency of the row we visit soon
            ahead = indices[p + _PREFETCH_AHEAD]
            first = t_indptr[ahead]
            last = min(t_indptr[ahead + 1], first + _PREFETCH_ENTRIES)
            for q in range(first, last, 16):
                prefetch(t_indices, q)
                if not binary:
                    prefetch(t_data, q)
            if p + 2 * _PREFETCH_AHEAD < end:
                prefetch(t_indptr, indices[p + 2 * _PREFETCH_AHEAD])
        u = indices[p]
        lo = t_indptr[u]
        hi = t_indptr[u + 1]
        if binary:
            if track:
                for t in range(lo, hi):
                    j = t_indices[t]
                    touched[nt] = j
                    nt += acc[j] == 0.0
                    acc[j] += 1.0
            else:
                for t in range(lo, hi):
                    acc[t_indices[t]] += 1.0
        else:
            v = ldata[p]
            if track and positive and not need_count:
                for t in range(lo, hi):
                    j = t_indices[t]
                    touched[nt] = j
                    nt += acc[j] == 0.0
                    acc[j] += v * t_data[t]
            elif track:
                for t in range(lo, hi):
                    j = t_indices[t]
                    if mark[j] != i:
                        mark[j] = i
                        touched[nt] = j
                        nt += 1
                    acc[j] += v * t_data[t]
                    if need_count:
                        cnt[j] += 1
            elif need_count:
                for t in range(lo, hi):
                    j = t_indices[t]
                    acc[j] += v * t_data[t]
                    cnt[j] += 1
            else:
                for t in range(lo, hi):
                    acc[t_indices[t]] += v * t_data[t]
    return nt


@kernel_pair(fastmath=False)
def _topk_similarity(indptr, indices, ldata, t_indptr, t_indices, t_data, lscale, rscale, n_rows,
                     k, binary, jaccard, positive, row_nnz, shrink, min_support, exclude_self,
                     chunk_ptr, chunk_rows, work, sparse_below, slots):
    """Per row: scatter-accumulate with every co-occurring row, score, select the k best.

    ``binary``: every stored value of the input was equal, so the accumulator counts shared
    columns (c_ij) and the score is c_ij * lscale[i] * rscale[j] (or the Jaccard ratio) — the
    scatter reads no values. Otherwise it sums ldata * t_data (and counts in ``cnt`` when
    shrink / min_support need c_ij). ``chunk_rows[chunk_ptr[c]:chunk_ptr[c + 1]]`` are the rows
    of chunk c; each chunk owns its buffers. A row whose ``work`` (scatter-adds) is below
    ``sparse_below`` keeps a touched list; heavier rows accumulate densely and select after a
    vectorised group-maximum pass (``_dense_candidates``). Returns per-row lengths and flat
    index/score buffers holding row i at [slots[i], slots[i] + length): row i's slot holds
    min(k, work[i]) entries, as it cannot have more candidates than scatter-adds.
    """
    kk = min(k, n_rows)
    out_i = np.empty(slots[n_rows], dtype=np.int32)
    out_s = np.empty(slots[n_rows], dtype=np.float32)
    lens = np.zeros(n_rows, dtype=np.int64)
    need_count = (shrink > 0.0 or min_support > 1) and not binary
    transform = need_count or binary
    g = max(1, min(_GROUP, n_rows // (4 * kk)))
    n_groups = (n_rows + g - 1) // g
    n_chunks = chunk_ptr.shape[0] - 1
    for c in prange(n_chunks):
        acc = np.zeros(n_groups * g, dtype=np.float32)
        cnt = np.zeros(n_rows if need_count else 0, dtype=np.int32)
        mark = np.full(n_rows, -1, dtype=np.int32)
        touched = np.empty(n_rows + 1, dtype=np.int32)
        cand_s = np.empty(n_rows, dtype=np.float32)
        cand_i = np.empty(n_rows, dtype=np.int32)
        gmax = np.empty(n_groups, dtype=np.int32)
        hist = np.zeros(1 << (31 - _HIST_SHIFT), dtype=np.int32)
        keys = np.empty(2 * n_rows, dtype=np.int64)
        for q in range(chunk_ptr[c], chunk_ptr[c + 1]):
            i = chunk_rows[q]
            li = lscale[i]
            nnz_i = row_nnz[i]
            track = work[i] < sparse_below
            if q + 1 < chunk_ptr[c + 1]:  # the next row's first users are not prefetched inside
                nxt = chunk_rows[q + 1]
                for p in range(indptr[nxt], min(indptr[nxt + 1], indptr[nxt] + _PREFETCH_AHEAD)):
                    first = t_indptr[indices[p]]
                    prefetch(t_indices, first)
                    prefetch(t_indices, first + 16)
            nt = _accumulate(i, indptr, indices, ldata, t_indptr, t_indices, t_data, binary,
                             need_count, track, positive, acc, cnt, mark, touched)
            n_cand = 0
            if track:
                for t in range(nt):
                    j = touched[t]
                    a = acc[j]
                    if binary:
                        co = a
                    elif need_count:
                        co = np.float32(cnt[j])
                        cnt[j] = 0
                    else:
                        co = np.float32(1.0)
                    acc[j] = 0.0
                    s = _score(a, co, li, rscale[j], nnz_i, row_nnz[j], binary, jaccard, shrink,
                               min_support)
                    if s > 0.0 and not (exclude_self and j == i):
                        cand_s[n_cand] = s
                        cand_i[n_cand] = j
                        n_cand += 1
            else:
                if transform:
                    _score_dense(acc, cnt, n_rows, li, rscale, nnz_i, row_nnz, binary, jaccard,
                                 shrink, min_support)
                if exclude_self:
                    acc[i] = 0.0
                n_cand = _dense_candidates(acc, n_rows, kk, n_groups, gmax, hist, cand_s, cand_i)
            lo, hi = slots[i], slots[i + 1]
            lens[i] = _select_into(cand_s, cand_i, n_cand, min(kk, hi - lo), hist, keys,
                                   out_i[lo:hi], out_s[lo:hi])
    return lens, out_i, out_s


@kernel(fastmath=False, inline=True)
def count_score(co, li, rj, nnz_i, nnz_j, jaccard, shrink, min_support):
    """The counting path's score of a pair from its co-count ``co`` (0 when dropped): Jaccard's ratio
    or ``co * li * rj``, then shrinkage and the support cut. Compiled without fastmath and called
    (not inlined at the Numba level) by both the light and the heavy rows, so its float32 rounding
    is one fixed sequence wherever it runs: ``update_topk_similarity`` recomputes these scores
    elsewhere and gets the same bits."""
    if jaccard:
        sc = co / max(nnz_i + nnz_j - co, np.float32(1.0))
    else:
        sc = (co * li) * rj
    if shrink > 0.0:
        sc = sc * (co / (co + shrink))
    if min_support > 1 and co < min_support:
        sc = np.float32(0.0)
    return sc


@kernel(fastmath=False)
def _score_dense(acc, cnt, n, li, rscale, nnz_i, row_nnz, binary, jaccard, shrink, min_support):
    """``_score`` over a whole dense accumulator, in place, in loops without branches (they
    vectorise; a per-entry call did not). Untouched entries (co-count 0) come out as 0.
    With ``binary`` the accumulator holds the co-count; otherwise ``cnt`` does (reset here).
    """
    use_shrink = shrink > 0.0
    use_support = min_support > 1
    if binary:
        for j in range(n):
            acc[j] = count_score(acc[j], li, rscale[j], nnz_i, row_nnz[j], jaccard, shrink, min_support)
    else:
        for j in range(n):
            co = np.float32(cnt[j])
            sc = acc[j]
            if use_shrink:
                sc = sc * (co / (co + shrink))
            if use_support:
                sc = sc if co >= min_support else np.float32(0.0)
            acc[j] = sc
            cnt[j] = 0


@kernel(fastmath=False)
def _score(a, co, li, rj, nnz_i, nnz_j, binary, jaccard, shrink, min_support):
    """Final score of a pair from its accumulated value ``a`` and co-count ``co``; 0 if dropped.

    Scalars only: a kernel call with array arguments costs reference counting per call.
    """
    if co <= 0.0 or co < min_support:
        return np.float32(0.0)
    if binary:
        return count_score(co, li, rj, nnz_i, nnz_j, jaccard, shrink, min_support)
    s = a
    if shrink > 0.0:
        s = s * (co / (co + shrink))
    return s


@kernel
def _compact(lens, out_i, out_s, slots):
    """Shift row r's entries from ``slots[r]`` down to their CSR offset, in place; returns indptr.

    Moving left in increasing row order never overwrites an entry not yet moved, and reusing
    the buffers avoids allocating (and page-faulting) a second copy.
    """
    n_rows = lens.shape[0]
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    for r in range(n_rows):
        base = indptr[r]
        src = slots[r]
        if base != src:
            for t in range(lens[r]):
                out_i[base + t] = out_i[src + t]
                out_s[base + t] = out_s[src + t]
        indptr[r + 1] = base + lens[r]
    return indptr


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


def _chunks(work, n_chunks, rows=None):
    """Rows (all, or ``rows``) sorted by work (heaviest first) and dealt round-robin into
    ``n_chunks`` chunks."""
    if rows is None:
        order = np.argsort(-work, kind="stable").astype(np.int32)
    else:
        rows = np.asarray(rows, dtype=np.int32)
        order = rows[np.argsort(-work[rows], kind="stable")]
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


def column_means(indices, data, n_cols: int) -> np.ndarray:
    """Mean of each column's stored values (float64; 0 for an empty column): ``adjusted_cosine``'s
    centring."""
    x = np.asarray(data, dtype=np.float64)
    n = np.bincount(indices, minlength=n_cols)
    return np.bincount(indices, weights=x, minlength=n_cols) / np.maximum(n, 1)


def scaled_values(indptr, indices, data, n_cols: int, similarity: str, alpha: float = 0.5, col_means=None):
    """Left (query row) and right (neighbour row) float32 values whose dot product is the
    similarity before shrinkage: the one definition of each similarity's centring and scaling.

    ``col_means``: the column means ``adjusted_cosine`` subtracts (e.g. a training matrix's, to
    compare new rows with training rows); None computes them from these rows. Explicit zeros
    must be dropped first (they are not interactions).
    """
    if similarity == "cosine":
        from .weighting import _l2_normalize

        y = _l2_normalize(indptr, data)  # compiled, float64 sums: the common case, kept fast
        return y, y
    rows = _row_ids(indptr)
    x = data.astype(np.float64)
    if similarity == "jaccard":
        ones = np.ones(x.shape[0], dtype=np.float32)
        return ones, ones
    if similarity == "dot":
        y = x.astype(np.float32)
        return y, y
    if similarity == "pearson":
        n = np.diff(indptr)
        means = np.bincount(rows, weights=x, minlength=n.shape[0]) / np.maximum(n, 1)
        x = x - means[rows]
    elif similarity == "adjusted_cosine":
        means = column_means(indices, x, n_cols) if col_means is None else col_means
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
                    exclude_self: bool = True, query_rows=None):
    """Top-k most similar rows of every row of a CSR matrix; see the module docstring.

    Returns ``(indptr int64, indices int32, data float32)`` of the n_rows x n_rows result,
    each row sorted by score descending, ties by lower index. Identical for any thread count.
    ``query_rows``: compute only these rows (sorted unique indices; the others come back empty),
    each exactly as the full build computes it: a distributed build splits the rows over workers.
    """
    n_rows = np.asarray(indptr).shape[0] - 1
    if n_rows < 0:
        raise DataError("indptr must have at least one entry", source="topk_similarity")
    indptr, indices, data = check_csr(indptr, indices, data, n_rows, n_cols, name="topk_similarity")
    validation.choice("similarity", similarity, SIMILARITIES)
    k = validation.integer("k", k, minimum=1)
    shrink = validation.number("shrink", shrink, minimum=0.0)
    min_support = validation.integer("min_support", min_support, minimum=1)
    alpha = validation.number("alpha", alpha, minimum=0.0, maximum=1.0)
    n_cols = int(n_cols)
    if n_rows == 0:
        return np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    if similarity == "dot":
        # x_i.x_j = |x_i|^2 * asymmetric cosine with alpha = 1 (x_i.x_j / |x_i|^2): the same order
        # within a row, so that top-k is the dot product's top-k; rescale the kept values after.
        out = topk_similarity(indptr, indices, data, n_cols, k, "asymmetric_cosine", shrink, min_support, 1.0,
                              exclude_self, query_rows)
        return _dot_from_asymmetric(out, indptr, data)

    if query_rows is not None:
        query_rows = np.asarray(query_rows, dtype=np.int64)
        if len(query_rows) and (query_rows.min() < 0 or query_rows.max() >= n_rows
                                or np.any(np.diff(query_rows) <= 0)):
            raise DataError(f"query_rows must be sorted unique row indices in [0, {n_rows})",
                            source="topk_similarity")
    p = _prepare(indptr, indices, data, n_cols, similarity, float(alpha))
    return _compute(p, n_cols, int(k), similarity, float(shrink), int(min_support), bool(exclude_self),
                    rows=query_rows)


def _dot_from_asymmetric(out, indptr, data):
    """Rows of an ``asymmetric_cosine`` (alpha = 1) result times each query row's |x_i|^2: the
    dot product's values, in the same order within a row."""
    out_ptr, out_idx, out_val = out
    n_rows = indptr.shape[0] - 1
    sq = np.bincount(_row_ids(indptr), weights=np.asarray(data, np.float64) ** 2, minlength=n_rows)
    out_val = (out_val * np.repeat(sq, np.diff(out_ptr))).astype(np.float32)
    # values that rounded apart before the rescale can tie after it: re-break ties by index
    order = np.lexsort((out_idx, -out_val, _row_ids(out_ptr)))
    return out_ptr, out_idx[order], out_val[order]


def neighbour_index(indptr, indices, data, n_cols: int, similarity: str = "cosine", alpha: float = 0.5) -> dict:
    """What ``query_topk_similarity`` reads of the rows it searches (the targets: e.g. a
    UserKNN's training users), built once and reused for every query: their prepared values,
    the transposed copy the kernel scatters from, and the column statistics (``adjusted_cosine``'s
    means) that new rows are centred with. A dict of arrays and flags; treat it as opaque."""
    n_rows = np.asarray(indptr).shape[0] - 1
    if n_rows < 0:
        raise DataError("indptr must have at least one entry", source="neighbour_index")
    indptr, indices, data = check_csr(indptr, indices, data, n_rows, n_cols, name="neighbour_index")
    validation.choice("similarity", similarity, SIMILARITIES)
    alpha = validation.number("alpha", alpha, minimum=0.0, maximum=1.0)
    indptr, indices, data = _drop_zeros(indptr, indices, data)
    kernel_similarity, kernel_alpha = ("asymmetric_cosine", 1.0) if similarity == "dot" else (similarity, alpha)
    p = _prepare(indptr, indices, data, n_cols, kernel_similarity, float(kernel_alpha))
    col_means = column_means(indices, data, n_cols) if similarity == "adjusted_cosine" else None
    # the values, also on the counting path: a query whose values differ needs them
    _, right = scaled_values(indptr, indices, data, n_cols, kernel_similarity, float(kernel_alpha), col_means)
    return {"similarity": similarity, "kernel_similarity": kernel_similarity, "alpha": float(kernel_alpha),
            "n_cols": int(n_cols), "n_rows": n_rows, "binary": p["binary"], "lscale": p["lscale"],
            "rscale": p["rscale"], "row_nnz": p["row_nnz"], "right_min": float(right.min()) if right.size else 0.0,
            "value": float(data[0]) if data.size else 0.0,
            "structure_t": transpose(indptr, indices, np.zeros(0, np.float32), n_cols),
            "values_t": transpose(indptr, indices, right, n_cols), "col_means": col_means}


def query_topk_similarity(index: dict, indptr, indices, data, k: int, shrink: float = 0.0, min_support: int = 1):
    """The top-k rows of ``index`` (``neighbour_index``) most similar to each query row, by
    ``topk_similarity``'s definitions and kernel: a query row equal to a target row gets that
    row's neighbours and scores (plus itself: no row is excluded). Queries are a CSR over the
    same columns, weighted as the targets were; centring uses the targets' column statistics.
    Returns ``(indptr int64, indices int32, data float32)`` of the n_queries x n_targets result,
    each row best first, ties by lower index."""
    n_q = np.asarray(indptr).shape[0] - 1
    if n_q < 0:
        raise DataError("indptr must have at least one entry", source="query_topk_similarity")
    n_cols, n_t = index["n_cols"], index["n_rows"]
    q_indptr, q_indices, q_data = check_csr(indptr, indices, data, n_q, n_cols, name="query_topk_similarity")
    k = validation.integer("k", k, minimum=1)
    shrink = validation.number("shrink", shrink, minimum=0.0)
    min_support = validation.integer("min_support", min_support, minimum=1)
    q_indptr, q_indices, q_data = _drop_zeros(q_indptr, q_indices, q_data)
    if n_q == 0 or n_t == 0:
        return np.zeros(n_q + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    similarity, alpha = index["kernel_similarity"], index["alpha"]
    q_nnz = np.diff(q_indptr).astype(np.float32)
    # the counting path when it gives this query's scores too: Jaccard reads no values; the
    # others need the query's values to equal the targets' common value
    binary = index["binary"] and (similarity == "jaccard" or q_data.size == 0
                                  or q_data.min() == q_data.max() == index["value"])
    if binary:
        left, positive = np.zeros(0, np.float32), False
        q_lscale, _ = _binary_scales(q_nnz, similarity, alpha)
        transposed = index["structure_t"]
    else:
        left, _ = scaled_values(q_indptr, q_indices, q_data, n_cols, similarity, alpha, index["col_means"])
        q_lscale = np.ones(n_q, np.float32)
        positive = (similarity in ("cosine", "asymmetric_cosine") and left.size > 0
                    and float(left.min()) * index["right_min"] > 1e-30)
        transposed = index["values_t"]
    # one index space: targets 0..n_t-1 (their rows empty: they are read from the transposed
    # copy), then the queries, which the kernel computes
    p = {"indptr": np.concatenate([np.zeros(n_t, np.int64), q_indptr]), "indices": q_indices, "left": left,
         "right": np.zeros(0, np.float32), "binary": binary, "positive": positive, "n_targets": n_t,
         "lscale": np.concatenate([index["lscale"], q_lscale]),
         "rscale": np.concatenate([index["rscale"], np.zeros(n_q, np.float32)]),
         "row_nnz": np.concatenate([index["row_nnz"], q_nnz]),
         "work": np.concatenate([np.zeros(n_t, np.int64), _row_work(q_indptr, q_indices, index["structure_t"][0])])}
    out_ptr, out_idx, out_val = _compute(p, n_cols, k, similarity, shrink, min_support, False,
                                         rows=np.arange(n_t, n_t + n_q), transposed=transposed,
                                         parallel=run_parallel(n_q, None))
    out = (out_ptr[n_t:] - out_ptr[n_t], out_idx, out_val)  # the target rows are empty
    return _dot_from_asymmetric(out, q_indptr, q_data) if index["similarity"] == "dot" else out


def _prepare(indptr, indices, data, n_cols, similarity, alpha):
    """What the kernel reads of a validated CSR: zeros dropped, the left/right values (or, on
    the counting path, the per-row scales), row sizes, the flags, and each row's scatter-adds."""
    indptr, indices, data = _drop_zeros(indptr, indices, data)
    n_rows = indptr.shape[0] - 1
    row_nnz = np.diff(indptr).astype(np.float32)
    ones = np.ones(n_rows, dtype=np.float32)
    lscale = rscale = ones
    binary = similarity == "jaccard" or (
        similarity in ("cosine", "asymmetric_cosine") and data.size > 0 and data.min() == data.max())
    positive = False
    if binary:
        # every stored value equal: scores depend on co-counts and row sizes only
        left = right = np.zeros(0, dtype=np.float32)  # values are not read on this path
        lscale, rscale = _binary_scales(row_nnz, similarity, alpha)
    else:
        left, right = scaled_values(indptr, indices, data, n_cols, similarity, float(alpha))
        # all products > 1e-30 cannot underflow to 0, so "accumulator == 0" means "not touched"
        positive = (similarity in ("cosine", "asymmetric_cosine") and data.size > 0
                    and float(left.min()) * float(right.min()) > 1e-30)
    col_ptr = np.zeros(int(n_cols) + 1, dtype=np.int64)
    np.cumsum(np.bincount(indices, minlength=int(n_cols)), out=col_ptr[1:])
    work = _row_work(indptr, indices, col_ptr)
    return {"indptr": indptr, "indices": indices, "left": left, "right": right, "lscale": lscale,
            "rscale": rscale, "row_nnz": row_nnz, "binary": binary, "positive": positive, "work": work}


def _binary_scales(row_nnz, similarity, alpha):
    """Per-row (left, right) factors of the counting path: score = c_ij * left_i * right_j."""
    n = np.maximum(row_nnz.astype(np.float64), 1.0)
    if similarity == "cosine":
        scale = (1.0 / np.sqrt(n)).astype(np.float32)
        return scale, scale
    if similarity == "asymmetric_cosine":
        return (n ** -float(alpha)).astype(np.float32), (n ** -(1.0 - float(alpha))).astype(np.float32)
    ones = np.ones(row_nnz.shape[0], dtype=np.float32)
    return ones, ones


def _compute(p, n_cols, k, similarity, shrink, min_support, exclude_self, rows=None, candidates=None,
             transposed=None, parallel=True):
    """The top-k rows of a prepared matrix: every row, or only ``rows`` (the others come back
    empty), with neighbours among all rows or only those where the bool mask ``candidates`` is
    True. Each computed row takes the same path, with the same arithmetic, as in the call over
    every row and every candidate (its work decides, counted over the whole matrix), so it is
    bit-identical to that call's row, or to its restriction to the candidates. ``transposed``:
    the (indptr, indices, data) of the candidates' columns, given when the caller keeps it
    (``query_topk_similarity``: the searched rows, while ``p`` holds the query rows).
    ``parallel=False``: the serial kernel (a request's few rows)."""
    indptr, indices, right = p["indptr"], p["indices"], p["right"]
    n_rows = indptr.shape[0] - 1
    if transposed is not None:
        t_indptr, t_indices, t_data = transposed
    elif candidates is not None:  # the transposed copy lists candidate rows only
        keep = np.asarray(candidates, dtype=np.bool_)[_row_ids(indptr)]
        counts = np.bincount(_row_ids(indptr)[keep], minlength=n_rows)
        c_ptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=c_ptr[1:])
        t_indptr, t_indices, t_data = transpose(c_ptr, np.ascontiguousarray(indices[keep]),
                                                np.ascontiguousarray(right[keep]) if right.size else right,
                                                n_cols)
    else:
        t_indptr, t_indices, t_data = transpose(indptr, indices, right, n_cols)
    work = p["work"]
    import numba

    chunk_ptr, chunk_rows = _chunks(work, 8 * numba.get_num_threads() if parallel else 1, rows)
    # each row's output slot: at most k entries, and no more than its scatter-adds (its candidates)
    per_row = np.minimum(work, min(int(k), n_rows))
    if rows is not None:
        wanted = np.zeros(n_rows, dtype=np.bool_)
        wanted[chunk_rows] = True
        per_row = np.where(wanted, per_row, 0)
    slots = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(per_row, out=slots[1:])
    lens, out_i, out_s = _topk_similarity(
        indptr, indices, p["left"], t_indptr, t_indices, t_data, p["lscale"], p["rscale"], n_rows, int(k),
        p["binary"], similarity == "jaccard", p["positive"], p["row_nnz"], np.float32(shrink), int(min_support),
        bool(exclude_self), chunk_ptr, chunk_rows, work, np.int64(p.get("n_targets", n_rows) // _SPARSE_DIVISOR),
        slots, parallel=parallel)
    indptr_out = _compact(lens, out_i, out_s, slots)
    nnz = int(indptr_out[-1])
    if nnz < out_i.shape[0] // 2:  # mostly short rows: do not keep the reserved buffers alive
        return indptr_out, out_i[:nnz].copy(), out_s[:nnz].copy()
    return indptr_out, out_i[:nnz], out_s[:nnz]
