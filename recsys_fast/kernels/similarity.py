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
are scanned). Selection: in-place quickselect on int64 keys (score bits, then index), a
bounded heap when candidates exceed 64 k, then a branch-free rank sort of the k kept (<= 128;
a comparison sort beyond), so k = 1000 costs a sort, not k-sized heap operations.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..errors import DataError
from ._config import kernel
from ._csr_checks import check_csr, transpose
from ._intrinsics import prefetch
from .topk import heap_push

SIMILARITIES = ("cosine", "jaccard", "asymmetric_cosine", "pearson", "adjusted_cosine")

_HEAP_FACTOR = 64  # bounded heap when candidates >= 64 k, else select + sort keys
_GROUP = 16  # values per group of the group-maximum bound in the dense path
_HIST_SHIFT = 17  # histogram of group maxima by float32 bits >> 17: 1/64-octave buckets
_SPARSE_DIVISOR = 16  # rows with fewer than n_rows / 16 scatter-adds keep a touched list
_LOW = np.int64(0x7FFFFFFF)
_RANK_SORT_MAX = 128  # final sort of <= 128 keys by counting ranks (branch-free)
_PREFETCH_AHEAD = 4  # prefetch the transposed row of the user 4 entries ahead ...
_PREFETCH_ENTRIES = 128  # ... up to its first 128 entries (8 cache lines of int32)


@kernel
def _top_keys(keys, n, k):
    """Rearrange ``keys[:n]`` in place so that its k largest come first (Wirth's selection).

    No allocation: this runs once per row. Keys are distinct (they embed the row index).
    """
    lo = 0
    hi = n - 1
    kth = k - 1
    while lo < hi:
        mid = kth
        # median of three as pivot, guarding against sorted runs
        a, b, c = keys[lo], keys[mid], keys[hi]
        if (a >= b) == (b >= c):
            x = b
        elif (b >= a) == (a >= c):
            x = a
        else:
            x = c
        i = lo
        j = hi
        while True:
            while keys[i] > x:
                i += 1
            while x > keys[j]:
                j -= 1
            if i <= j:
                keys[i], keys[j] = keys[j], keys[i]
                i += 1
                j -= 1
            if i > j:
                break
        if j < kth:
            lo = i
        if kth < i:
            hi = j


@kernel
def _emit_keys(keys, m, out_i, out_s):
    """Write keys[:m] best first as (index, score) pairs.

    Up to 128 keys: each key's position is the number of larger keys (distinct keys), counted
    by a branch-free inner loop that vectorises; a comparison sort mispredicts on random
    scores and was the largest cost per row. More keys: an in-place sort.
    """
    out_bits = out_s.view(np.int32)
    if m <= _RANK_SORT_MAX:
        for a in range(m):
            ka = keys[a]
            pos = 0
            for b in range(m):
                pos += keys[b] > ka
            out_i[pos] = np.int32(_LOW - (ka & _LOW))
            out_bits[pos] = np.int32(ka >> 32)
        return
    keys[:m].sort()
    for t in range(m):
        key = keys[m - 1 - t]
        out_i[t] = np.int32(_LOW - (key & _LOW))
        out_bits[t] = np.int32(key >> 32)


@kernel
def _select_into(cand_s, cand_i, n_cand, k, keys, heap_s, heap_i, out_i, out_s):
    """Best min(k, n_cand) positive candidates into out_i/out_s, best first, ties by lower index.

    Candidates' scores must be > 0: then their float32 bits order like the scores, and one
    int64 key ``bits << 32 | (2^31 - 1 - index)`` orders by score, then lower index. Fewer than
    64 k candidates: in-place selection + sort of keys; more: a bounded heap, which rejects most
    candidates with one comparison. Allocation-free.
    """
    if n_cand >= _HEAP_FACTOR * k:
        size = 0
        for t in range(n_cand):
            sc = cand_s[t]
            # inline reject test: a call per candidate costs more than the comparison
            if size < k or sc > heap_s[0] or (sc == heap_s[0] and cand_i[t] < heap_i[0]):
                size = heap_push(heap_s, heap_i, size, k, sc, cand_i[t])
        bits = heap_s.view(np.int32)
        for t in range(size):
            keys[t] = (np.int64(bits[t]) << 32) | (_LOW - heap_i[t])
        _emit_keys(keys, size, out_i, out_s)
        return size
    bits = cand_s.view(np.int32)
    for t in range(n_cand):
        keys[t] = (np.int64(bits[t]) << 32) | (_LOW - cand_i[t])
    m = min(k, n_cand)
    if n_cand > k:
        _top_keys(keys, n_cand, k)
    _emit_keys(keys, m, out_i, out_s)
    return m


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
        np.maximum(gmax, bits[r * n_groups:(r + 1) * n_groups], gmax)  # vectorises; a loop did not
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


@kernel
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


@kernel(parallel=True)
def _topk_similarity(indptr, indices, ldata, t_indptr, t_indices, t_data, lscale, rscale, n_rows,
                     k, binary, jaccard, positive, row_nnz, shrink, min_support, exclude_self,
                     chunk_ptr, chunk_rows, work, sparse_below):
    """Per row: scatter-accumulate with every co-occurring row, score, select the k best.

    ``binary``: every stored value of the input was equal, so the accumulator counts shared
    columns (c_ij) and the score is c_ij * lscale[i] * rscale[j] (or the Jaccard ratio) — the
    scatter reads no values. Otherwise it sums ldata * t_data (and counts in ``cnt`` when
    shrink / min_support need c_ij). ``chunk_rows[chunk_ptr[c]:chunk_ptr[c + 1]]`` are the rows
    of chunk c; each chunk owns its buffers. A row whose ``work`` (scatter-adds) is below
    ``sparse_below`` keeps a touched list; heavier rows accumulate densely and select after a
    vectorised group-maximum pass (``_dense_candidates``). Returns per-row lengths and
    (n_rows, min(k, n_rows)) index/score arrays.
    """
    kk = min(k, n_rows)
    out_i = np.empty((n_rows, kk), dtype=np.int32)
    out_s = np.empty((n_rows, kk), dtype=np.float32)
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
        keys = np.empty(_HEAP_FACTOR * kk, dtype=np.int64)
        heap_s = np.empty(kk, dtype=np.float32)
        heap_i = np.empty(kk, dtype=np.int32)
        for q in range(chunk_ptr[c], chunk_ptr[c + 1]):
            i = chunk_rows[q]
            li = lscale[i]
            nnz_i = row_nnz[i]
            track = work[i] < sparse_below
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
            lens[i] = _select_into(cand_s, cand_i, n_cand, kk, keys, heap_s, heap_i, out_i[i],
                                   out_s[i])
    return lens, out_i, out_s


@kernel
def _score_dense(acc, cnt, n, li, rscale, nnz_i, row_nnz, binary, jaccard, shrink, min_support):
    """``_score`` over a whole dense accumulator, in place, in loops without branches (they
    vectorise; a per-entry call did not). Untouched entries (co-count 0) come out as 0.
    With ``binary`` the accumulator holds the co-count; otherwise ``cnt`` does (reset here).
    """
    use_shrink = shrink > 0.0
    use_support = min_support > 1
    if binary:
        for j in range(n):
            co = acc[j]
            if jaccard:
                sc = co / max(nnz_i + row_nnz[j] - co, np.float32(1.0))
            else:
                sc = co * (li * rscale[j])
            if use_shrink:
                sc = sc * (co / (co + shrink))
            if use_support:
                sc = sc if co >= min_support else np.float32(0.0)
            acc[j] = sc
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


@kernel
def _score(a, co, li, rj, nnz_i, nnz_j, binary, jaccard, shrink, min_support):
    """Final score of a pair from its accumulated value ``a`` and co-count ``co``; 0 if dropped.

    Scalars only: a kernel call with array arguments costs reference counting per call.
    """
    if co <= 0.0 or co < min_support:
        return np.float32(0.0)
    if jaccard:
        s = co / (nnz_i + nnz_j - co)
    elif binary:
        s = co * li * rj
    else:
        s = a
    if shrink > 0.0:
        s = s * (co / (co + shrink))
    return s


@kernel(parallel=True)
def _compact(lens, out_i, out_s):
    n_rows = lens.shape[0]
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    for r in range(n_rows):
        indptr[r + 1] = indptr[r] + lens[r]
    indices = np.empty(indptr[-1], dtype=np.int32)
    data = np.empty(indptr[-1], dtype=np.float32)
    for r in prange(n_rows):
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
    if similarity == "cosine":
        from .weighting import _l2_normalize

        y = _l2_normalize(indptr, data)  # compiled, float64 sums: the common case, kept fast
        return y, y
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
    row_nnz = np.diff(indptr).astype(np.float32)
    ones = np.ones(n_rows, dtype=np.float32)
    lscale = rscale = ones
    binary = similarity == "jaccard" or (
        similarity in ("cosine", "asymmetric_cosine") and data.size > 0 and data.min() == data.max())
    positive = False
    if binary:
        # every stored value equal: scores depend on co-counts and row sizes only
        left = right = np.zeros(0, dtype=np.float32)  # values are not read on this path
        n = np.maximum(row_nnz.astype(np.float64), 1.0)
        if similarity == "cosine":
            lscale = rscale = (1.0 / np.sqrt(n)).astype(np.float32)
        elif similarity == "asymmetric_cosine":
            lscale = (n ** -float(alpha)).astype(np.float32)
            rscale = (n ** -(1.0 - float(alpha))).astype(np.float32)
    else:
        left, right = _scaled_values(indptr, indices, data, n_cols, similarity, float(alpha))
        # all products > 1e-30 cannot underflow to 0, so "accumulator == 0" means "not touched"
        positive = (similarity in ("cosine", "asymmetric_cosine") and data.size > 0
                    and float(left.min()) * float(right.min()) > 1e-30)
    t_indptr, t_indices, t_data = transpose(indptr, indices, right, n_cols)
    work = _row_work(indptr, indices, t_indptr)
    import numba

    chunk_ptr, chunk_rows = _chunks(work, 8 * numba.get_num_threads())
    lens, out_i, out_s = _topk_similarity(
        indptr, indices, left, t_indptr, t_indices, t_data, lscale, rscale, n_rows, int(k),
        binary, similarity == "jaccard", positive, row_nnz, np.float32(shrink), int(min_support),
        bool(exclude_self), chunk_ptr, chunk_rows, work, np.int64(n_rows // _SPARSE_DIVISOR))
    return _compact(lens, out_i, out_s)
