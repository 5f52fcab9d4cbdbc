"""kNN scoring with top-k: ``scores = A_r x B`` for every request row ``r``, then the best k items.

``A`` (rows x sources) holds each request row's weights over sources and ``B`` (sources x items)
the neighbour graph: ItemKNN passes the user's history as ``A`` and the item neighbour graph as
``B``; UserKNN passes the user's neighbour row (similarities) as ``A`` and the train matrix as ``B``.

Candidates of a row are the items reached through the graph (``A[r, s]`` and ``B[s, j]`` both
stored), minus the row's excluded items (removed from the candidate set, never scored 0 and
returned) and items outside ``allowed`` (a bool mask over items; empty means all). The best k
candidates come first, by score descending, ties broken by the lower item index. When fewer than
k candidates exist and a ``fill_order`` is given (item indices best-first, e.g. by popularity),
the row continues with the first items of that order that are not excluded, allowed and not yet
chosen. Filled items get scores below every neighbourhood score of the row:
``base - 1, base - 2, ...`` in fill order, with ``base = min(0, lowest neighbourhood score)``
(so with non-negative similarities they are -1, -2, ...). Whatever is still missing is padded
with index -1 and score -inf.

Each row is computed alone, in a fixed order, so the output does not depend on the thread count
or on how rows are chunked. Work buffers (a dense accumulator, a candidate list and, unless every
product is positive, a row stamp per item) are allocated once per chunk of rows, not per row.
Memory: O(chunks in flight x n_items + n x k). The graph rows a few history entries ahead are
prefetched, since on large catalogues they usually come from DRAM.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .. import limits, validation
from ..errors import DataError
from ._config import kernel, kernel_pair
from ._csr_checks import allowed_mask, as_vector, check_structure, check_values, exclusion_rows
from ._intrinsics import prefetch
from .topk import heap_pop_sorted, heap_push, heap_replace_worst, run_parallel

_PREFETCH_AHEAD = 3  # history entries ahead whose graph rows are prefetched ...
_PREFETCH_ENTRIES = 128  # ... up to this many of their entries


@kernel
def _prefetch_row(b_indptr, b_indices, b_data, s):
    """Ask for graph row ``s``, up to its first 128 entries (a hint; no effect on results).

    The whole row, not its first line: rows of a top-100 graph span 7 lines of indices and 7 of
    values, mostly from DRAM, and waiting on them was a third of the batch time at size L.
    """
    q = b_indptr[s]
    end = min(b_indptr[s + 1], q + _PREFETCH_ENTRIES)
    while q < end:
        prefetch(b_indices, q)
        prefetch(b_data, q)
        q += 16  # int32 / float32 entries per 64-byte line


@kernel
def _knn_row(r, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, k,
             excl_indptr, excl_indices, fill_order, allowed, labels, positive,
             acc, stamp, touched, heap_s, heap_i, out_i, out_s):
    """Score one request row into ``out_i[r]``/``out_s[r]``.

    Excluded items get score -inf up front; what is added to them stays -inf and they never
    enter the candidate list. Two ways to tell an item's first touch in the row:

    - ``positive`` (every product ``A[r, s] * B[s, j]`` is > 0 and cannot underflow): an item is
      new exactly when its accumulator is 0, and the accumulator is reset to 0 after the row.
      One array per scatter-add instead of two, which is most of the cost on large catalogues.
    - otherwise ``stamp[j] == r`` marks item j as seen in this row (a candidate, excluded, or
      filled), so nothing needs resetting: an item's first touch overwrites its stale value.
    """
    has_excl = excl_indptr.shape[0] > 0
    has_allowed = allowed.shape[0] > 0
    has_labels = labels.shape[0] > 0
    row = np.int32(r)
    e_lo = excl_indptr[r] if has_excl else 0
    e_hi = excl_indptr[r + 1] if has_excl else 0
    for e in range(e_lo, e_hi):
        j = excl_indices[e]
        if not positive:
            stamp[j] = row
        acc[j] = -np.inf

    # accumulate A_r x B; the first-touch test is branch-free: every item is written to the
    # candidate list, which only advances on a first touch
    n_t = 0
    n_a = a_indices.shape[0]
    for p in range(a_indptr[r], a_indptr[r + 1]):
        # the graph row a few entries ahead (this request row's or the next one's) is likely not in cache
        if p + _PREFETCH_AHEAD < n_a:
            _prefetch_row(b_indptr, b_indices, b_data, a_indices[p + _PREFETCH_AHEAD])
        s = a_indices[p]
        w = a_data[p]
        if positive:
            for q in range(b_indptr[s], b_indptr[s + 1]):
                j = np.uint32(b_indices[q])  # unsigned: no negative-index wraparound test per scatter
                old = acc[j]
                touched[n_t] = j
                n_t += old == np.float32(0.0)
                acc[j] = old + w * b_data[q]
        else:
            for q in range(b_indptr[s], b_indptr[s + 1]):
                j = np.uint32(b_indices[q])
                first = stamp[j] != row
                old = acc[j]
                touched[n_t] = j
                n_t += first
                acc[j] = w * b_data[q] + (np.float32(0.0) if first else old)
                stamp[j] = row

    # select the best k with a bounded min-heap (worst at the root), then heapsort it in place;
    # the heap holds labels, so ties are broken by the lower label and the output is in labels.
    # With ``positive`` the accumulator is reset here unless a fill may still need to know the
    # candidates (a mask, or fewer candidates than k); then it is reset after the fill.
    reset_now = positive and not has_allowed and n_t >= k
    row_i = out_i[r]
    row_s = out_s[r]
    size = 0
    for t in range(n_t):
        j = touched[t]
        sc = acc[j]
        if reset_now:
            acc[j] = np.float32(0.0)
        if has_allowed and not allowed[j]:
            continue
        if size < k:
            size = heap_push(heap_s, heap_i, size, k, sc, labels[j] if has_labels else j)
        elif sc >= heap_s[0]:  # most candidates stop here, before their label is read
            heap_replace_worst(heap_s, heap_i, size, sc, labels[j] if has_labels else j)
    heap_pop_sorted(heap_s, heap_i, size, row_i, row_s)

    # fill from the global order when the neighbourhood gave fewer than k
    if size < k and fill_order.shape[0] > 0:
        base = np.float32(0.0)
        if size > 0 and row_s[size - 1] < 0:
            base = row_s[size - 1]
        n_fill = 0
        for p in range(fill_order.shape[0]):
            if size == k:
                break
            j = fill_order[p]
            taken = acc[j] != np.float32(0.0) if positive else stamp[j] == row
            if taken or (has_allowed and not allowed[j]):  # excluded, a candidate, or taken
                continue
            # a repeated entry in fill_order is not taken twice
            if positive:
                acc[j] = -np.inf
                touched[n_t + n_fill] = j  # reset below with the candidates
            else:
                stamp[j] = row
            n_fill += 1
            row_i[size] = labels[j] if has_labels else j
            row_s[size] = base - np.float32(n_fill)
            size += 1
        n_t += n_fill
    if positive:
        if not reset_now:
            for t in range(n_t):
                acc[touched[t]] = np.float32(0.0)
        for e in range(e_lo, e_hi):
            acc[excl_indices[e]] = np.float32(0.0)
    for t in range(size, k):
        row_i[t] = -1
        row_s[t] = -np.inf


@kernel
def _work_buffers(n_items, k, positive):
    acc = np.zeros(n_items, dtype=np.float32)
    stamp = np.full(0 if positive else n_items, -1, dtype=np.int32)
    # the candidate list takes one entry per scatter-add before advancing, so it needs n_items + 1
    touched = np.empty(n_items + 1, dtype=np.int32)
    heap_s = np.empty(k, dtype=np.float32)
    heap_i = np.empty(k, dtype=np.int32)
    return acc, stamp, touched, heap_s, heap_i


@kernel_pair
def _knn_topk(a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_items, k,
              excl_indptr, excl_indices, allowed, fill_order, labels, positive, chunk):
    """``_knn_row`` over every row, in chunks of ``chunk`` rows that own their work buffers."""
    n = a_indptr.shape[0] - 1
    out_i = np.empty((n, k), dtype=np.int32)
    out_s = np.empty((n, k), dtype=np.float32)
    n_chunks = (n + chunk - 1) // chunk
    for c in prange(n_chunks):
        acc, stamp, touched, heap_s, heap_i = _work_buffers(n_items, k, positive)
        for r in range(c * chunk, min(n, (c + 1) * chunk)):
            _knn_row(r, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, k,
                     excl_indptr, excl_indices, fill_order, allowed, labels, positive,
                     acc, stamp, touched, heap_s, heap_i, out_i, out_s)
    return out_i, out_s


# ---------------------------------------------------------------------- public wrapper
def knn_topk(a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_items: int, k: int,
             excl_indptr=None, excl_indices=None, allowed=None, fill_order=None, labels=None,
             parallel: bool | None = None, validate: bool = True, b_min: float | None = None):
    """Top-``k`` items of ``A x B`` per row of ``A``; see the module docstring for the rules.

    ``a_*``: CSR (rows x sources); ``b_*``: CSR (sources x ``n_items``), values finite.
    ``excl_indptr``/``excl_indices``: CSR of items to exclude per row (None: none; order within a
    row does not matter). ``allowed``: bool mask over items (None: all). ``fill_order``: item
    indices best-first used to fill short rows (None: pad with -1 / -inf).
    ``labels``: optional int32 array giving each item index its output index (a permutation):
    callers that relabel items for memory locality (ItemKNN numbers them by popularity, so the
    hot part of the graph and of the accumulator is compact) get results in their own numbering,
    ties broken by the lower label, exactly as if no relabelling had happened. ``excl_*``,
    ``allowed`` and ``fill_order`` are in kernel (relabelled) numbering.
    ``parallel``: None picks the serial kernel for small batches (per-request paths), and for any
    batch launched off the main thread when Numba's threading layer is not safe for concurrent
    launches; the parallel one otherwise (``topk.run_parallel``). The results are identical either way.
    ``validate=False`` skips the O(nnz) checks of ``B``, ``fill_order`` and the exclusions (for
    callers that validated them once, such as the models; a per-request call then costs only
    the row's own work). ``b_min``: a lower bound of ``b_data`` (its minimum, for callers that
    keep it with the graph; None: computed here, O(nnz(B))); when it and every value of
    ``a_data`` are positive and their products cannot underflow, the kernel takes its faster
    path (same results). Bad input raises
    ``DataError`` (a ValueError).

    Returns ``(items int32 (n, k), scores float32 (n, k))``.
    """
    k = validation.integer("k", k, minimum=1)
    n_items = validation.integer("n_items", n_items, minimum=0)
    a_indptr = _as(a_indptr, np.int64, "a_indptr")
    a_indices = _as(a_indices, np.int32, "a_indices")
    a_data = _as(a_data, np.float32, "a_data")
    b_indptr = _as(b_indptr, np.int64, "b_indptr")
    b_indices = _as(b_indices, np.int32, "b_indices")
    b_data = _as(b_data, np.float32, "b_data")
    n_rows = len(a_indptr) - 1
    limits.check_result_size(max(n_rows, 0), k, "knn_topk")
    n_sources = len(b_indptr) - 1
    _check_csr(a_indptr, a_indices, a_data, n_sources, "a")
    if validate:
        _check_csr(b_indptr, b_indices, b_data, n_items, "b")
    elif len(b_indptr) < 1:
        raise DataError("b_indptr must have at least one entry")
    excl_indptr, excl_indices = exclusion_rows(excl_indptr, excl_indices, n_rows, n_items, "knn_topk", validate)
    allowed = allowed_mask(allowed, n_items, "knn_topk")
    if fill_order is None:
        fill_order = np.zeros(0, np.int32)
    else:
        fill_order = _as(fill_order, np.int32, "fill_order")
        if validate and len(fill_order) and (fill_order.min() < 0 or fill_order.max() >= n_items):
            raise DataError(f"fill_order holds item indices outside [0, {n_items})")
    if labels is None:
        labels = np.zeros(0, np.int32)
    else:
        labels = _as(labels, np.int32, "labels")
        if len(labels) != n_items:
            raise DataError(f"labels must hold one label per item ({n_items}), got {len(labels)}")
    parallel = run_parallel(n_rows, parallel)
    args = (a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_items, k,
            excl_indptr, excl_indices, allowed, fill_order, labels,
            _products_positive(a_data, b_data, b_min))
    if not parallel:
        return _knn_topk.serial(*args, max(n_rows, 1))
    import numba

    chunk = max(1, min(256, math.ceil(n_rows / (4 * numba.get_num_threads()))))
    return _knn_topk.parallel(*args, chunk)


def _products_positive(a_data, b_data, b_min) -> bool:
    """Whether every product of an ``a_data`` and a ``b_data`` value is a positive float32."""
    if b_min is None:
        b_min = float(b_data.min()) if len(b_data) else 1.0
    a_min = float(a_data.min()) if len(a_data) else 1.0
    return a_min > 0.0 and b_min > 0.0 and a_min * b_min > 1e-30


def _as(arr, dtype, name: str) -> np.ndarray:
    return as_vector(arr, dtype, name, "knn_topk")


def _check_csr(indptr, indices, data, n_cols: int, name: str) -> None:
    check_structure(indptr, indices, n_cols, f"knn_topk {name}")
    check_values(indptr, indices, data, f"knn_topk {name}")


def similar_rows(indptr, indices, data, rows, k: int):
    """The first ``k`` stored entries of each of ``rows`` of a top-k graph (rows sorted best-first),
    padded with -1 / -inf: the neighbours-of-items (or users) query is a CSR row slice."""
    indptr = _as(indptr, np.int64, "indptr")
    rows = _as(rows, np.int64, "rows")
    indices, data = _as(indices, np.int32, "indices"), _as(data, np.float32, "data")
    n = len(indptr) - 1
    if n < 0 or indptr[-1] != len(indices) or len(data) != len(indices):
        raise DataError(f"indptr ({len(indptr)} entries) must end at the {len(indices)} indices, and data "
                        f"({len(data)}) match them", source="similar_rows")
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        raise DataError(f"rows must be row indices in [0, {n})", source="similar_rows")
    k = validation.integer("k", k, minimum=1)
    limits.check_result_size(len(rows), k, "similar_rows")
    return _similar_rows(indptr, indices, data, rows, k)


@kernel
def _similar_rows(indptr, indices, data, rows, k):
    n = rows.shape[0]
    out_i = np.full((n, k), -1, dtype=np.int32)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    for r in range(n):
        lo = indptr[rows[r]]
        m = min(k, indptr[rows[r] + 1] - lo)
        for t in range(m):
            out_i[r, t] = indices[lo + t]
            out_s[r, t] = data[lo + t]
    return out_i, out_s


@kernel(parallel=True)
def _neighbour_average(targets, others, g_indptr, g_indices, g_data, l_indptr, l_indices, l_data,
                       neighbour_means, target_means):
    n = targets.shape[0]
    pred = np.zeros(n, dtype=np.float64)
    found = np.zeros(n, dtype=np.bool_)
    for p in prange(n):
        a = targets[p]
        b = others[p]
        lo = l_indptr[b]
        hi = l_indptr[b + 1]
        num = 0.0
        den = 0.0
        for q in range(g_indptr[a], g_indptr[a + 1]):
            nb = g_indices[q]
            pos = lo + np.searchsorted(l_indices[lo:hi], nb)
            if pos < hi and l_indices[pos] == nb:
                s = np.float64(g_data[q])
                num += s * (np.float64(l_data[pos]) - neighbour_means[nb])
                den += abs(s)
        if den > 0.0:
            pred[p] = target_means[a] + num / den
            found[p] = True
    return pred, found


def neighbour_average(targets, others, g_indptr, g_indices, g_data, l_indptr, l_indices, l_data,
                      neighbour_means, target_means):
    """Mean-centred weighted neighbour average for (target, other) pairs.

    For pair p with a = ``targets[p]``, b = ``others[p]``: over the neighbours n of a in the graph
    (``g_*``, row a) with a stored value ``L[b, n]`` (``l_*``, CSR with sorted indices),
    ``target_means[a] + sum s(a, n) (L[b, n] - neighbour_means[n]) / sum |s(a, n)|``.
    ItemKNN: a = item, b = user, L = user x item ratings; UserKNN: a = user, b = item,
    L = item x user ratings. Returns ``(prediction float64, found bool)``; ``found`` is False
    (and the prediction 0) where no neighbour had a value.
    """
    targets, others = _as(targets, np.int64, "targets"), _as(others, np.int64, "others")
    g_indptr, g_indices, g_data = (_as(g_indptr, np.int64, "g_indptr"), _as(g_indices, np.int32, "g_indices"),
                                   _as(g_data, np.float32, "g_data"))
    l_indptr, l_indices, l_data = (_as(l_indptr, np.int64, "l_indptr"), _as(l_indices, np.int32, "l_indices"),
                                   _as(l_data, np.float32, "l_data"))
    neighbour_means = _as(neighbour_means, np.float64, "neighbour_means")
    target_means = _as(target_means, np.float64, "target_means")
    if len(targets) != len(others):
        raise DataError(f"targets and others must have one length, got {len(targets)} and {len(others)}",
                        source="neighbour_average")
    for ptr, idx, val, name in ((g_indptr, g_indices, g_data, "g"), (l_indptr, l_indices, l_data, "l")):
        if len(ptr) < 1 or ptr[-1] != len(idx) or len(val) != len(idx):
            raise DataError(f"{name}_indptr must end at the {len(idx)} {name}_indices, and {name}_data "
                            f"({len(val)}) match them", source="neighbour_average")
    for ids, ptr, name in ((targets, g_indptr, "targets"), (others, l_indptr, "others")):
        if len(ids) and (ids.min() < 0 or ids.max() >= len(ptr) - 1):
            raise DataError(f"{name} must be row indices in [0, {len(ptr) - 1})", source="neighbour_average")
    if len(target_means) != len(g_indptr) - 1 or len(neighbour_means) != len(g_indptr) - 1:
        raise DataError(f"target_means and neighbour_means must hold one mean per row of the (square) graph "
                        f"({len(g_indptr) - 1})", source="neighbour_average")
    return _neighbour_average(targets, others, g_indptr, g_indices, g_data, l_indptr, l_indices, l_data,
                              neighbour_means, target_means)
