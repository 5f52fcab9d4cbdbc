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
import math
import threading

import numba
import numpy as np
from numba import prange

from .. import limits, threads, validation
from ..errors import DataError
from ._config import kernel, kernel_pair
from ._csr_checks import allowed_mask, as_vector, exclusion_rows


# ---------------------------------------------------------------------- the bounded heap
# One min-heap for every top-k selection of the kernels (dense rows here, kNN rows in knn.py):
# the worst kept candidate at the root; lower score is worse, and on equal scores the higher
# index. The helpers are inlined into their callers (Numba IR), so sharing them costs no call.


@kernel(inline=True)
def _worse(s_a, i_a, s_b, i_b):
    """Whether candidate a ranks below candidate b."""
    return s_a < s_b or (s_a == s_b and i_a > i_b)


@kernel(inline=True)
def _sift_down(heap_s, heap_i, size, pos):
    """Restore the heap below ``pos``."""
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _worse(heap_s[right], heap_i[right], heap_s[left], heap_i[left]):
            child = right
        if _worse(heap_s[child], heap_i[child], heap_s[pos], heap_i[pos]):
            heap_s[pos], heap_s[child] = heap_s[child], heap_s[pos]
            heap_i[pos], heap_i[child] = heap_i[child], heap_i[pos]
            pos = child
        else:
            return


@kernel(inline=True)
def heap_replace_worst(heap_s, heap_i, size, score, index):
    """On a full heap: put (score, index) in place of the worst kept candidate if it ranks above it."""
    if _worse(heap_s[0], heap_i[0], score, index):
        heap_s[0] = score
        heap_i[0] = index
        _sift_down(heap_s, heap_i, size, 0)


@kernel(inline=True)
def heap_push(heap_s, heap_i, size, k, score, index):
    """Offer (score, index) to a bounded heap of capacity ``k``; returns the new size."""
    if size < k:
        pos = size
        heap_s[pos] = score
        heap_i[pos] = index
        while pos > 0:  # sift up
            parent = (pos - 1) // 2
            if _worse(heap_s[pos], heap_i[pos], heap_s[parent], heap_i[parent]):
                heap_s[pos], heap_s[parent] = heap_s[parent], heap_s[pos]
                heap_i[pos], heap_i[parent] = heap_i[parent], heap_i[pos]
                pos = parent
            else:
                break
        return size + 1
    heap_replace_worst(heap_s, heap_i, size, score, index)
    return size


@kernel(inline=True)
def heap_pop_sorted(heap_s, heap_i, size, out_i, out_s):
    """Empty the heap into ``out_i[:size]``/``out_s[:size]``, best first (ties: lower index):
    an in-place heapsort that pops the worst to the back."""
    for end in range(size - 1, -1, -1):
        out_s[end] = heap_s[0]
        out_i[end] = heap_i[0]
        heap_s[0] = heap_s[end]
        heap_i[0] = heap_i[end]
        _sift_down(heap_s, heap_i, end, 0)


@kernel
def heap_sorted_into(heap_s, heap_i, size, out_i, out_s):
    """Empty the heap into ``out_i``/``out_s`` best-first; pad the rest with -1/-inf."""
    heap_pop_sorted(heap_s, heap_i, size, out_i, out_s)
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


@kernel_pair
def _dense_topk(scores, k, excl_indptr, excl_indices, allowed, chunk):
    """``_dense_row`` over every row, in chunks of ``chunk`` rows that own their heap."""
    n = scores.shape[0]
    out_i = np.empty((n, k), dtype=np.int32)
    out_s = np.empty((n, k), dtype=np.float32)
    has_excl = excl_indptr.shape[0] > 0
    has_allowed = allowed.shape[0] > 0
    n_chunks = (n + chunk - 1) // chunk
    for c in prange(n_chunks):
        heap_s = np.empty(k, dtype=np.float32)
        heap_i = np.empty(k, dtype=np.int32)
        for r in range(c * chunk, min(n, (c + 1) * chunk)):
            e = excl_indptr[r] if has_excl else 0
            e_end = excl_indptr[r + 1] if has_excl else 0
            _dense_row(scores[r], k, excl_indices, e, e_end, allowed, has_allowed, heap_s, heap_i, out_i[r],
                       out_s[r])
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


@kernel_pair
def _ranked_topk(order, order_scores, n_rows, k, excl_indptr, excl_indices, allowed):
    out_i = np.full((n_rows, k), -1, dtype=np.int32)
    out_s = np.full((n_rows, k), -np.inf, dtype=np.float32)
    has_excl = excl_indptr.shape[0] > 0
    has_allowed = allowed.shape[0] > 0
    for r in prange(n_rows):
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


def _k(k) -> int:
    if isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)) and k >= 1:
        return int(k)  # the per-request path: no call into validation for a plain int
    return validation.integer("k", k, minimum=1)


def dense_topk(scores, k, excl_indptr=None, excl_indices=None, allowed=None, parallel: bool | None = None):
    """Top-k of every row of ``scores`` (n, m), skipping row r's
    ``excl_indices[excl_indptr[r]:excl_indptr[r + 1]]`` (sorted within the row; ``excl_indptr``
    empty or None for no exclusions). ``allowed``: bool mask over the m items, or empty/None for
    all. ``parallel``: see ``run_parallel``. Scores are used as float32 C-contiguous (passed that
    way, nothing is copied). Checks are O(1) (dtypes, shapes), as befits a per-request path; bad
    input raises ``DataError``."""
    scores = np.asarray(scores)
    if scores.size and scores.dtype.kind not in "iuf":
        raise DataError(f"scores must be numbers, got {scores.dtype}", source="dense_topk")
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        raise DataError(f"scores must be 2-d (rows, items), got shape {scores.shape}", source="dense_topk")
    k = _k(k)
    limits.check_result_size(scores.shape[0], k, "dense_topk")
    excl_indptr, excl_indices = exclusion_rows(excl_indptr, excl_indices, scores.shape[0], scores.shape[1], "dense_topk")
    allowed = allowed_mask(allowed, scores.shape[1], "dense_topk")
    n = scores.shape[0]
    if run_parallel(n, parallel):
        chunk = max(1, min(64, math.ceil(n / (4 * numba.get_num_threads()))))
        return _dense_topk.parallel(scores, k, excl_indptr, excl_indices, allowed, chunk)
    return _dense_topk.serial(scores, k, excl_indptr, excl_indices, allowed, max(n, 1))


def ranked_topk(order, order_scores, n_rows, k, excl_indptr=None, excl_indices=None, allowed=None,
                parallel: bool | None = None):
    """The first k items of one global ranking ``order`` not excluded for each of ``n_rows`` rows.

    ``order`` lists every item index once, best-first, with their ``order_scores`` (a popularity
    ranking); per row this walks the ranking and skips the row's sorted exclusions by binary
    search. ``allowed``: bool mask over the ``len(order)`` items, or empty/None for all.
    ``parallel``: see ``run_parallel``. O(1) checks; bad input raises ``DataError``.
    """
    order = as_vector(order, np.int32, "order", "ranked_topk")
    order_scores = as_vector(order_scores, np.float32, "order_scores", "ranked_topk")
    if order.ndim != 1 or order_scores.shape != order.shape:
        raise DataError(f"order and order_scores must be 1-d of one length, got shapes {order.shape} and "
                        f"{order_scores.shape}", source="ranked_topk")
    n_rows = validation.integer("n_rows", n_rows, minimum=0)
    k = _k(k)
    limits.check_result_size(n_rows, k, "ranked_topk")
    excl_indptr, excl_indices = exclusion_rows(excl_indptr, excl_indices, n_rows, order.shape[0], "ranked_topk")
    allowed = allowed_mask(allowed, order.shape[0], "ranked_topk")
    if allowed.shape[0] and order.shape[0] and (order.min() < 0 or order.max() >= order.shape[0]):  # order indexes the mask
        raise DataError(f"order must hold item indices in [0, {order.shape[0]})", source="ranked_topk")
    return _ranked_topk(order, order_scores, n_rows, k, excl_indptr, excl_indices, allowed,
                        parallel=run_parallel(n_rows, parallel))

