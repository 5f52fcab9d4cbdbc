"""Updating a top-k similarity graph when rows of its matrix change: ``update_topk_similarity``.

The result is ``topk_similarity`` of the new matrix, bit for bit; only what the change can move is
recomputed. Two paths:

- The generic one (any similarity, weighting or change): every row whose scaled values changed is
  recomputed by the kernel; a row sharing a column with those keeps its unchanged pairs and merges
  in its new top-k among the changed rows (the kernel restricted to them), unless its kept list was
  cut where a candidate it left out could now enter (then it is recomputed).
- The reserve path (the counting path: binary ``cosine``, ``asymmetric_cosine``, ``jaccard``; only
  entries added; ``exclude_self``): every row keeps a *reserve*, its exact top ``k + extra`` list
  (the graph row and ``extra`` entries after it) and a bound (score, index) that every unlisted
  neighbour ranks at or after. On that path a score is ``f(c_ij, n_i, n_j)``: the co-count and the
  two row sizes, through the row's own formula (light or heavy row, as the kernel rounds it). When
  entries are only added, a pair whose co-count did not change can only lose score (its sizes
  grew), so the new top list of row i is found among: its reserve entries (co-count recovered
  from the stored score by inverting f bit for bit, then updated), and the pairs whose co-count
  grew (j sharing with i a column that gained i or j), whose new co-count is counted exactly
  unless an upper bound from the old bound rules them out. A row whose list then holds fewer than
  k entries above its bound, whose path flipped, or whose stored score does not invert, is
  recomputed by the kernel (with its reserve). Nothing else is read: the cost is the pairs the new
  entries create and the reserve entries of affected rows, not the rows' scatter-adds.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .. import validation
from ..errors import DataError
from ._config import kernel, kernel_pair
from ._csr_checks import check_csr, transpose
from .similarity import (SIMILARITIES, _SPARSE_DIVISOR, _binary_scales, _compute, _prepare, _row_ids, _sort_desc,
                         count_score, topk_similarity)

_LOW = np.int64(0x7FFFFFFF)
_SLACK = 1.0 + 2.0 ** -20  # float32 rounding of a rescaled score: 6 roundings of 2^-24 each, with room
_RESERVE_SIMILARITIES = ("cosine", "asymmetric_cosine", "jaccard")
_PARALLEL_ENTRIES = 1 << 23  # the reserve pass runs in parallel above this many list entries: below (size M:
# 2.6M) the serial pass was faster on the shared 2-core machine, where waking the pool costs tens of ms
_BITMAP_MIN = 64  # touched rows this long get a column bitmap for the exact co-counts (``_bitmaps``) ...
_BITMAP_BYTES = 1 << 26  # ... within 64 MiB
_PAIR_SHARE = 128  # the reserve path is taken while its pairs stay under 1/128 of a full build's scatter-adds


@kernel(fastmath=False, inline=True)
def _pair_score(c, li, rj, ni, nj, light, jaccard, shrink, min_support):
    """The counting path's score of a pair with co-count ``c``, bit for bit as the kernel computes
    it (``count_score``: one rounding sequence for light and heavy rows; ``light`` is unused)."""
    return count_score(np.float32(c), li, rj, ni, nj, jaccard, shrink, min_support)


@kernel(fastmath=False)
def _invert(s, li, rj, ni, nj, light, jaccard, shrink, min_support):
    """The co-count c with ``_pair_score(c) == s`` bit for bit (scores grow with c), or -1."""
    cap = np.int64(min(ni, nj))
    if cap < 1 or not s > 0.0:
        return np.int64(-1)
    if shrink == 0.0:  # a direct estimate, checked, usually right
        if jaccard:
            est = np.float64(s) * (np.float64(ni) + np.float64(nj)) / (1.0 + np.float64(s))
        else:
            est = np.float64(s) / (np.float64(li) * np.float64(rj))
        if est < cap + 2.0:
            c0 = np.int64(est + 0.5)  # the nearest count first: it is the answer nearly always
            for d in range(3):
                c = c0 + (0, -1, 1)[d]
                if 1 <= c <= cap and _pair_score(c, li, rj, ni, nj, light, jaccard, shrink, min_support) == s:
                    return c
    lo = np.int64(1)
    hi = cap
    while lo < hi:
        mid = (lo + hi) // 2
        if _pair_score(mid, li, rj, ni, nj, light, jaccard, shrink, min_support) < s:
            lo = mid + 1
        else:
            hi = mid
    return lo if _pair_score(lo, li, rj, ni, nj, light, jaccard, shrink, min_support) == s else np.int64(-1)


@kernel(fastmath=False)
def _max_count(bs, bj, j, li, rj, ni, nj, light, jaccard, shrink, min_support):
    """The largest co-count c <= min(ni, nj) whose score for neighbour j ranks at or after the bound
    (bs, bj): the most an unlisted neighbour can share. A bound of score 0 means the list held every
    positive score: then the largest c that scores 0 (below ``min_support``)."""
    lo = np.int64(0)
    hi = np.int64(min(ni, nj))
    if not bs > 0.0:
        bj = 0
    if shrink == 0.0 and bs > 0.0 and hi > 0:  # narrow the search around the direct estimate
        if jaccard:
            est = np.float64(bs) * (np.float64(ni) + np.float64(nj)) / (1.0 + np.float64(bs))
        else:
            est = np.float64(bs) / (np.float64(li) * np.float64(rj))
        if est < hi:
            c0 = np.int64(est)
            a = max(lo, c0 - 1)
            b = min(hi, c0 + 2)
            s_a = _pair_score(a, li, rj, ni, nj, light, jaccard, shrink, min_support)
            s_b = _pair_score(b, li, rj, ni, nj, light, jaccard, shrink, min_support)
            if (s_a < bs or (s_a == bs and j >= bj)) and not (s_b < bs or (s_b == bs and j >= bj)):
                lo, hi = a, b - 1  # pred(a) holds, pred(b) fails: the answer is in [a, b)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        s = _pair_score(mid, li, rj, ni, nj, light, jaccard, shrink, min_support)
        if s < bs or (s == bs and j >= bj):
            lo = mid
        else:
            hi = mid - 1
    return lo


@kernel(fastmath=False, inline=True)
def _common(indptr, indices, a, b):
    """Columns rows a and b share (sorted rows: a merge, or binary searches into the longer row)."""
    la, ha, lb, hb = indptr[a], indptr[a + 1], indptr[b], indptr[b + 1]
    if ha - la > hb - lb:
        la, ha, lb, hb = lb, hb, la, ha
    c = 0
    if hb - lb > 8 * (ha - la):
        pos = lb
        for p in range(la, ha):
            v = indices[p]
            lo, hi = pos, hb  # first entry >= v (no slice: a view's reference count is shared)
            while lo < hi:
                mid = (lo + hi) >> 1
                if indices[mid] < v:
                    lo = mid + 1
                else:
                    hi = mid
            q = lo
            if q < hb and indices[q] == v:
                c += 1
                q += 1
            pos = q
            if pos >= hb:
                break
        return c
    p, q = la, lb
    while p < ha and q < hb:
        x, y = indices[p], indices[q]
        c += x == y
        p += x <= y
        q += y <= x
    return c


@kernel
def _row_bitmaps(indptr, indices, rows, n_words):
    """The columns of each of ``rows`` as a bitmap of ``n_words`` 64-bit words (row b at b * n_words)."""
    bm = np.zeros(rows.shape[0] * n_words, dtype=np.uint64)
    for b in range(rows.shape[0]):
        r = rows[b]
        base = b * n_words
        for p in range(indptr[r], indptr[r + 1]):
            c = indices[p]
            bm[base + (c >> 6)] |= np.uint64(1) << np.uint64(c & 63)
    return bm


@kernel(inline=True)
def _probe(indptr, indices, r, bm, base):
    """How many columns of row r are set in the bitmap at ``bm[base:]``."""
    c = 0
    for p in range(indptr[r], indptr[r + 1]):
        u = indices[p]
        c += np.int64((bm[base + (u >> 6)] >> np.uint64(u & 63)) & np.uint64(1))
    return c


@kernel(inline=True)
def _co_count(indptr, indices, a, b, slot, bm, n_words):
    """Columns rows a and b share: ``_common``, or where one of them has a bitmap (``slot`` >= 0) and
    that is cheaper, the other's columns probed in it (one load each, no merge, no search)."""
    na = indptr[a + 1] - indptr[a]
    nb = indptr[b + 1] - indptr[b]
    small, big = min(na, nb), max(na, nb)
    cost = small * (np.int64(np.log2(big + 1)) + 1) if big > 8 * small else na + nb
    sa, sb = slot[a], slot[b]
    if sb >= 0 and na <= nb and na < cost:
        return _probe(indptr, indices, a, bm, np.int64(sb) * n_words)
    if sa >= 0 and nb < cost:
        return _probe(indptr, indices, b, bm, np.int64(sa) * n_words)
    if sb >= 0 and na < cost:
        return _probe(indptr, indices, a, bm, np.int64(sb) * n_words)
    return _common(indptr, indices, a, b)


@kernel
def _counting_values(d, jaccard):
    """Whether values ``d`` take the counting path with no explicit zero: all non-zero (Jaccard) or
    all equal and non-zero. One pass."""
    if d.shape[0] == 0:
        return True
    first = d[0]
    if first == 0:
        return False
    for t in range(d.shape[0]):
        if d[t] == 0 or (not jaccard and d[t] != first):
            return False
    return True


@kernel
def _added_entries(o_ptr, o_idx, n_ptr, n_idx):
    """The columns of each new row that its old row lacks (CSR), and whether every old row is in its
    new row (entries only added)."""
    n_rows = n_ptr.shape[0] - 1
    a_ptr = np.zeros(n_rows + 1, dtype=np.int64)
    for r in range(n_rows):
        a_ptr[r + 1] = a_ptr[r] + max(0, (n_ptr[r + 1] - n_ptr[r]) - (o_ptr[r + 1] - o_ptr[r]))
    a_idx = np.zeros(a_ptr[n_rows], dtype=np.int32)
    bad = np.zeros(n_rows, dtype=np.bool_)
    for r in prange(n_rows):
        po, eo, q, eq = o_ptr[r], o_ptr[r + 1], a_ptr[r], a_ptr[r + 1]
        for p in range(n_ptr[r], n_ptr[r + 1]):
            c = n_idx[p]
            if po < eo and o_idx[po] < c:  # an old column the new row lacks
                bad[r] = True
                break
            if po < eo and o_idx[po] == c:
                po += 1
            elif q < eq:
                a_idx[q] = c
                q += 1
            else:
                bad[r] = True
                break
        if po != eo or q != eq:
            bad[r] = True
    return a_ptr, a_idx, not bad.any()


@kernel
def _some_rows_work(indptr, indices, t_indptr, rows):
    """``_row_work`` of ``rows`` only (0 elsewhere)."""
    work = np.zeros(indptr.shape[0] - 1, dtype=np.int64)
    for r in rows:
        w = 0
        for p in range(indptr[r], indptr[r + 1]):
            w += t_indptr[indices[p] + 1] - t_indptr[indices[p]]
        work[r] = w
    return work


@kernel
def _pair_counts(a_ptr, a_idx, t_ptr, t_idx, n_rows, n_cols, n_pairs):
    """Ordered pairs (x, y), x != y, sharing a column that gained x or y, with the number of such
    columns (how much their co-count grew): CSR over x, y increasing. ``t_*``: the new matrix
    transposed (its columns' rows); ``n_pairs``: the pairs to list, repeats included."""
    a_cnt = np.zeros(n_cols + 1, dtype=np.int64)
    for p in range(a_idx.shape[0]):
        a_cnt[a_idx[p] + 1] += 1
    for u in range(n_cols):
        a_cnt[u + 1] += a_cnt[u]
    fill = a_cnt[:-1].copy()
    a_rows = np.empty(a_idx.shape[0], dtype=np.int32)
    for r in range(n_rows):
        for p in range(a_ptr[r], a_ptr[r + 1]):
            u = a_idx[p]
            a_rows[fill[u]] = r
            fill[u] += 1
    mark = np.full(n_rows, -1, dtype=np.int32)
    keys = np.empty(n_pairs, dtype=np.int64)
    q = 0
    n = np.int64(n_rows)
    for u in range(n_cols):
        lo, hi = a_cnt[u], a_cnt[u + 1]
        if lo == hi:
            continue
        for t in range(lo, hi):
            mark[a_rows[t]] = u
        for p in range(t_ptr[u], t_ptr[u + 1]):
            x = t_idx[p]
            for t in range(lo, hi):  # (x, an added row)
                y = a_rows[t]
                if y != x:
                    keys[q] = x * n + y
                    q += 1
            if mark[x] != u:  # (an added row, x) with x not added: listed from one side only
                for t in range(lo, hi):
                    keys[q] = a_rows[t] * n + x
                    q += 1
    keys = keys[:q]
    keys.sort()
    d_ptr = np.zeros(n_rows + 1, dtype=np.int64)
    d_y = np.empty(q, dtype=np.int32)
    d_cnt = np.empty(q, dtype=np.int32)
    m = 0
    t = 0
    while t < q:
        key = keys[t]
        e = t + 1
        while e < q and keys[e] == key:
            e += 1
        x = key // n
        d_y[m] = np.int32(key - x * n)
        d_cnt[m] = np.int32(e - t)
        d_ptr[x + 1] += 1
        m += 1
        t = e
    for r in range(n_rows):
        d_ptr[r + 1] += d_ptr[r]
    return d_ptr, d_y[:m], d_cnt[:m]


@kernel
def _affected(redo, touched, d_ptr, g_ptr, g_idx, e_len, e_idx, m):
    """Rows (not recomputed) whose list can change: touched, gaining co-counts, or listing a touched row."""
    n = touched.shape[0]
    need = np.zeros(n, dtype=np.bool_)
    for i in prange(n):
        if redo[i]:
            continue
        hit = touched[i] or d_ptr[i + 1] > d_ptr[i]
        p = g_ptr[i]
        while not hit and p < g_ptr[i + 1]:
            hit = touched[g_idx[p]]
            p += 1
        t = 0
        while not hit and t < e_len[i]:
            hit = touched[e_idx[i * m + t]]
            t += 1
        need[i] = hit
    return need


@kernel(inline=True)
def _key(bits, j):
    """Ranking key of a positive score's bits and its index: larger ranks first (ties: lower index)."""
    return (np.int64(bits) << 32) | (_LOW - j)


@kernel(fastmath=False, inline=True)
def _count_from(j, i, g_ptr, g_idx, g_s, e_len, e_idx, e_s, m, b_s, b_j, o_l, o_r, o_n, light, jaccard, shrink,
                min_support):
    """The old co-count of (j, i) read from row j's list (>= 0), or ``-2 - cap`` with cap the most
    row j's bound allows (i unlisted there)."""
    n_g = g_ptr[j + 1] - g_ptr[j]
    for t in range(n_g + e_len[j]):
        if t < n_g:
            x, s = g_idx[g_ptr[j] + t], g_s[g_ptr[j] + t]
        else:
            x, s = e_idx[j * m + t - n_g], e_s[j * m + t - n_g]
        if x == i:
            c = _invert(s, o_l[j], o_r[i], o_n[j], o_n[i], light, jaccard, shrink, min_support)
            return c if c >= 0 else np.int64(-2 - min(o_n[i], o_n[j]))
    return -2 - _max_count(b_s[j], b_j[j], i, o_l[j], o_r[i], o_n[j], o_n[i], light, jaccard, shrink, min_support)


@kernel_pair(fastmath=False)
def _reserve_rows(rows, k, m, n_chunks, cap, g_ptr, g_idx, g_s, e_len, e_idx, e_s, b_s, b_j, d_ptr, d_y, d_cnt,
                  touched, light, o_l, o_r, o_n, n_l, n_r, n_n, jaccard, shrink, min_support, n_ptr, n_idx, slot, bm,
                  n_words):
    """The new reserve list and bound of each row of ``rows`` (touched rows and rows gaining pairs; see
    the module docstring), or ``ok = False`` where the row must be recomputed. Rows are split into ``n_chunks`` contiguous
    chunks, each with its own marks. Exact co-counts read the bitmaps ``bm`` of the rows with
    ``slot`` >= 0 where that is cheaper (``_co_count``). Returns (lengths, indices, scores at stride k + m, bound
    scores, bound indices, ok, pairs counted exactly)."""
    n_w = rows.shape[0]
    n_all = touched.shape[0]
    width = k + m
    kk = min(k, n_all)
    w_len = np.zeros(n_w, dtype=np.int64)
    w_idx = np.zeros(n_w * width, dtype=np.int32)
    w_s = np.zeros(n_w * width, dtype=np.float32)
    w_bs = np.zeros(n_w, dtype=np.float32)
    w_bj = np.zeros(n_w, dtype=np.int32)
    w_ok = np.zeros(n_w, dtype=np.bool_)
    counted = np.zeros(n_w, dtype=np.int64)
    w_bits = w_s.view(np.int32)
    for c in prange(n_chunks):
        stamp = np.full(n_all, -1, dtype=np.int32)
        dval = np.zeros(n_all, dtype=np.int32)
        one = np.zeros(1, dtype=np.float32)
        one_bits = one.view(np.int32)
        # scratch for one row, allocated once per chunk (allocations and views touch shared counters)
        keys = np.empty(cap, dtype=np.int64)  # the row's candidates as ranking keys
        for w in range(c * n_w // n_chunks, (c + 1) * n_w // n_chunks):  # contiguous: no false sharing
            i = rows[w]
            li_o, li_n, ni_o, ni_n, lt = o_l[i], n_l[i], o_n[i], n_n[i], light[i]
            bs, bj = b_s[i], b_j[i]
            nbs, nbj = bs, bj
            if touched[i] and not jaccard and bs > 0.0:
                # unlisted, uncounted pairs: at most the old bound times the row's scale change
                u = np.float64(bs) * (np.float64(li_n) / np.float64(li_o)) * _SLACK
                uf = np.float32(u * (1.0 + 2.0 ** -23))  # rounded to nearest, still >= u
                if uf < bs:
                    nbs, nbj = uf, np.int32(0)
            d_lo, d_hi = d_ptr[i], d_ptr[i + 1]
            for t in range(d_lo, d_hi):
                stamp[d_y[t]] = i
                dval[d_y[t]] = d_cnt[t]
            g_lo = g_ptr[i]
            n_g = g_ptr[i + 1] - g_lo
            n_list = n_g + e_len[i]
            base = w * width
            n_c = 0
            ok = True
            for t in range(n_list):
                if t < n_g:
                    j, s = g_idx[g_lo + t], g_s[g_lo + t]
                else:
                    j, s = e_idx[i * m + t - n_g], e_s[i * m + t - n_g]
                dj = 0
                if stamp[j] == i:
                    dj = dval[j]
                    stamp[j] = -2  # listed: not a new pair
                if touched[i] or touched[j] or dj != 0:
                    c_old = _invert(s, li_o, o_r[j], ni_o, o_n[j], lt, jaccard, shrink, min_support)
                    if c_old < 0:
                        ok = False
                        break
                    s = _pair_score(c_old + dj, li_n, n_r[j], ni_n, n_n[j], lt, jaccard, shrink, min_support)
                if s > 0.0:
                    one[0] = s
                    keys[n_c] = _key(one_bits[0], j)
                    n_c += 1
            if ok:
                # the new pairs (co-count grew) that the list does not hold: their old co-count is at
                # most what the old bound allows, so their score at most s_up. One that could reach
                # the top k is counted exactly; the others only raise the bound to their s_up
                n_exact = n_c
                if d_hi > d_lo:
                    _sort_desc(keys, n_exact)
                for t in range(d_lo, d_hi):
                    j = d_y[t]
                    if stamp[j] != i:
                        continue
                    c_max = _max_count(bs, bj, j, li_o, o_r[j], ni_o, o_n[j], lt, jaccard, shrink, min_support)
                    s_up = _pair_score(c_max + d_cnt[t], li_n, n_r[j], ni_n, n_n[j], lt, jaccard, shrink, min_support)
                    if not s_up > 0.0:
                        continue
                    one[0] = s_up
                    up = _key(one_bits[0], j)
                    if n_exact >= kk and up < keys[kk - 1]:  # ranks after the k-th exact entry
                        one[0] = nbs
                        if up > _key(one_bits[0], nbj):
                            nbs, nbj = s_up, j
                        continue
                    # co-counts are symmetric: j's list may hold i, else j's bound caps the count too
                    c_old = _count_from(j, i, g_ptr, g_idx, g_s, e_len, e_idx, e_s, m, b_s, b_j, o_l, o_r, o_n, lt,
                                        jaccard, shrink, min_support)
                    if c_old >= 0:
                        c_new = c_old + d_cnt[t]
                    else:
                        c_cap = -2 - c_old
                        s_up = _pair_score(min(c_cap, c_max) + d_cnt[t], li_n, n_r[j], ni_n, n_n[j], lt, jaccard,
                                           shrink, min_support)
                        if not s_up > 0.0:
                            continue
                        one[0] = s_up
                        up = _key(one_bits[0], j)
                        if n_exact >= kk and up < keys[kk - 1]:
                            one[0] = nbs
                            if up > _key(one_bits[0], nbj):
                                nbs, nbj = s_up, j
                            continue
                        c_new = _co_count(n_ptr, n_idx, i, j, slot, bm, n_words)
                        counted[w] += 1
                    s = _pair_score(c_new, li_n, n_r[j], ni_n, n_n[j], lt, jaccard, shrink, min_support)
                    if s > 0.0:
                        one[0] = s
                        keys[n_c] = _key(one_bits[0], j)
                        n_c += 1
                _sort_desc(keys, n_c)
                one[0] = nbs
                bound = _key(one_bits[0], nbj)
                n_keep = 0
                while n_keep < n_c and keys[n_keep] > bound:
                    n_keep += 1
                if n_keep > width:  # the first left out is the new bound
                    nbj = np.int32(_LOW - (keys[width] & _LOW))
                    one_bits[0] = np.int32(keys[width] >> 32)
                    nbs = one[0]
                    n_keep = width
                ok = n_keep >= kk or not nbs > 0.0
                for t in range(n_keep):
                    w_idx[base + t] = np.int32(_LOW - (keys[t] & _LOW))
                    w_bits[base + t] = np.int32(keys[t] >> 32)
                w_len[w] = n_keep
                w_bs[w] = nbs
                w_bj[w] = nbj
            w_ok[w] = ok
    return w_len, w_idx, w_s, w_bs, w_bj, w_ok, counted


@kernel(fastmath=False, inline=True)
def _quiet_row(i, n_g, g_idx, g_s, g_lo, e_idx, e_s, e_lo, n_e, bs, bj, kk, touched, o_l, o_r, o_n, n_l, n_r, n_n,
               jaccard, shrink, min_support, w_idx, w_s):
    """A quiet row's new list (row i neither gained entries nor pairs: only its touched neighbours'
    scores change, and only down) into ``w_idx``/``w_s``: the list copied with their new scores, each
    moved down to its place (the others keep their order), and the entries that fell to the bound or
    below left out. Returns (length, ok); not ok where it must be recomputed."""
    li_o, li_n, ni_o, ni_n = o_l[i], n_l[i], o_n[i], n_n[i]
    n_list = n_g + n_e
    for t in range(n_list):
        if t < n_g:
            j, s = g_idx[g_lo + t], g_s[g_lo + t]
        else:
            j, s = e_idx[e_lo + t - n_g], e_s[e_lo + t - n_g]
        if touched[j]:
            c_old = _invert(s, li_o, o_r[j], ni_o, o_n[j], False, jaccard, shrink, min_support)
            if c_old < 0:
                return 0, False
            s = _pair_score(c_old, li_n, n_r[j], ni_n, n_n[j], False, jaccard, shrink, min_support)
        w_idx[t] = j
        w_s[t] = s
    for a in range(n_list - 2, -1, -1):  # from the end: a lowered entry sinks past better ones
        j, s = w_idx[a], w_s[a]
        if not touched[j]:  # in order with every entry after it (those only went down)
            continue
        b = a
        while b + 1 < n_list and (w_s[b + 1] > s or (w_s[b + 1] == s and w_idx[b + 1] < j)):
            w_idx[b] = w_idx[b + 1]
            w_s[b] = w_s[b + 1]
            b += 1
        w_idx[b] = j
        w_s[b] = s
    n_keep = n_list
    # entries that fell to the bound or below leave the list (scores only went down)
    while n_keep > 0 and not (w_s[n_keep - 1] > bs or (w_s[n_keep - 1] == bs and w_idx[n_keep - 1] < bj)):
        n_keep -= 1
    while n_keep > 0 and not w_s[n_keep - 1] > 0.0:
        n_keep -= 1
    return n_keep, n_keep >= kk or not bs > 0.0


@kernel
def _reserve_layout(source, pos, k, m, g_ptr, e_len, b_s, b_j, w_len, w_bs, w_bj, f_ptr, f_idx, f_s):
    """The layout after an update: (graph indptr, reserve lengths, bound scores, bound indices) with
    row r as it was (``source`` 0), from the reserve pass (1: its row ``pos[r]``), from the kernel's
    top-(k + m + 1) list (2: row r of ``f``; a full list's last entry is its bound), or a quiet row
    (3: fixed by ``_reserve_fill``), which keeps its graph length and bound: its list only loses
    entries from the end, and a cut one keeps at least k (else the fill reports it failed)."""
    n = source.shape[0]
    width = k + m
    indptr = np.zeros(n + 1, dtype=np.int64)
    ne_len = e_len.copy()
    nb_s = b_s.copy()
    nb_j = b_j.copy()
    for r in range(n):
        src = source[r]
        if src == 0 or src == 3:
            indptr[r + 1] = indptr[r] + g_ptr[r + 1] - g_ptr[r]
            continue
        if src == 1:
            total = w_len[pos[r]]
            nb_s[r] = w_bs[pos[r]]
            nb_j[r] = w_bj[pos[r]]
        else:
            n_f = f_ptr[r + 1] - f_ptr[r]
            total = min(n_f, width)
            if n_f > width:
                nb_s[r] = f_s[f_ptr[r] + width]
                nb_j[r] = f_idx[f_ptr[r] + width]
            else:
                nb_s[r] = np.float32(0.0)
                nb_j[r] = np.int32(0)
        n_r = min(total, k)
        indptr[r + 1] = indptr[r] + n_r
        ne_len[r] = total - n_r
    return indptr, ne_len, nb_s, nb_j


@kernel(fastmath=False)
def _reserve_fill(source, pos, k, m, indptr, graph_in_place, g_ptr, g_idx, g_s, e_len, e_idx, e_s, b_s, b_j, w_idx,
                  w_s, f_ptr, f_idx, f_s, out_i, out_s, ne_len, ne_idx, ne_s, kk, touched, o_l, o_r, o_n, n_l, n_r,
                  n_n, jaccard, shrink, min_support):
    """Writes the rows ``_reserve_layout`` placed: the graph into ``out_i``/``out_s`` (rows at
    ``indptr``) and the reserve into ``ne_idx``/``ne_s``, which hold the old reserve already (a copy,
    or the old arrays themselves: every row keeps its place at stride m). With ``graph_in_place``
    the graph buffers are the old graph's (same layout): unchanged rows are not copied, and a quiet
    row is read into a scratch list before it is written back. Source 3 rows (quiet) get
    ``_quiet_row`` here and their reserve length in ``ne_len``; one that cannot keep its graph length
    is left unwritten and reported in the returned ``failed``."""
    n = source.shape[0]
    width = k + m
    failed = np.zeros(n, dtype=np.bool_)
    q_idx = np.empty(width, dtype=np.int32)
    q_s = np.empty(width, dtype=np.float32)
    for r in range(n):
        src = source[r]
        lo_out = indptr[r]
        n_out = indptr[r + 1] - lo_out
        if src == 0:
            if not graph_in_place:
                lo = g_ptr[r]
                for t in range(n_out):
                    out_i[lo_out + t] = g_idx[lo + t]
                    out_s[lo_out + t] = g_s[lo + t]
            continue
        if src == 3:
            total, ok = _quiet_row(r, n_out, g_idx, g_s, g_ptr[r], e_idx, e_s, r * m, e_len[r], b_s[r], b_j[r], kk,
                                   touched, o_l, o_r, o_n, n_l, n_r, n_n, jaccard, shrink, min_support, q_idx, q_s)
            if not ok or min(total, k) != n_out:
                failed[r] = True
                continue
            ne_len[r] = total - n_out
            src_i, src_s, lo = q_idx, q_s, 0
        elif src == 1:
            src_i, src_s, lo = w_idx, w_s, pos[r] * width
        else:
            src_i, src_s, lo = f_idx, f_s, f_ptr[r]
        for t in range(n_out):
            out_i[lo_out + t] = src_i[lo + t]
            out_s[lo_out + t] = src_s[lo + t]
        for t in range(ne_len[r]):
            ne_idx[r * m + t] = src_i[lo + n_out + t]
            ne_s[r * m + t] = src_s[lo + n_out + t]
    return failed


def _assemble_reserve(source, pos, k, m, graph, reserve, w, f, overwrite, rescore):
    """The graph and reserve after an update (``_reserve_layout``, ``_reserve_fill``): (indptr, indices,
    scores, reserve lengths, indices, scores, bound scores, bound indices, failed rows). ``overwrite``:
    the old graph's and reserve's arrays may take the result (written in place where the layout
    allows and they are writeable). ``rescore``: (kk, touched, old and new scales and sizes,
    jaccard, shrink, min_support) for the quiet rows."""
    g_ptr, g_idx, g_s = graph
    e_len, e_idx, e_s, b_s, b_j = reserve
    w_len, w_idx, w_s, w_bs, w_bj = w
    indptr, ne_len, nb_s, nb_j = _reserve_layout(source, pos, k, m, g_ptr, e_len, b_s, b_j, w_len, w_bs, w_bj, *f)
    in_place = overwrite and g_idx.flags.writeable and g_s.flags.writeable and np.array_equal(indptr, g_ptr)
    out_i, out_s = (g_idx, g_s) if in_place else (np.empty(indptr[-1], np.int32), np.empty(indptr[-1], np.float32))
    keep = overwrite and e_idx.flags.writeable and e_s.flags.writeable
    ne_idx, ne_s = (e_idx, e_s) if keep else (e_idx.copy(), e_s.copy())
    failed = _reserve_fill(source, pos, k, m, indptr, in_place, g_ptr, g_idx, g_s, e_len, e_idx, e_s, b_s, b_j, w_idx,
                           w_s, *f, out_i, out_s, ne_len, ne_idx, ne_s, *rescore)
    return (indptr if not in_place else g_ptr, out_i, out_s, ne_len, ne_idx, ne_s, nb_s, nb_j, failed)


@kernel
def _changed_rows(o_ptr, o_idx, o_left, o_right, n_ptr, n_idx, n_left, n_right, has_values):
    """Rows whose stored columns or (when ``has_values``) left/right values differ."""
    n_rows = n_ptr.shape[0] - 1
    out = np.zeros(n_rows, dtype=np.bool_)
    for r in range(n_rows):
        lo_o = o_ptr[r]
        lo_n = n_ptr[r]
        m = o_ptr[r + 1] - lo_o
        if m != n_ptr[r + 1] - lo_n:
            out[r] = True
            continue
        for t in range(m):
            if o_idx[lo_o + t] != n_idx[lo_n + t]:
                out[r] = True
                break
            if has_values and (o_left[lo_o + t] != n_left[lo_n + t] or o_right[lo_o + t] != n_right[lo_n + t]):
                out[r] = True
                break
    return out


@kernel
def _merge_rows(q_rows, g_ptr, g_idx, g_s, c_ptr, c_idx, c_s, changed, kk, kk_old):
    """For each row of ``q_rows`` (unchanged itself, sharing columns with changed rows): its old
    list without the changed rows, merged with its new top-k among the changed rows (``c_*``).

    The result is the row's new top-k when the old list was complete (fewer than ``kk_old``
    entries: every candidate was listed) or when the merge's kk-th entry ranks at or before the
    old list's last entry: every candidate the old list left out ranked after that entry, and
    unchanged pairs keep their scores. Otherwise ``ok`` is False and the row must be recomputed.
    """
    n_q = q_rows.shape[0]
    out_ptr = np.zeros(n_q + 1, dtype=np.int64)
    out_i = np.empty(n_q * kk, dtype=np.int32)
    out_s = np.empty(n_q * kk, dtype=np.float32)
    ok = np.ones(n_q, dtype=np.bool_)
    for q in range(n_q):
        i = q_rows[q]
        a = g_ptr[i]
        a_end = g_ptr[i + 1]
        b = c_ptr[i]
        b_end = c_ptr[i + 1]
        full = a_end - a >= kk_old
        last_s = g_s[a_end - 1] if a_end > a else np.float32(0.0)
        last_j = g_idx[a_end - 1] if a_end > a else np.int32(0)
        base = out_ptr[q]
        n = 0
        while n < kk:
            while a < a_end and changed[g_idx[a]]:
                a += 1
            has_a = a < a_end
            has_b = b < b_end
            if not has_a and not has_b:
                break
            take_a = has_a and (not has_b or g_s[a] > c_s[b] or (g_s[a] == c_s[b] and g_idx[a] < c_idx[b]))
            if take_a:
                out_i[base + n] = g_idx[a]
                out_s[base + n] = g_s[a]
                a += 1
            else:
                out_i[base + n] = c_idx[b]
                out_s[base + n] = c_s[b]
                b += 1
            n += 1
        if full:
            if n < kk:
                ok[q] = False
            else:
                s = out_s[base + n - 1]
                j = out_i[base + n - 1]
                if s < last_s or (s == last_s and j > last_j):
                    ok[q] = False
        out_ptr[q + 1] = base + n
    return out_ptr, out_i, out_s, ok


@kernel
def _assemble(source, pos, g_ptr, g_idx, g_s, m_ptr, m_idx, m_s, f_ptr, f_idx, f_s):
    """One CSR from three: row r comes from the old graph (source 0, row r), the merged rows
    (source 1, row ``pos[r]``) or the recomputed rows (source 2, row r)."""
    n_rows = source.shape[0]
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    for r in range(n_rows):
        s = source[r]
        if s == 0:
            m = g_ptr[r + 1] - g_ptr[r]
        elif s == 1:
            m = m_ptr[pos[r] + 1] - m_ptr[pos[r]]
        else:
            m = f_ptr[r + 1] - f_ptr[r]
        indptr[r + 1] = indptr[r] + m
    out_i = np.empty(indptr[n_rows], dtype=np.int32)
    out_s = np.empty(indptr[n_rows], dtype=np.float32)
    for r in range(n_rows):
        s = source[r]
        if s == 0:
            lo = g_ptr[r]
            src_i, src_s = g_idx, g_s
        elif s == 1:
            lo = m_ptr[pos[r]]
            src_i, src_s = m_idx, m_s
        else:
            lo = f_ptr[r]
            src_i, src_s = f_idx, f_s
        for t in range(indptr[r + 1] - indptr[r]):
            out_i[indptr[r] + t] = src_i[lo + t]
            out_s[indptr[r] + t] = src_s[lo + t]
    return indptr, out_i, out_s


def _reserve_able(similarity: str, p: dict, exclude_self: bool) -> bool:
    return similarity in _RESERVE_SIMILARITIES and p["binary"] and bool(exclude_self)


def _empty_reserve_arrays(n_rows: int, m: int):
    return (np.zeros(n_rows, np.int64), np.zeros(n_rows * m, np.int32), np.zeros(n_rows * m, np.float32),
            np.zeros(n_rows, np.float32), np.zeros(n_rows, np.int32))


def _full_with_reserve(p, n_cols, k, m, similarity, shrink, min_support, rows=None, transposed=None):
    """Every row (or ``rows``; the others come back empty) by the kernel at k + m + 1: (graph, reserve)."""
    n_rows = p["indptr"].shape[0] - 1
    f = _compute(p, n_cols, k + m + 1, similarity, shrink, min_support, True, rows=rows, transposed=transposed)
    source = np.full(n_rows, 2, np.int8)
    empty_g = (np.zeros(n_rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
    w = (np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.float32),
         np.zeros(0, np.int32))
    none_f = np.zeros(0, np.float32)
    rescore = (min(k, n_rows), np.zeros(0, np.bool_), none_f, none_f, none_f, none_f, none_f, none_f,
               similarity == "jaccard", np.float32(shrink), int(min_support))
    out = _assemble_reserve(source, np.zeros(n_rows, np.int64), k, m, empty_g, _empty_reserve_arrays(n_rows, m), w, f,
                            True, rescore)
    return out[:3], _reserve_dict(m, *out[3:8])


def _reserve_dict(m, lengths, indices, scores, bound_scores, bound_indices) -> dict:
    return {"extra": int(m), "lengths": lengths, "indices": indices, "scores": scores,
            "bound_scores": bound_scores, "bound_indices": bound_indices}


RESERVE_ARRAYS = ("lengths", "indices", "scores", "bound_scores", "bound_indices")
_RESERVE_DTYPES = {"lengths": np.int64, "indices": np.int32, "scores": np.float32, "bound_scores": np.float32,
                   "bound_indices": np.int32}


def check_reserve(reserve, n_rows: int, source: str) -> dict:
    """A reserve (``topk_similarity_reserve``'s) coerced and checked against ``n_rows`` rows."""
    if not isinstance(reserve, dict) or "extra" not in reserve or any(a not in reserve for a in RESERVE_ARRAYS):
        raise DataError(f"reserve must be a dict with 'extra' and {list(RESERVE_ARRAYS)}", source=source)
    m = int(reserve["extra"])
    out = {"extra": m}
    for name in RESERVE_ARRAYS:
        arr = np.ascontiguousarray(reserve[name], dtype=_RESERVE_DTYPES[name])
        want = n_rows * m if name in ("indices", "scores") else n_rows
        if arr.shape != (want,):
            raise DataError(f"reserve[{name!r}] must have {want} entries, got {arr.shape}", source=source)
        out[name] = arr
    if m < 1 or (n_rows and (out["lengths"].min() < 0 or out["lengths"].max() > m)) or (
            out["indices"].size and (out["indices"].min() < 0 or out["indices"].max() >= n_rows)):
        raise DataError("reserve lengths or indices out of range", source=source)
    return out


def topk_similarity_reserve(indptr, indices, data, n_cols: int, k: int, extra: int, similarity: str = "cosine",
                            shrink: float = 0.0, min_support: int = 1, alpha: float = 0.5,
                            exclude_self: bool = True):
    """``topk_similarity`` (same arguments, same result bit for bit) plus a reserve for
    ``update_topk_similarity``: each row's next ``extra`` neighbours and a bound that every
    neighbour not listed ranks at or after. Returns ``(indptr, indices, data, reserve)``;
    ``reserve`` is None where updates do not use one (values not all equal, ``dot``,
    ``pearson``, ``adjusted_cosine``, ``exclude_self=False``): then this is ``topk_similarity``."""
    extra = validation.integer("extra", extra, minimum=0)
    n_rows = np.asarray(indptr).shape[0] - 1
    if n_rows < 0:
        raise DataError("indptr must have at least one entry", source="topk_similarity_reserve")
    c = check_csr(indptr, indices, data, n_rows, n_cols, name="topk_similarity_reserve")
    validation.choice("similarity", similarity, SIMILARITIES)
    k = validation.integer("k", k, minimum=1)
    shrink = validation.number("shrink", shrink, minimum=0.0)
    min_support = validation.integer("min_support", min_support, minimum=1)
    alpha = validation.number("alpha", alpha, minimum=0.0, maximum=1.0)
    p = _prepare(*c, int(n_cols), similarity, float(alpha)) if similarity in _RESERVE_SIMILARITIES else None
    if extra == 0 or n_rows == 0 or p is None or not _reserve_able(similarity, p, exclude_self):
        return (*topk_similarity(*c, n_cols, k, similarity, shrink, min_support, alpha, exclude_self), None)
    graph, reserve = _full_with_reserve(p, int(n_cols), k, extra, similarity, float(shrink), min_support)
    return (*graph, reserve)


def reindex_reserve(reserve: dict, row_pos, n_rows: int) -> dict:
    """A reserve's rows moved to ``row_pos`` (increasing new indices of the old rows) of ``n_rows``
    rows and its neighbours renamed the same way; the added rows are empty (they had no entries)."""
    m = reserve["extra"]
    row_pos = np.asarray(row_pos, dtype=np.int64)
    lengths, indices, scores, bs, bj = _empty_reserve_arrays(int(n_rows), m)
    lengths[row_pos] = reserve["lengths"]
    indices.reshape(-1, m)[row_pos] = row_pos[reserve["indices"]].reshape(-1, m)
    scores.reshape(-1, m)[row_pos] = reserve["scores"].reshape(-1, m)
    bs[row_pos] = reserve["bound_scores"]
    # a bound of score 0 (the list held every positive score) names no neighbour; a score-only bound
    # (index 0) renamed row_pos[0] still holds, as the rows before it are new and score 0
    bj[row_pos] = np.where(reserve["bound_scores"] > 0, row_pos[reserve["bound_indices"]], 0)
    return _reserve_dict(m, lengths, indices, scores, bs, bj)


def _bitmaps(indptr, indices, touched, n_cols: int):
    """Column bitmaps of the touched rows with at least ``_BITMAP_MIN`` entries, largest first within
    ``_BITMAP_BYTES``: every new pair has a touched row, and the exact co-counts the reserve pass
    takes then cost the other row's entries, not a merge with a long row. Returns (slot of each row
    in the bitmaps or -1, the bitmaps, words per bitmap)."""
    n_words = (int(n_cols) + 63) // 64
    sizes = np.diff(indptr)
    cand = np.flatnonzero(touched & (sizes >= _BITMAP_MIN))
    cand = cand[np.argsort(-sizes[cand], kind="stable")][:_BITMAP_BYTES // max(8 * n_words, 1)]
    slot = np.full(sizes.shape[0], -1, np.int32)
    slot[cand] = np.arange(len(cand), dtype=np.int32)
    return slot, _row_bitmaps(indptr, indices, cand.astype(np.int64), n_words), n_words


def _redo_rows(redo, nw, t_ptr, t_idx, n_l, n_r, n_n, n_cols, k, similarity, shrink, min_support):
    """The rows where ``redo`` by the kernel (top k, counting path), the others empty: a CSR triple."""
    n_rows = redo.shape[0]
    if not redo.any():
        return np.zeros(n_rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    redo_rows = np.flatnonzero(redo)
    p = {"indptr": nw[0], "indices": nw[1], "left": np.zeros(0, np.float32), "right": np.zeros(0, np.float32),
         "lscale": n_l, "rscale": n_r, "row_nnz": n_n, "binary": True, "positive": False,
         "work": _some_rows_work(nw[0], nw[1], t_ptr, redo_rows)}  # only the computed rows' work is read
    return _compute(p, n_cols, k, similarity, shrink, min_support, True, rows=redo_rows,
                    transposed=(t_ptr, t_idx, np.zeros(0, np.float32)), parallel=len(redo_rows) > 256)


def _reserve_update(o, nw, g, reserve, old_n_rows, n_cols, k, similarity, shrink, min_support, alpha, new_t,
                    overwrite=False):
    """The reserve path of ``update_topk_similarity``; None where it does not apply (then the caller
    rebuilds). Returns (graph, reserve, info)."""
    n_rows = nw[0].shape[0] - 1
    m = reserve["extra"]
    if n_rows < old_n_rows or similarity not in _RESERVE_SIMILARITIES:
        return None
    if not (_counting_values(o[2], similarity == "jaccard") and _counting_values(nw[2], similarity == "jaccard")):
        return None  # not the counting path (or explicit zeros) on one side
    a_ptr, a_idx, only_added = _added_entries(o[0], o[1], nw[0], nw[1])
    if not only_added:
        return None
    if new_t is None:
        new_t = transpose(nw[0], nw[1], np.zeros(0, np.float32), n_cols)[:2]
    t_ptr, t_idx = new_t
    n_len = np.diff(t_ptr)
    a_len = np.bincount(a_idx, minlength=n_cols)
    n_pairs = int(np.sum(a_len * (n_len - 1) + a_len * (n_len - a_len)))
    if n_pairs * _PAIR_SHARE > int(np.dot(n_len, n_len)):
        return None
    # light and heavy rows round a counting-path score the same way (count_score): no row's path matters
    redo = np.zeros(n_rows, np.bool_)
    light_n = redo
    o_n = np.diff(o[0]).astype(np.float32)
    n_n = np.diff(nw[0]).astype(np.float32)
    o_l, o_r = _binary_scales(o_n, similarity, alpha)
    n_l, n_r = _binary_scales(n_n, similarity, alpha)
    touched = np.diff(a_ptr) > 0
    d_ptr, d_y, d_cnt = _pair_counts(a_ptr, a_idx, t_ptr, t_idx, n_rows, n_cols, n_pairs)
    r = reserve
    need = _affected(redo, touched, d_ptr, g[0], g[1], r["lengths"], r["indices"], m)
    quiet = need & ~touched & (d_ptr[1:] == d_ptr[:-1])  # only touched neighbours change: the assembly does them
    rows = np.flatnonzero(need & ~quiet).astype(np.int64)
    import numba

    cap = int(k) + m + (int(np.diff(d_ptr).max()) if n_rows else 0)
    slot, bm, n_words = _bitmaps(nw[0], nw[1], touched, n_cols)
    w = _reserve_rows(rows, int(k), m, max(1, min(len(rows), 8 * numba.get_num_threads())), cap, *g, r["lengths"],
                      r["indices"], r["scores"], r["bound_scores"], r["bound_indices"], d_ptr, d_y, d_cnt, touched,
                      light_n, o_l, o_r, o_n, n_l, n_r, n_n, similarity == "jaccard", np.float32(shrink),
                      int(min_support), nw[0], nw[1], slot, bm, n_words, parallel=len(rows) * cap > _PARALLEL_ENTRIES)
    w_len, w_idx, w_s, w_bs, w_bj, w_ok, counted = w
    redo[rows[~w_ok]] = True
    source = np.zeros(n_rows, np.int8)
    pos = np.zeros(n_rows, np.int64)
    source[rows] = 1
    pos[rows] = np.arange(len(rows))
    source[quiet] = 3
    source[redo] = 2
    rescore = (min(int(k), n_rows), touched, o_l, o_r, o_n, n_l, n_r, n_n, similarity == "jaccard",
               np.float32(shrink), int(min_support))
    f = _redo_rows(redo, nw, t_ptr, t_idx, n_l, n_r, n_n, n_cols, k + m + 1, similarity, shrink, min_support)
    out = _assemble_reserve(source, pos, int(k), m, g, tuple(r[name] for name in RESERVE_ARRAYS),
                            (w_len, w_idx, w_s, w_bs, w_bj), f, overwrite, rescore)
    failed = out[8]
    if failed.any():  # quiet rows that could not keep their place (never seen at size M): recomputed and placed
        redo |= failed
        source = np.where(failed, 2, 0).astype(np.int8)
        f = _redo_rows(failed, nw, t_ptr, t_idx, n_l, n_r, n_n, n_cols, k + m + 1, similarity, shrink, min_support)
        out = _assemble_reserve(source, pos, int(k), m, out[:3], out[3:8], (w_len, w_idx, w_s, w_bs, w_bj), f, True,
                                rescore)  # pass 1's output is this call's own: overwritten freely
    info = {"rows": n_rows, "changed": int(touched.sum()), "merged": int((need & ~redo).sum()),
            "recomputed": int(redo.sum()), "path": "reserve", "pairs": int(len(d_y)), "counted": int(counted.sum())}
    return out[:3], _reserve_dict(m, *out[3:8]), info


def update_topk_similarity(old, old_n_rows: int, graph, new, n_cols: int, k: int, similarity: str = "cosine",
                           shrink: float = 0.0, min_support: int = 1, alpha: float = 0.5,
                           exclude_self: bool = True, reserve=None, extra: int = 0, new_t=None,
                           overwrite: bool = False, validate: bool = True):
    """``topk_similarity(*new, n_cols, k, ...)``, bit for bit, computed from an earlier result.

    ``old`` and ``new`` are CSR triples ``(indptr, indices, data)`` with the same shape
    (``n_rows x n_cols``): the matrix the earlier result ``graph`` (a CSR triple, n_rows x
    n_rows) was computed from, with the same options, and the matrix now. ``old`` and ``graph``
    are given in the new index space (rows that did not exist are empty); ``old_n_rows`` is the
    row count of the earlier call (it set k's bound and each row's path).

    ``reserve``: the earlier result's reserve (``topk_similarity_reserve``, or ``info["reserve"]`` of
    an earlier update; in the new index space: ``reindex_reserve``), which enables the reserve path
    (module docstring). ``extra > 0``: where that path does not apply but a reserve can be kept (the
    counting path, ``exclude_self``), the rows are recomputed in full with a reserve of ``extra``
    (about the cost of ``topk_similarity_reserve``), so the next update can take it. ``new_t``:
    optionally the new matrix's structure transposed, ``(indptr, indices)`` (n_cols x n_rows),
    when the caller has it (ItemKNN: the user x item matrix); it must match ``new``.
    ``overwrite=True``: the caller gives up ``graph``'s indices and scores and the reserve's arrays;
    the reserve path then writes the result into them where its layout allows (most updates: every
    row keeps its length), which saves allocating and copying the whole graph. ``validate=False``
    skips the O(nnz) checks of ``old`` and ``new`` (sorted, in range, finite), for callers that built
    them so (the models: merged from checked data); their dtypes are still coerced.

    Otherwise (the generic path) a row whose stored values changed (as the kernel sees them: after
    scaling) is recomputed; a row sharing a column with a changed row keeps its unchanged pairs
    and merges in its new top-k among the changed rows, which the kernel computes over the changed
    rows only, unless the old list was cut where a candidate it left out could now enter (then
    recomputed); every other row keeps its list. Returns ``(indptr, indices, data, info)`` with
    ``info`` counting the rows changed, merged and recomputed, naming the ``path`` ("reserve",
    "full", "generic"), and holding the new ``reserve`` (None on the generic path).
    """
    n_rows = np.asarray(new[0]).shape[0] - 1
    n_cols = int(n_cols)
    if validate:
        o = check_csr(*old, n_rows, n_cols, name="update_topk_similarity (old)")
        nw = check_csr(*new, n_rows, n_cols, name="update_topk_similarity (new)")
    else:
        o, nw = (tuple(np.ascontiguousarray(a, dtype=t) for a, t in zip(x, (np.int64, np.int32, np.float32)))
                 for x in (old, new))
        if o[0].shape != (n_rows + 1,) or nw[1].shape != nw[2].shape or o[1].shape != o[2].shape:
            raise DataError(f"old and new must be CSR triples of {n_rows} rows", source="update_topk_similarity")
    g_ptr, g_idx, g_s = graph  # best first per row, as topk_similarity returns it (not re-sorted)
    g = (np.ascontiguousarray(g_ptr, dtype=np.int64), np.ascontiguousarray(g_idx, dtype=np.int32),
         np.ascontiguousarray(g_s, dtype=np.float32))
    if g[0].shape != (n_rows + 1,) or g[1].shape != g[2].shape or g[1].shape[0] != g[0][-1]:
        raise DataError(f"graph must be a CSR of {n_rows} rows matching new", source="update_topk_similarity")
    validation.choice("similarity", similarity, SIMILARITIES)
    extra = validation.integer("extra", extra, minimum=0)
    if reserve is not None:
        reserve = check_reserve(reserve, n_rows, "update_topk_similarity (reserve)")
    if new_t is not None:
        t_ptr = np.ascontiguousarray(new_t[0], dtype=np.int64)
        t_idx = np.ascontiguousarray(new_t[1], dtype=np.int32)
        if t_ptr.shape != (n_cols + 1,) or t_idx.shape != nw[1].shape or (t_ptr.size and t_ptr[-1] != t_idx.size):
            raise DataError(f"new_t must be the new matrix transposed: {n_cols} rows, {nw[1].size} entries",
                            source="update_topk_similarity")
        new_t = (t_ptr, t_idx)
    args = (n_cols, int(k), similarity, float(shrink), int(min_support), bool(exclude_self))
    if reserve is not None and n_rows and exclude_self:
        done = _reserve_update(o, nw, g, reserve, int(old_n_rows), n_cols, int(k), similarity, float(shrink),
                               int(min_support), float(alpha), new_t, bool(overwrite))
        if done is not None:
            graph_out, reserve_out, info = done
            return (*graph_out, {**info, "reserve": reserve_out})
    m = extra or (reserve["extra"] if reserve is not None else 0)
    if m and n_rows and similarity in _RESERVE_SIMILARITIES:
        pn = _prepare(*nw, n_cols, similarity, float(alpha))
        if _reserve_able(similarity, pn, exclude_self):
            graph_out, reserve_out = _full_with_reserve(pn, n_cols, int(k), m, similarity, float(shrink),
                                                        int(min_support))
            info = {"rows": n_rows, "changed": n_rows, "merged": 0, "recomputed": n_rows, "path": "full",
                    "reserve": reserve_out}
            return (*graph_out, info)
    return _generic_update(o, nw, g, int(old_n_rows), n_rows, alpha, args)


def _generic_update(o, nw, g, old_n_rows, n_rows, alpha, args):
    """The generic path of ``update_topk_similarity``: (indptr, indices, data, info)."""
    n_cols, k, similarity, shrink, min_support, exclude_self = args
    info = {"rows": n_rows, "changed": n_rows, "merged": 0, "recomputed": n_rows, "path": "generic", "reserve": None}
    if similarity == "dot":  # kept values are rescaled after the kernel: recomputed in full
        return (*topk_similarity(*nw, n_cols, k, similarity, shrink, min_support, alpha, exclude_self), info)
    pn = _prepare(*nw, n_cols, similarity, float(alpha))
    po = _prepare(*o, n_cols, similarity, float(alpha))
    if n_rows == 0 or po["binary"] != pn["binary"]:  # the counting path switched: every score moves
        return (*_compute(pn, *args), info)
    changed = _changed_rows(po["indptr"], po["indices"], po["left"], po["right"],
                            pn["indptr"], pn["indices"], pn["left"], pn["right"], not pn["binary"])
    changed |= (po["lscale"] != pn["lscale"]) | (po["rscale"] != pn["rscale"]) | (po["row_nnz"] != pn["row_nnz"])
    # a row whose work crosses the light/heavy threshold takes the other path (other rounding)
    flipped = ((po["work"] < int(old_n_rows) // _SPARSE_DIVISOR) != (pn["work"] < n_rows // _SPARSE_DIVISOR))
    redo = changed | flipped
    cols = np.zeros(n_cols, dtype=np.bool_)
    for p in (po, pn):
        rows_of = _row_ids(p["indptr"])
        cols[p["indices"][changed[rows_of]]] = True
    near = np.bincount(_row_ids(pn["indptr"])[cols[pn["indices"]]], minlength=n_rows) > 0
    q_rows = np.flatnonzero(near & ~redo).astype(np.int64)
    kk, kk_old = min(int(k), n_rows), min(int(k), int(old_n_rows))
    source = np.zeros(n_rows, dtype=np.int8)
    pos = np.zeros(n_rows, dtype=np.int64)
    m = (np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
    if len(q_rows) and changed.any():
        c_ptr, c_idx, c_s = _compute(pn, *args, rows=q_rows, candidates=changed)
        m_ptr, m_idx, m_s, ok = _merge_rows(q_rows, *g, c_ptr, c_idx, c_s, changed, kk, kk_old)
        m = (m_ptr, m_idx, m_s)
        source[q_rows[ok]] = 1
        pos[q_rows] = np.arange(len(q_rows))
        redo[q_rows[~ok]] = True
    source[redo] = 2
    fresh = _compute(pn, *args, rows=np.flatnonzero(redo)) if redo.any() else \
        (np.zeros(n_rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
    info = {"rows": n_rows, "changed": int(changed.sum()), "merged": int((source == 1).sum()),
            "recomputed": int(redo.sum()), "path": "generic", "reserve": None}
    return (*_assemble(source, pos, *g, *m, *fresh), info)
