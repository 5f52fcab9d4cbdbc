"""Row-wise top-k selection with exclusions: dense score rows and a global ranking.

Both return ``(indices int32 (n, k), scores float32 (n, k))`` sorted by score descending, ties
broken by the lower item index, padded with index -1 and score -inf when fewer than k items
qualify. An item qualifies when it is not excluded for that row, is allowed (``allowed`` is a
bool mask over items, or empty for all items) and its score is not NaN. Output is identical for
any thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._config import kernel


@kernel
def _sift_down(heap_s, heap_i, size, pos):
    """Restore the min-heap (worst candidate at the root) below ``pos``.

    Order: lower score is worse; on equal scores the higher index is worse.
    """
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and (heap_s[right] < heap_s[left]
                             or (heap_s[right] == heap_s[left] and heap_i[right] > heap_i[left])):
            child = right
        if heap_s[child] < heap_s[pos] or (heap_s[child] == heap_s[pos] and heap_i[child] > heap_i[pos]):
            heap_s[pos], heap_s[child] = heap_s[child], heap_s[pos]
            heap_i[pos], heap_i[child] = heap_i[child], heap_i[pos]
            pos = child
        else:
            return


@kernel
def heap_push(heap_s, heap_i, size, k, score, index):
    """Offer (score, index) to a bounded heap of capacity ``k``; returns the new size.

    Candidates must be offered in increasing index order for ties to favour lower indices.
    """
    if size < k:
        pos = size
        heap_s[pos] = score
        heap_i[pos] = index
        while pos > 0:  # sift up
            parent = (pos - 1) // 2
            if heap_s[pos] < heap_s[parent] or (heap_s[pos] == heap_s[parent] and heap_i[pos] > heap_i[parent]):
                heap_s[pos], heap_s[parent] = heap_s[parent], heap_s[pos]
                heap_i[pos], heap_i[parent] = heap_i[parent], heap_i[pos]
                pos = parent
            else:
                break
        return size + 1
    if score > heap_s[0] or (score == heap_s[0] and index < heap_i[0]):
        heap_s[0] = score
        heap_i[0] = index
        _sift_down(heap_s, heap_i, size, 0)
    return size


@kernel
def heap_sorted_into(heap_s, heap_i, size, out_i, out_s):
    """Write the heap's entries best-first into ``out_i``/``out_s``; pad the rest with -1/-inf."""
    order = np.argsort(heap_i[:size], kind="mergesort")  # by index, then stable by score below
    tmp_s = heap_s[:size][order]
    tmp_i = heap_i[:size][order]
    order2 = np.argsort(-tmp_s, kind="mergesort")
    for j in range(size):
        out_i[j] = tmp_i[order2[j]]
        out_s[j] = tmp_s[order2[j]]
    for j in range(size, out_i.shape[0]):
        out_i[j] = -1
        out_s[j] = -np.inf


@kernel(parallel=True)
def dense_topk(scores, k, excl_indptr, excl_indices, allowed):
    """Top-k of every row of ``scores`` (n, m), skipping row r's ``excl_indices[excl_indptr[r]:...]``.

    ``excl_indptr`` may be empty (no exclusions); excluded indices of a row must be sorted.
    """
    n, m = scores.shape
    out_i = np.empty((n, k), dtype=np.int32)
    out_s = np.empty((n, k), dtype=np.float32)
    has_excl = excl_indptr.shape[0] > 0
    has_allowed = allowed.shape[0] > 0
    for r in prange(n):
        heap_s = np.empty(k, dtype=np.float32)
        heap_i = np.empty(k, dtype=np.int32)
        size = 0
        e = excl_indptr[r] if has_excl else 0
        e_end = excl_indptr[r + 1] if has_excl else 0
        row = scores[r]
        for j in range(m):
            while e < e_end and excl_indices[e] < j:
                e += 1
            if e < e_end and excl_indices[e] == j:
                continue
            if has_allowed and not allowed[j]:
                continue
            s = row[j]
            if s != s:  # NaN never qualifies
                continue
            size = heap_push(heap_s, heap_i, size, k, s, j)
        heap_sorted_into(heap_s, heap_i, size, out_i[r], out_s[r])
    return out_i, out_s


@kernel(parallel=True)
def ranked_topk(order, order_scores, n_rows, k, excl_indptr, excl_indices, allowed):
    """The first k items of one global ranking ``order`` not excluded for each row.

    ``order`` lists item indices best-first with their ``order_scores`` (a popularity ranking);
    per row this walks the ranking and skips the row's sorted exclusions by binary search.
    """
    out_i = np.full((n_rows, k), -1, dtype=np.int32)
    out_s = np.full((n_rows, k), -np.inf, dtype=np.float32)
    has_excl = excl_indptr.shape[0] > 0
    has_allowed = allowed.shape[0] > 0
    for r in prange(n_rows):
        lo = excl_indptr[r] if has_excl else 0
        hi = excl_indptr[r + 1] if has_excl else 0
        filled = 0
        for p in range(order.shape[0]):
            if filled == k:
                break
            item = order[p]
            if has_allowed and not allowed[item]:
                continue
            if hi > lo:
                pos = lo + np.searchsorted(excl_indices[lo:hi], item)
                if pos < hi and excl_indices[pos] == item:
                    continue
            out_i[r, filled] = item
            out_s[r, filled] = order_scores[p]
            filled += 1
    return out_i, out_s
