"""The neighbour-graph build on a dask.distributed cluster (extra ``dist``).

``topk_similarity_on_cluster`` splits the rows of the similarity matrix into contiguous blocks,
one task each: every worker receives the compared matrix once (broadcast), computes the top-k
rows of its block with ``kernels.similarity.topk_similarity(query_rows=...)``, the very code the
local build runs for those rows, and sends back only its block. The blocks are stitched in row
order, so the graph is identical to the local build, bit for bit.
"""

from __future__ import annotations

import numpy as np


def topk_similarity_on_cluster(client, indptr, indices, data, n_cols: int, k: int, n_blocks: int | None = None,
                               **options):
    """``topk_similarity(indptr, indices, data, n_cols, k, **options)`` computed on ``client``'s
    workers in ``n_blocks`` row blocks (default: 4 per worker). Returns ``(indptr, indices, data)``."""
    n_rows = len(indptr) - 1
    if n_blocks is None:
        n_blocks = 4 * max(1, len(client.scheduler_info().get("workers", {})))
    n_blocks = max(1, min(int(n_blocks), n_rows))
    bounds = np.linspace(0, n_rows, n_blocks + 1).astype(np.int64)
    matrix = client.scatter((np.asarray(indptr), np.asarray(indices), np.asarray(data)), broadcast=True)
    futures = [client.submit(_block, matrix, int(n_cols), int(k), int(a), int(b), options, pure=False)
               for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    blocks = client.gather(futures)
    lens = np.concatenate([lens for lens, _, _ in blocks]) if blocks else np.zeros(0, np.int64)
    out_indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(lens, out=out_indptr[1:])
    out_indices = np.concatenate([i for _, i, _ in blocks]).astype(np.int32, copy=False)
    out_data = np.concatenate([d for _, _, d in blocks]).astype(np.float32, copy=False)
    return out_indptr, out_indices, out_data


def _block(matrix, n_cols, k, start, stop, options):
    """On a worker: rows ``start:stop`` of the graph as (row lengths, indices, data)."""
    from distributed import get_worker

    from .. import threads
    from ..kernels.similarity import topk_similarity

    indptr, indices, data = matrix
    # as many kernel threads as the worker has task threads (Numba's default is every core, in
    # every worker process); per calling thread, so concurrent tasks do not disturb each other
    with threads.limit(get_worker().state.nthreads, process_wide=False):
        g_indptr, g_indices, g_data = topk_similarity(indptr, indices, data, n_cols, k,
                                                      query_rows=np.arange(start, stop), **options)
    lo, hi = g_indptr[start], g_indptr[stop]
    return np.diff(g_indptr[start:stop + 1]), g_indices[lo:hi].copy(), g_data[lo:hi].copy()
