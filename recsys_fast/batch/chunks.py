"""The per-chunk work that local and cluster scoring share: open the model, map the users, one
chunk's rows as an Arrow table, chunk file names, the progress bar."""

from __future__ import annotations

import os

import numpy as np

from ..errors import ParameterError


def open_model(source, n_threads: int | None = None):
    """``(model, fingerprint)``: a path is loaded with ``serving.load`` (``n_threads``: its per-call
    thread limit); a model or runtime is used as it is (anything with the index-level protocol and
    a ``fingerprint()``)."""
    if isinstance(source, (str, os.PathLike)):
        from .. import serving

        model = serving.load(source, n_threads=n_threads)
    else:
        model = source
    for attr in ("recommend_indices", "user_map_", "item_map_", "fingerprint"):
        if not hasattr(model, attr):
            raise ParameterError("model_or_bundle", type(source).__name__,
                                 "a fitted recsys_fast model, a runtime from serving.load, or a bundle path")
    if hasattr(model, "check_fitted"):
        model.check_fitted()
    return model, model.fingerprint()


def user_indices(model, users) -> np.ndarray:
    """Internal indices (int64) of the external ``users``; None: all training users in index order."""
    if users is None:
        return np.arange(len(model.user_map_), dtype=np.int64)
    return model.user_map_.to_index(np.atleast_1d(np.asarray(users)), on_unknown="raise").astype(np.int64)


def chunk_table(model, uidx: np.ndarray, k: int, exclude_seen: bool):
    """One chunk's rows as a ``pyarrow.Table`` (user, rank, item, score), padding left out."""
    pa = pyarrow_module()
    items, scores = model.recommend_indices(uidx, k, exclude="seen" if exclude_seen else None)
    valid = items >= 0
    n = len(uidx)
    user_col = np.repeat(model.user_map_.ids[uidx], k).reshape(n, k)[valid] if n else model.user_map_.ids[:0]
    rank = np.broadcast_to(np.arange(1, k + 1, dtype=np.int32), (n, k))[valid]
    item_col = model.item_map_.ids[items[valid]]
    return pa.table({"user": pa.array(user_col), "rank": pa.array(rank, type=pa.int32()),
                     "item": pa.array(item_col), "score": pa.array(scores[valid], type=pa.float32())})


def chunk_name(c: int, suffix: str) -> str:
    return f"chunk-{c:06d}{suffix}"


def progress_bar(total: int, initial: int, enabled: bool):
    """Progress through ``recsys_fast.progress`` (a bar on a terminal, log lines otherwise);
    ``initial``: users already scored (a resumed run)."""
    from ..progress import progress

    bar = progress(total, "batch", "users", enabled=None if enabled else False)
    if initial:
        bar.update(initial)
    return bar


def pyarrow_module():
    try:
        import pyarrow as pa
        import pyarrow.ipc  # noqa: F401
    except ImportError:  # pragma: no cover - a core dependency
        from ..errors import MissingExtraError

        raise MissingExtraError("pyarrow", "core") from None
    return pa
