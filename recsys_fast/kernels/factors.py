"""Top-k of dot-product scores ``U @ V.T (+ bias)`` without an n_users x n_items matrix.

Users are scored in tiles of rows inside one parallel Numba region: each thread takes a tile and
walks the catalogue in item blocks. For each block it computes the tile's scores with a
single-threaded BLAS sgemm (``_blas.gemm_into``, into the thread's own reused buffer of
``TILE_ROWS x ITEM_BLOCK`` floats, about 1 MiB) and offers them to each row's heap while they are
still in cache. (Whole-row tiles of 32 MiB went to memory between the sgemm and the selection:
the selection then cost as much as the product.) One parallel region for the whole batch (a
worker per thread, tiles dealt round-robin) keeps both cores busy even when other processes take
turns on them. The selection does little work per item: the row's excluded items in the block
are set to -inf first, the first k qualifying items fill a bounded heap, and every later item is
compared with the heap's worst score 64 at a time (a vectorised count), touching the heap only
when that run holds a better one. Items arrive in index order across blocks, so the heap keeps
the same ties as one scan of the row.

Results follow ``kernels.topk``: ``(items int32 (n, k), scores float32 (n, k))``, score
descending, ties to the lower item index, padded with -1 / -inf when fewer than k items qualify.
An item qualifies when its score is a number above -inf, it is not excluded for the row and is
``allowed``. The output does not depend on the tile, the item block or the thread count.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from .. import limits, threads, validation
from ..errors import DataError
from ._blas import gemm_into
from ._config import kernel
from ._csr_checks import allowed_mask, exclusion_rows
from .topk import _sift_down, heap_push, heap_sorted_into, run_parallel

LANES = 64  # items compared at once against the heap's worst score
TILE_ROWS = 256  # users per tile of a parallel batch
ITEM_BLOCK = 1024  # items per sgemm of a tile: 256 x 1024 scores (1 MiB) are selected from cache


@kernel
def _scan_into_heap(row, offset, k, heap_s, heap_i, size):
    """Offer the scores of ``row`` (items ``offset ..``, excluded ones already -inf) to a heap
    holding ``size`` entries; returns its new size. Items must come in increasing index order
    across calls: a later item loses ties, so scanning a row in pieces gives what one scan gives."""
    m = row.shape[0]
    j = 0
    neg_inf = -np.inf
    while size < k and j < m:  # the first k qualifying items
        s = row[j]
        if s > neg_inf:  # False for NaN and -inf
            size = heap_push(heap_s, heap_i, size, k, s, offset + j)
        j += 1
    if size == k:
        worst = heap_s[0]
        while j + LANES <= m:
            # Indexing a slice by its own range lets the compiler drop the negative-index check
            # that row[j + q] needs (j is not provably >= 0 here), and the count vectorises: 3.5x.
            run = row[j:j + LANES]
            better = 0
            for q in range(LANES):
                better += run[q] > worst
            if better > 0:  # rare once the heap holds good items
                for q in range(LANES):
                    s = run[q]
                    if s > worst:
                        heap_s[0] = s
                        heap_i[0] = offset + j + q
                        _sift_down(heap_s, heap_i, k, 0)
                        worst = heap_s[0]
            j += LANES
        while j < m:
            s = row[j]
            if s > worst:
                heap_s[0] = s
                heap_i[0] = offset + j
                _sift_down(heap_s, heap_i, k, 0)
                worst = heap_s[0]
            j += 1
    return size


@kernel
def _row_topk(row, k, heap_s, heap_i, out_i, out_s):
    """Top-k of one score row (excluded items already -inf) into ``out_i``/``out_s``."""
    size = _scan_into_heap(row, 0, k, heap_s, heap_i, 0)
    heap_sorted_into(heap_s, heap_i, size, out_i, out_s)


@kernel
def _select_rows(block, row0, k, excl_indptr, excl_indices, disallowed, heap_s, heap_i, out_i, out_s):
    """Top-k of the rows of a score ``block`` (output rows ``row0 ..``); overwrites the block's
    excluded and disallowed items with -inf."""
    has_excl = excl_indptr.shape[0] > 0
    for r in range(block.shape[0]):
        g = row0 + r
        row = block[r]
        if has_excl:
            for e in range(excl_indptr[g], excl_indptr[g + 1]):
                row[excl_indices[e]] = -np.inf
        for d in range(disallowed.shape[0]):
            row[disallowed[d]] = -np.inf
        _row_topk(row, k, heap_s, heap_i, out_i[g], out_s[g])


@kernel(parallel=True)
def _factor_topk_parallel(users, items_t, bias, k, excl_indptr, excl_indices, disallowed, tile, item_block,
                          n_buffers, out_i, out_s):
    n = users.shape[0]
    m = items_t.shape[1]
    n_tiles = (n + tile - 1) // tile
    width = min(item_block, m)
    buffers = np.empty((n_buffers, tile, width), dtype=np.float32)
    heaps_s = np.empty((n_buffers, tile, k), dtype=np.float32)
    heaps_i = np.empty((n_buffers, tile, k), dtype=np.int32)
    sizes = np.zeros((n_buffers, tile), dtype=np.int64)
    has_bias = bias.shape[0] > 0
    has_excl = excl_indptr.shape[0] > 0
    neg_inf = -np.inf
    for w in prange(n_buffers):  # one worker per thread, tiles dealt round-robin
        for t in range(w, n_tiles, n_buffers):
            start = t * tile
            stop = min(n, start + tile)
            rows = stop - start
            for r in range(rows):
                sizes[w, r] = 0
            d_lo = 0  # disallowed is sorted: the part of it inside the current item block
            for j0 in range(0, m, width):  # item blocks: the scores stay in cache for the selection
                j1 = min(m, j0 + width)
                block = buffers[w, :rows, :j1 - j0]
                gemm_into(users[start:stop], items_t[:, j0:j1], block)
                d_hi = d_lo
                while d_hi < disallowed.shape[0] and disallowed[d_hi] < j1:
                    d_hi += 1
                for r in range(rows):
                    row = buffers[w, r, :j1 - j0]  # C-contiguous, so the scan vectorises (block[r] is not)
                    if has_bias:
                        for q in range(j1 - j0):
                            row[q] += bias[j0 + q]
                    if has_excl:
                        for e in range(excl_indptr[start + r], excl_indptr[start + r + 1]):
                            item = excl_indices[e]
                            if j0 <= item < j1:
                                row[item - j0] = neg_inf
                    for d in range(d_lo, d_hi):
                        row[disallowed[d] - j0] = neg_inf
                    sizes[w, r] = _scan_into_heap(row, j0, k, heaps_s[w, r], heaps_i[w, r], sizes[w, r])
                d_lo = d_hi
            for r in range(rows):
                heap_sorted_into(heaps_s[w, r], heaps_i[w, r], sizes[w, r], out_i[start + r], out_s[start + r])


@kernel
def _factor_topk_serial(block, row0, k, excl_indptr, excl_indices, disallowed, out_i, out_s):
    heap_s = np.empty(k, dtype=np.float32)
    heap_i = np.empty(k, dtype=np.int32)
    _select_rows(block, row0, k, excl_indptr, excl_indices, disallowed, heap_s, heap_i, out_i, out_s)


def factor_topk(user_vectors, item_vectors, k: int, item_bias=None, excl_indptr=None, excl_indices=None,
                allowed=None, tile_rows: int | None = None, item_block: int | None = None, validate: bool = True):
    """Top-``k`` items of ``user_vectors @ item_vectors.T (+ item_bias)`` for every user row.

    ``user_vectors`` (n, d) and ``item_vectors`` (m, d): float32 (coerced once here, C order);
    ``item_bias``: (m,) or None. ``excl_indptr``/``excl_indices``: CSR (n rows) of items to exclude
    per row (None: none). ``allowed``: bool mask over the m items (None: all). ``tile_rows``:
    users per sgemm tile (None: ``TILE_ROWS``); ``item_block``: items per sgemm of a tile (None:
    ``ITEM_BLOCK``), so that a tile's scores are selected while still in cache. ``validate=False`` skips the O(nnz) check
    of the exclusion indices (callers that built them from a checked matrix).
    Memory: one tile of scores per thread plus the (n, k) output. Bad input raises ``DataError``.
    """
    k = validation.integer("k", k, minimum=1)
    users = _matrix(user_vectors, "user_vectors")
    items = _matrix(item_vectors, "item_vectors")
    if users.shape[1] != items.shape[1]:
        raise DataError(f"user_vectors have {users.shape[1]} dimensions, item_vectors {items.shape[1]}")
    n, m = users.shape[0], items.shape[0]
    limits.check_result_size(n, k, "factor_topk")
    bias = None
    if item_bias is not None:
        bias = np.ascontiguousarray(item_bias, dtype=np.float32)
        if bias.shape != (m,):
            raise DataError(f"item_bias must have shape ({m},), got {bias.shape}")
    excl_indptr, excl_indices = exclusion_rows(excl_indptr, excl_indices, n, m, "factor_topk", validate)
    allowed = allowed_mask(allowed, m, "factor_topk")
    disallowed = np.flatnonzero(~allowed) if allowed.shape[0] else np.zeros(0, np.int64)
    tile_rows = validation.integer("tile_rows", TILE_ROWS if tile_rows is None else tile_rows, minimum=1)
    item_block = validation.integer("item_block", ITEM_BLOCK if item_block is None else item_block, minimum=1)
    out_i = np.empty((n, k), dtype=np.int32)
    out_s = np.empty((n, k), dtype=np.float32)
    if n == 0:
        return out_i, out_s
    if m == 0:
        out_i[:] = -1
        out_s[:] = -np.inf
        return out_i, out_s
    if not run_parallel(n, None):
        for start in range(0, n, tile_rows):  # a request, or a thread that may not launch in parallel
            block = users[start:start + tile_rows] @ items.T
            if bias is not None:
                block += bias
            _factor_topk_serial(block, start, k, excl_indptr, excl_indices, disallowed, out_i, out_s)
        return out_i, out_s
    items_t = np.ascontiguousarray(items.T)
    bias_arr = bias if bias is not None else np.zeros(0, np.float32)
    n_buffers = numba.get_num_threads()
    tile_rows = min(tile_rows, n)
    with threads.blas_limit(1):  # each Numba thread runs its own sgemm
        _factor_topk_parallel(users, items_t, bias_arr, k, excl_indptr, excl_indices, disallowed, tile_rows,
                              item_block, n_buffers, out_i, out_s)
    return out_i, out_s


def _matrix(arr, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise DataError(f"{name} must be a 2-d array (rows x dimensions), got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{name} must be numeric, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)
