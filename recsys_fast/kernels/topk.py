"""Row-wise top-k selection with exclusions: dense score rows and a global ranking.

Both return ``(indices int32 (n, k), scores float32 (n, k))`` sorted by score descending, ties
broken by the lower item index, padded with index -1 and score -inf when fewer than k items
qualify. An item qualifies when it is not excluded for that row, is allowed (``allowed`` is a
bool mask over items, or empty for all items) and its score is not NaN. Each has a parallel and a
serial kernel (the public function picks: serial for a few rows, as a single request is); output
is identical for either and for any thread count.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
from numba import prange

from .. import threads
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


@kernel
def _dense_row(row, k, excl_indices, e, e_end, allowed, has_allowed, heap_s, heap_i, out_i, out_s):
    """Top-k of one score row into ``out_i``/``out_s``, skipping ``excl_indices[e:e_end]`` (sorted)."""
    size = 0
    for j in range(row.shape[0]):
        while e < e_end and excl_indices[e] < j:
            e += 1
        if e < e_end and excl_indices[e] == j:
            continue
        if has_allowed and not allowed[j]:
            continue
        s = row[j]
        if s != s:  # NaN never qualifies
            continue
        # full heap: a score no better than the worst kept loses (an equal one has the higher
        # index); checked here so that most items cost a compare, not a call
        if size == k and s <= heap_s[0]:
            continue
        size = heap_push(heap_s, heap_i, size, k, s, j)
    heap_sorted_into(heap_s, heap_i, size, out_i, out_s)


@kernel(parallel=True)
def _dense_topk_parallel(scores, k, excl_indptr, excl_indices, allowed):
    n = scores.shape[0]
    out_i = np.empty((n, k), dtype=np.int32)
    out_s = np.empty((n, k), dtype=np.float32)
    has_excl = excl_indptr.shape[0] > 0
    has_allowed = allowed.shape[0] > 0
    for r in prange(n):
        heap_s = np.empty(k, dtype=np.float32)
        heap_i = np.empty(k, dtype=np.int32)
        e = excl_indptr[r] if has_excl else 0
        e_end = excl_indptr[r + 1] if has_excl else 0
        _dense_row(scores[r], k, excl_indices, e, e_end, allowed, has_allowed, heap_s, heap_i, out_i[r], out_s[r])
    return out_i, out_s


@kernel
def _dense_topk_serial(scores, k, excl_indptr, excl_indices, allowed):
    n = scores.shape[0]
    out_i = np.empty((n, k), dtype=np.int32)
    out_s = np.empty((n, k), dtype=np.float32)
    has_excl = excl_indptr.shape[0] > 0
    has_allowed = allowed.shape[0] > 0
    heap_s = np.empty(k, dtype=np.float32)
    heap_i = np.empty(k, dtype=np.int32)
    for r in range(n):
        e = excl_indptr[r] if has_excl else 0
        e_end = excl_indptr[r + 1] if has_excl else 0
        _dense_row(scores[r], k, excl_indices, e, e_end, allowed, has_allowed, heap_s, heap_i, out_i[r], out_s[r])
    return out_i, out_s


@kernel
def _ranked_row(order, order_scores, k, excl_indices, lo, hi, allowed, has_allowed, out_i, out_s):
    """The first k items of ``order`` not in ``excl_indices[lo:hi]`` (sorted) and allowed."""
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
        out_i[filled] = item
        out_s[filled] = order_scores[p]
        filled += 1


@kernel(parallel=True)
def _ranked_topk_parallel(order, order_scores, n_rows, k, excl_indptr, excl_indices, allowed):
    out_i = np.full((n_rows, k), -1, dtype=np.int32)
    out_s = np.full((n_rows, k), -np.inf, dtype=np.float32)
    has_excl = excl_indptr.shape[0] > 0
    has_allowed = allowed.shape[0] > 0
    for r in prange(n_rows):
        lo = excl_indptr[r] if has_excl else 0
        hi = excl_indptr[r + 1] if has_excl else 0
        _ranked_row(order, order_scores, k, excl_indices, lo, hi, allowed, has_allowed, out_i[r], out_s[r])
    return out_i, out_s


@kernel
def _ranked_topk_serial(order, order_scores, n_rows, k, excl_indptr, excl_indices, allowed):
    out_i = np.full((n_rows, k), -1, dtype=np.int32)
    out_s = np.full((n_rows, k), -np.inf, dtype=np.float32)
    has_excl = excl_indptr.shape[0] > 0
    has_allowed = allowed.shape[0] > 0
    for r in range(n_rows):
        lo = excl_indptr[r] if has_excl else 0
        hi = excl_indptr[r + 1] if has_excl else 0
        _ranked_row(order, order_scores, k, excl_indices, lo, hi, allowed, has_allowed, out_i[r], out_s[r])
    return out_i, out_s


# ---------------------------------------------------------------------- public functions
SERIAL_MAX_ROWS = 8  # at or below this many rows, a parallel launch costs more than it saves


def run_parallel(n_rows: int, parallel: bool | None) -> bool:
    """Whether a row-wise kernel over ``n_rows`` rows should take its parallel (``prange``) form.

    ``parallel=None`` picks the serial form for small batches (a per-request path then pays no
    parallel launch: waking a pool costs more than scoring one row, and much more on a busy
    machine), and for any batch launched off the main thread when Numba's threading layer is not
    safe for concurrent launches; the parallel form otherwise. Results are identical either way.
    """
    if parallel is not None:
        return bool(parallel)
    return n_rows > SERIAL_MAX_ROWS and (_parallel_calls_are_safe()
                                         or threading.current_thread() is threading.main_thread())


@functools.lru_cache(maxsize=1)
def _parallel_calls_are_safe() -> bool:
    return threads.parallel_calls_are_safe()


def dense_topk(scores, k, excl_indptr, excl_indices, allowed, parallel: bool | None = None):
    """Top-k of every row of ``scores`` (n, m) float32 C-contiguous, skipping row r's
    ``excl_indices[excl_indptr[r]:excl_indptr[r + 1]]`` (sorted int32; ``excl_indptr`` int64, or empty
    for no exclusions). ``allowed``: bool mask over the m items, or empty for all. ``parallel``: see
    ``run_parallel``."""
    if run_parallel(scores.shape[0], parallel):
        return _dense_topk_parallel(scores, k, excl_indptr, excl_indices, allowed)
    return _dense_topk_serial(scores, k, excl_indptr, excl_indices, allowed)


def ranked_topk(order, order_scores, n_rows, k, excl_indptr, excl_indices, allowed, parallel: bool | None = None):
    """The first k items of one global ranking ``order`` not excluded for each of ``n_rows`` rows.

    ``order`` lists item indices best-first with their ``order_scores`` (a popularity ranking);
    per row this walks the ranking and skips the row's sorted exclusions by binary search.
    ``parallel``: see ``run_parallel``.
    """
    if run_parallel(n_rows, parallel):
        return _ranked_topk_parallel(order, order_scores, n_rows, k, excl_indptr, excl_indices, allowed)
    return _ranked_topk_serial(order, order_scores, n_rows, k, excl_indptr, excl_indices, allowed)
