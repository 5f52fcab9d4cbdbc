"""Runtimes: one object per loaded bundle with the model's recommend contract, no torch.

- ``OnnxRuntime``: an exported neural bundle (``recsys_fast.export.to_onnx``) through onnxruntime.
  It is a ``Recommender`` whose row scoring is one session run, so the external-id API, the
  ``history=`` fold-in, ``on_unknown`` and the index-level protocol (``recommend_indices``) are
  the same code as the trained model's.
- ``ModelRuntime``: a bundle saved with ``model.save`` by a model that needs no torch
  (Popularity, ItemKNN, UserKNN, ContentKNN, EASE, ALS), served by the model itself (Numba kernels).

Both are immutable after loading and safe to call from many threads at once (an onnxruntime
session's ``run`` is thread-safe; the models keep no per-request state).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .. import bundle
from ..data.idmap import IdMap
from ..errors import BundleError, MissingExtraError, ParameterError
from ..models.base import Recommendations, Recommender, RowBatch, _query_ids
from ..models.neural.samplers import batch_sequences, pad_sequences

GATHER_BUDGET_BYTES = 256 << 20  # the history graph's gathered rows per session run

PRECOMPUTED_SEQUENCE_ENTRIES = 32_000_000  # users x max_len int64 entries built at load (256 MB)


class OnnxRuntime(Recommender):
    """A neural model exported to ONNX, served by onnxruntime. Load with ``recsys_fast.serving.load``."""

    kind = "onnx"

    def __init__(self):  # built by from_bundle; no parameters of its own
        pass

    @classmethod
    def from_bundle(cls, path, manifest: dict, n_threads: int | None = None, providers=None) -> "OnnxRuntime":
        meta = manifest.get("meta", {})
        family = meta.get("input_family")
        if family not in ("users", "rows", "history", "sequence", "sequence_users"):
            raise BundleError(f"{path}: ONNX bundle has an unknown input family {family!r}")
        rt = cls()
        get = lambda name: bundle.load_array(path, name, manifest)  # noqa: E731
        rt.user_map_ = IdMap(get("user_ids"), "user")
        rt.item_map_ = IdMap(get("item_ids"), "item")
        rt.seen_ = sp.csr_matrix((get("seen_data"), get("seen_indices"), get("seen_indptr")),
                                 shape=(len(rt.user_map_), len(rt.item_map_)))
        rt.family_ = family
        rt.supports_history = bool(meta.get("supports_history", False))
        rt.chunk_rows_ = int(meta.get("chunk_rows", 1024))
        if family.startswith("sequence"):
            rt.seq_indptr_, rt.seq_items_ = get("seq_indptr").astype(np.int64), get("seq_items").astype(np.int64)
            rt.max_len_ = int(meta["max_len"])
            # every fitted user's padded input sequence, built once (a request then takes a row);
            # skipped when it would be large, and requests build theirs
            n_seq = len(rt.seq_indptr_) - 1
            rt.seq_padded_ = (pad_sequences(rt.seq_indptr_, rt.seq_items_, np.arange(n_seq), rt.max_len_)
                              if n_seq * rt.max_len_ <= PRECOMPUTED_SEQUENCE_ENTRIES else None)
        rt.session_ = _session(_model_bytes(path, manifest), n_threads, providers)
        rt.seen_indices64_ = rt.seen_.indices.astype(np.int64)  # a request's exclusions: a slice, no copy
        rt.k_feeds_ = {}  # k -> its int64 [k] input, built once per k
        rt.fingerprint_ = bundle.manifest_digest(manifest)
        rt.path_ = str(Path(path))
        rt.n_threads_ = n_threads
        rt.metadata_ = {"path": rt.path_, "kind": manifest["kind"], "model_kind": meta.get("model_kind"),
                        "params": manifest.get("params", {}), "n_users": len(rt.user_map_),
                        "n_items": len(rt.item_map_), "supports_history": rt.supports_history,
                        "similar_items": False, "providers": rt.session_.get_providers(), "n_threads": n_threads,
                        **{key: meta[key] for key in ("opset", "exporter", "versions", "quantization") if key in meta}}
        return rt

    @property
    def metadata(self) -> dict:
        """What was loaded: path, kinds, parameters, sizes, providers, opset and versions."""
        return dict(self.metadata_)

    def fingerprint(self) -> str:
        """Digest of the loaded bundle's manifest (which holds the sha256 of each of its files)."""
        return self.fingerprint_

    def _fit(self, train):
        raise TypeError("a serving runtime is not trained: fit the model, export it, load the export")

    def similar_items(self, items, k: int = 10):
        raise TypeError(f"the exported {self.metadata_['model_kind']} graph has no item-item scores; "
                        "similar_items is served for ItemKNN/UserKNN bundles")

    def recommend(self, users, k: int = 10, exclude_seen: bool = True, items=None, history=None,
                  on_unknown: str = "raise", on_unknown_items: str = "raise", progress=None) -> Recommendations:
        """``Recommender.recommend``; a request for one training user with the defaults (seen
        items excluded, no ``items`` filter, no ``history``) takes a shorter path to the same
        answer: the user's index by one binary search, the graph's inputs as views of arrays
        built at load, one session run."""
        if (items is None and history is None and progress is None and exclude_seen is True
                and on_unknown_items == "raise" and type(on_unknown) is str and on_unknown in ("raise", "pad")
                and self.family_ != "rows"):
            fast = self._recommend_one(users, k, on_unknown)
            if fast is not None:
                return fast
        return super().recommend(users, k=k, exclude_seen=exclude_seen, items=items, history=history,
                                 on_unknown=on_unknown, on_unknown_items=on_unknown_items, progress=progress)

    def _recommend_one(self, users, k, on_unknown: str):
        """The answer for one known user of an integer id map, or None (the general path answers)."""
        query = _query_ids("users", users)
        if len(query) != 1 or query.dtype.kind != "i" or self.user_map_.is_string:
            return None
        ids = self.user_map_.ids
        user = query[0]
        pos = int(ids.searchsorted(user))
        if pos >= len(ids) or ids[pos] != user:
            return None  # unknown: raised or padded by the general path
        k = self._clamped_k(k, 1)
        feeds = self._one_input(pos)
        if feeds is None:
            return None
        kk = self.k_feeds_.get(k)
        if kk is None:
            kk = self.k_feeds_.setdefault(k, np.array([k], dtype=np.int64))
        lo, hi = self.seen_.indptr[pos], self.seen_.indptr[pos + 1]
        feeds["exclude"] = self.seen_indices64_[lo:hi].reshape(1, -1) if hi > lo else _NO_EXCLUSION
        feeds["k"] = kk
        top_i, top_s = self.session_.run(("items", "scores"), feeds)
        scores = top_s.astype(np.float32, copy=False)
        bad = ~(scores > -np.inf)  # excluded, disallowed or NaN: padding
        if bad.any():
            scores = scores.copy()
            scores[bad] = -np.inf
            top_i = np.where(bad, -1, top_i)
            out = self.item_map_.to_external(top_i)
        else:
            out = self.item_map_.ids[top_i]
        return Recommendations(query, out, scores)

    def _one_input(self, pos: int):
        """The model inputs of training user ``pos`` alone (None: the general path builds them)."""
        family = self.family_
        if family.startswith("sequence"):
            if self.seq_padded_ is None:
                return None
            feeds = {"sequence": self.seq_padded_[pos:pos + 1]}
            if family == "sequence_users":
                feeds["users"] = np.array([pos], dtype=np.int64)
            return feeds
        if family == "users":
            return {"users": np.array([pos], dtype=np.int64)}
        if family == "history":
            lo, hi = self.seen_.indptr[pos], self.seen_.indptr[pos + 1]
            row = self.seen_indices64_[lo:hi].reshape(1, -1) if hi > lo else np.full((1, 1), self.n_items, np.int64)
            return {"history": row}
        return None

    def _recommend_rows(self, batch: RowBatch, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(batch.user_index)
        k_eff = min(k, self.n_items)
        items = np.empty((n, k), dtype=np.int32)
        scores = np.empty((n, k), dtype=np.float32)
        kk = np.array([k_eff], dtype=np.int64)
        for start, stop in self._chunks(batch):
            sub = batch if (start == 0 and stop == n) else batch.rows(start, stop)
            feeds = self._model_inputs(sub)
            feeds["exclude"] = _padded_exclusions(stop - start, sub.excl_indptr, sub.excl_indices, sub.allowed)
            feeds["k"] = kk
            top_i, top_s = self.session_.run(("items", "scores"), feeds)
            items[start:stop, :k_eff] = top_i
            scores[start:stop, :k_eff] = top_s
        if k_eff < k:
            items[:, k_eff:] = -1
            scores[:, k_eff:] = -np.inf
        items[~(scores > -np.inf)] = -1  # excluded, disallowed or NaN: padding
        scores[items < 0] = -np.inf
        return items, scores

    def _chunks(self, batch: RowBatch) -> list[tuple[int, int]]:
        """Row ranges of one session run each: at most ``chunk_rows_`` users, and for the history
        graph (EASE) at most ``GATHER_BUDGET_BYTES`` of gathered weight rows, which the graph holds
        as [users, longest history, n_items] floats (one user always fits alone)."""
        n = len(batch.user_index)
        if self.family_ != "history":
            return [(s, min(n, s + self.chunk_rows_)) for s in range(0, n, self.chunk_rows_)]
        per_item = 4 * max(1, self.n_items)
        lengths = np.maximum(np.diff(batch.hist_indptr), 1)
        bounds, start, longest = [], 0, 0
        for row, length in enumerate(lengths.tolist()):
            longest_with = max(longest, length)
            if row > start and ((row + 1 - start) * longest_with * per_item > GATHER_BUDGET_BYTES
                                or row - start >= self.chunk_rows_):
                bounds.append((start, row))
                start, longest_with = row, length
            longest = longest_with
        if n:
            bounds.append((start, n))
        return bounds

    def graph_inputs(self, user_index, k: int = 10) -> dict[str, np.ndarray]:
        """The feeds one session run gets for these training users (internal indices), seen items
        excluded: what a request sends to the graph. Used to calibrate a static int8 graph."""
        user_index = np.asarray(user_index, dtype=np.int64).reshape(-1)
        batch = self.batch_for_users(user_index, self.seen_)
        feeds = self._model_inputs(batch)
        feeds["exclude"] = _padded_exclusions(len(user_index), batch.excl_indptr, batch.excl_indices, batch.allowed)
        feeds["k"] = np.array([min(int(k), self.n_items)], dtype=np.int64)
        return feeds

    def _model_inputs(self, batch: RowBatch) -> dict[str, np.ndarray]:
        users = batch.user_index
        family = self.family_
        if family == "users":
            return {"users": np.maximum(users, 0).astype(np.int64)}
        if family.startswith("sequence"):
            if self.seq_padded_ is not None and len(users) and users.min() >= 0:
                sequence = self.seq_padded_[users]
            else:
                sequence = batch_sequences(self.seq_indptr_, self.seq_items_, users, batch.hist_indptr,
                                           batch.hist_indices, self.max_len_)
            feeds = {"sequence": sequence}
            if family == "sequence_users":
                feeds["users"] = np.where(users >= 0, users, self.n_users).astype(np.int64)
            return feeds
        indptr, indices = batch.hist_indptr, batch.hist_indices
        if (users < 0).any():  # a given history may repeat items: rows are binary
            m = sp.csr_matrix((np.ones(len(indices), np.float32), indices.copy(), indptr.copy()),
                              shape=(len(users), self.n_items))
            m.sum_duplicates()
            indptr, indices = m.indptr, m.indices
        if family == "rows":
            rows = np.zeros((len(users), self.n_items), dtype=np.float32)
            rows[np.repeat(np.arange(len(users)), np.diff(indptr)), indices] = 1.0
            return {"rows": rows}
        return {"history": _padded(len(users), indptr, indices, pad=self.n_items)}


class ModelRuntime:
    """A torch-free saved model (Popularity, ItemKNN, UserKNN, ContentKNN, EASE, ALS) served as it is."""

    def __init__(self, model: Recommender, manifest: dict, path, n_threads: int | None = None):
        self.model = model
        self.n_threads_ = n_threads
        self.fingerprint_ = bundle.manifest_digest(manifest)
        self.supports_history = model.supports_history
        self.metadata_ = {"path": str(Path(path)), "kind": manifest["kind"], "model_kind": manifest["kind"],
                          "params": manifest.get("params", {}), "n_users": model.n_users, "n_items": model.n_items,
                          "supports_history": model.supports_history,
                          "similar_items": hasattr(model, "similar_items"), "providers": ["numba"],
                          "n_threads": n_threads}

    @property
    def metadata(self) -> dict:
        return dict(self.metadata_)

    def fingerprint(self) -> str:
        """Digest of the loaded bundle's manifest (which holds the sha256 of each of its files)."""
        return self.fingerprint_

    # the index-level protocol, and the model's attributes it rests on
    @property
    def user_map_(self):
        return self.model.user_map_

    @property
    def item_map_(self):
        return self.model.item_map_

    @property
    def seen_(self):
        return self.model.seen_

    @property
    def n_users(self) -> int:
        return self.model.n_users

    @property
    def n_items(self) -> int:
        return self.model.n_items

    def recommend_indices(self, user_index, k: int, exclude=None, allowed=None):
        with _limited(self.n_threads_):
            return self.model.recommend_indices(user_index, k, exclude=exclude, allowed=allowed)

    def recommend(self, users, k: int = 10, exclude_seen: bool = True, items=None, history=None,
                  on_unknown: str = "raise", on_unknown_items: str = "raise"):
        with _limited(self.n_threads_):
            return self.model.recommend(users, k=k, exclude_seen=exclude_seen, items=items, history=history,
                                        on_unknown=on_unknown, on_unknown_items=on_unknown_items)

    def similar_items(self, items, k: int = 10):
        if not hasattr(self.model, "similar_items"):
            raise TypeError(f"{type(self.model).__name__} has no item-item scores; similar_items is served for "
                            "ItemKNN/UserKNN bundles")
        return self.model.similar_items(items, k=k)

    def prepare(self) -> "ModelRuntime":
        self.model.prepare()
        return self


def _limited(n_threads):
    """Per call, from any number of request threads: Numba's count only (per calling thread).
    torch and BLAS pools are process-wide, and setting them from concurrent threads races (and
    OpenBLAS must not be resized while another thread computes): size them once around the
    service, as ``recsys-fast serve --threads`` does."""
    from .. import threads

    return threads.limit(n_threads, process_wide=False)


def _session(model_bytes: bytes, n_threads: int | None, providers):
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingExtraError("onnxruntime", "serve") from None
    options = _session_options(ort, n_threads)
    providers = list(providers) if providers else ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise ParameterError("providers", missing, f"providers of this onnxruntime build ({', '.join(available)})",
                             hint="CUDAExecutionProvider needs the onnxruntime-gpu package and a CUDA device")
    return ort.InferenceSession(model_bytes, sess_options=options, providers=providers)


def _session_options(ort, n_threads: int | None):
    from .. import threads

    if hasattr(threads, "onnxruntime_session_options"):
        return threads.onnxruntime_session_options(n_threads)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if n_threads is not None:
        options.intra_op_num_threads = int(n_threads)
    return options


_NO_EXCLUSION = np.full((1, 1), -1, dtype=np.int64)  # the exclude input of a user with no seen items


def _padded(n: int, indptr: np.ndarray, indices: np.ndarray, pad: int, extra: np.ndarray | None = None) -> np.ndarray:
    """(n, width) int64: row r's ``indices[indptr[r]:indptr[r+1]]`` (then ``extra``), padded with ``pad``;
    width >= 1 so that the graph always gets a 2-d tensor."""
    if n == 1 and extra is None and len(indptr):  # one request: its row as it is
        row = indices[indptr[0]:indptr[1]]
        return row.astype(np.int64).reshape(1, -1) if len(row) else np.full((1, 1), pad, dtype=np.int64)
    counts = np.diff(indptr) if len(indptr) else np.zeros(n, dtype=np.int64)
    n_extra = 0 if extra is None else len(extra)
    width = max(1, int(counts.max(initial=0)) + n_extra)
    out = np.full((n, width), pad, dtype=np.int64)
    total = int(counts.sum())
    if total:
        rows = np.repeat(np.arange(n), counts)
        cols = np.arange(total) - np.repeat(indptr[:-1] - indptr[0], counts)
        out[rows, cols] = indices[indptr[0]:indptr[0] + total]
    if n_extra:
        out[:, width - n_extra:] = extra
    return out


def _padded_exclusions(n, excl_indptr, excl_indices, allowed) -> np.ndarray:
    """The graph's ``exclude`` input: each row's excluded items, plus every item outside ``allowed``."""
    extra = np.flatnonzero(~allowed) if len(allowed) else None
    return _padded(n, excl_indptr, excl_indices, pad=-1, extra=extra)


def _model_bytes(path, manifest: dict) -> bytes:
    """The ONNX graph of a checked bundle, its bytes checked against the manifest as they are read."""
    if "model.onnx" not in manifest.get("files", {}):
        raise BundleError(f"{path}: ONNX bundle has no model.onnx")
    return bundle.read_file(path, "model.onnx", manifest)
