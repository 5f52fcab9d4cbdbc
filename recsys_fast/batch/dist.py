"""``batch.score(..., client=...)`` on a dask.distributed cluster (extra ``dist``).

One task per chunk of users. A worker loads the bundle once (the first task it runs; later ones
reuse it, checked against the job's fingerprint), scores its chunk through the index-level
protocol and writes the chunk as its own Parquet file into the job's ``.part`` directory, which
becomes the output dataset directory when every chunk is there. Chunks already written by an
interrupted run of the same job are not submitted again.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .chunks import chunk_name, chunk_table, open_model, progress_bar

_loaded: dict = {}  # on a worker: (bundle path, fingerprint) -> model, loaded once per process
_lock = threading.Lock()


def score_on_cluster(client, path: str, fingerprint: str, chunks, done: set[int], part: Path, k: int,
                     exclude_seen: bool, progress: bool) -> int:
    """Score the chunks not in ``done`` on ``client``'s workers; return the rows of the dataset."""
    try:
        from distributed import as_completed
    except ImportError:
        from ..errors import MissingExtraError

        raise MissingExtraError("distributed", "dist") from None
    todo = [c for c in range(len(chunks)) if c not in done]
    futures = {client.submit(_score_chunk, path, fingerprint, c, chunks[c], k, exclude_seen, str(part),
                             pure=False): c for c in todo}
    with progress_bar(sum(len(c) for c in chunks), sum(len(chunks[c]) for c in done), progress) as bar:
        for future in as_completed(futures):
            future.result()  # a failed chunk raises here, with the worker's traceback
            bar.update(len(chunks[futures[future]]))
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(part / chunk_name(c, ".parquet")).metadata.num_rows for c in range(len(chunks)))


def _model(path: str, fingerprint: str):
    key = (path, fingerprint)
    with _lock:
        model = _loaded.get(key)
        if model is None:
            from ..errors import BundleError

            from distributed import get_worker

            # as many kernel threads as the worker has task threads: Numba's default (every core)
            # in each of several worker processes would oversubscribe the machine
            model, found = open_model(path, n_threads=get_worker().state.nthreads)
            if found != fingerprint:
                raise BundleError(f"{path} on this worker is not the bundle the job was started with "
                                  "(its manifest differs): every worker must read the same bundle")
            _loaded.clear()  # one bundle per worker process at a time
            _loaded[key] = model
        return model


def _score_chunk(path, fingerprint, c, uidx, k, exclude_seen, part):
    """On a worker: one chunk's rows as ``part/chunk-<c>.parquet`` (written aside, renamed)."""
    import pyarrow.parquet as pq

    table = chunk_table(_model(path, fingerprint), uidx, k, exclude_seen)
    target = Path(part) / chunk_name(c, ".parquet")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    pq.write_table(table, str(tmp), row_group_size=max(1, len(table)), compression="snappy")
    os.replace(tmp, target)
    return len(table)
