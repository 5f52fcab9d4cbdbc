"""Hybrid: blend or switch between fitted recommenders (collaborative and content-based).

Scores of different models live on different scales (cosine sums, dot products, counts), so a
Hybrid never adds raw scores. Per request row, each component ranks its top ``candidates`` items
(at least ``k``) under the row's exclusions and ``items=`` restriction, and its scores are
min-max normalised over that list: the component's best item gets 1, its last listed item 0
(all 1 when the list's scores are equal). An item outside a component's list gets 0 from it.

- ``strategy="weighted"``: ``score(u, i) = sum_c weights_[c] * norm_c(u, i)``. Without
  ``weights``, ``fit`` carves a validation split from train (``holdout(validation_fraction,
  seed)``), fits the components on the rest, scores every weight vector on a grid over the
  simplex (step 0.1 for up to three components, 0.25 beyond) by NDCG@10 on the validation
  users, keeps the best in ``weights_`` (ties: the earlier grid point, single components first)
  with the grid in ``tuning_``, then refits the components on all of train.
- ``strategy="switching"``: the *content component* (the first whose ``fit`` takes
  ``features``, else the last component) ranks alone for users with fewer than
  ``min_interactions`` training interactions (or given ``history=`` items); for the others the
  first component ranks the items with at least ``min_interactions`` training interactions and
  the content component the rest (cold and rare items), and the two normalised lists are merged.

Item map: ``item_map_`` is the union of the training items and the featured items (when
``features`` are given), and every component is fitted on train re-indexed onto it, so all of
them share the Hybrid's user and item indices (see ``models.content``).

Bundles hold the Hybrid's own arrays and each fitted component as a complete bundle under
``components/<i>/`` (hashed by the outer manifest and again by its own); no pickle.
"""

from __future__ import annotations

import inspect
import itertools
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .. import bundle, validation
from ..data.idmap import IdMap
from ..data.interactions import Interactions
from ..errors import BundleError, ParameterError
from .base import Recommender, RowBatch, check_train, seen_matrix

STRATEGIES = ("weighted", "switching")
TUNING_METRIC = "ndcg@10"


class Hybrid(Recommender):
    """A blend (``"weighted"``) or switch (``"switching"``) of recommenders; see the module docstring.

    ``components``: models (fitted or not; ``fit`` fits clones, kept in ``components_``);
    ``weights``: one non-negative number per component, or None to tune them on validation;
    ``min_interactions``: the switching threshold for users and items; ``candidates``: list depth
    taken from each component per row; ``validation_fraction`` and ``seed``: the tuning split.
    """

    kind = "hybrid"

    def __init__(self, components=(), strategy: str = "weighted", weights=None, min_interactions: int = 5,
                 candidates: int = 200, validation_fraction: float = 0.2, seed: int = 42):
        self._init_params(locals())

    def _check_params(self, p: dict) -> dict:
        comps = p["components"]
        if isinstance(comps, Recommender) or not isinstance(comps, (list, tuple)) or not comps \
                or not all(isinstance(c, Recommender) for c in comps):
            raise ParameterError("components", comps, "a non-empty list of recsys_fast models")
        weights = p["weights"]
        if weights is not None:
            if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__") or len(weights) != len(comps):
                raise ParameterError("weights", weights, f"None or {len(comps)} numbers (one per component)")
            weights = tuple(validation.number(f"weights[{i}]", w, minimum=0.0) for i, w in enumerate(weights))
            if sum(weights) <= 0:
                raise ParameterError("weights", weights, "numbers >= 0 with a positive sum")
        return {
            "components": Components(comps),
            "strategy": validation.choice("strategy", p["strategy"], STRATEGIES),
            "weights": weights,
            "min_interactions": validation.integer("min_interactions", p["min_interactions"], minimum=1),
            "candidates": validation.integer("candidates", p["candidates"], minimum=1),
            "validation_fraction": validation.number("validation_fraction", p["validation_fraction"],
                                                     minimum=0.0, maximum=1.0, min_inclusive=False,
                                                     max_inclusive=False),
            "seed": validation.integer("seed", p["seed"]),
        }

    @property
    def supports_history(self) -> bool:
        models = getattr(self, "components_", None) or self.components
        return all(c.supports_history for c in models)

    # ------------------------------------------------------------------ fitting
    def fit(self, train: Interactions, features=None) -> "Hybrid":
        """Fit the components (features go to those whose ``fit`` takes them) and the weights."""
        from ..data.features import ItemFeatures, union_item_map

        check_train(train)
        if features is not None and not isinstance(features, ItemFeatures):
            raise ParameterError("features", features, "None or a recsys_fast.ItemFeatures")
        needs = [i for i, c in enumerate(self.components) if _takes_features(c)]
        if needs and features is None:
            raise ParameterError("features", None, "a recsys_fast.ItemFeatures",
                                 hint=f"component(s) {needs} are content models: fit(train, features=...)")
        if features is not None:
            train, _ = train.remap(train.user_map, union_item_map(train.item_map, features.item_map))
        self.user_map_, self.item_map_, self.seen_ = train.user_map, train.item_map, train.matrix
        self.item_counts_ = np.bincount(train.matrix.indices, minlength=train.n_items).astype(np.int64)
        self.tuning_ = []
        if self.strategy == "weighted" and self.weights is None and len(self.components) > 1:
            self.weights_ = self._tune(train, features)
        elif self.strategy == "weighted":
            w = np.asarray(self.weights if self.weights is not None else [1.0], dtype=np.float64)
            self.weights_ = tuple(float(x) for x in w / w.sum())
        else:
            self.weights_ = None
        self.components_ = [_fit_component(c, train, features) for c in self.components]
        return self

    def _check_update(self, combined, user_pos, item_pos, new_in) -> None:
        for c in self.components_:
            c._check_update(combined, user_pos, item_pos, new_in)

    def _update(self, combined, user_pos, item_pos, new_in) -> None:
        """Each component takes the new events through its own ``update`` (they share the
        Hybrid's id maps, so they stay aligned); ``weights_`` are kept (tuning again needs a
        refit); the item counts that switching reads are recounted."""
        for c in self.components_:
            c.update(new_in, duplicates=self._update_duplicates)
        self.item_counts_ = np.bincount(combined.matrix.indices, minlength=combined.n_items).astype(np.int64)

    def _tune(self, train: Interactions, features) -> tuple[float, ...]:
        from ..kernels.metrics import NDCG, per_user_metrics
        from ..split import holdout

        sub, val = holdout(train, test_fraction=self.validation_fraction, seed=self.seed)
        models = [_fit_component(c, sub, features) for c in self.components]
        users = np.flatnonzero(np.diff(val.matrix.indptr) > 0).astype(np.int64)
        k = int(TUNING_METRIC.split("@")[1])
        batch = _batch_for(models[0], users, sub.matrix)
        lists = [_normalised(*m._recommend_rows(batch, max(k, self.candidates))) for m in models]
        from ..data.csr import gather_rows

        t_indptr, t_indices, _ = gather_rows(val.matrix.indptr, val.matrix.indices, val.matrix.data, users)
        ks = np.array([k], dtype=np.int64)
        best, best_value = None, -np.inf
        for w in _simplex(len(models)):
            recs, _ = _blend(lists, w, k, train.n_items)
            value = float(np.nanmean(per_user_metrics(recs, t_indptr, t_indices, ks)[NDCG, :, 0]))
            self.tuning_.append((w, value))
            if value > best_value + 1e-12:
                best, best_value = w, value
        return best

    # ------------------------------------------------------------------ recommending
    def _recommend_rows(self, batch: RowBatch, k: int):
        n_items = self.n_items
        depth = min(n_items, max(k, self.candidates))
        comps = self.components_
        if self.strategy == "weighted":
            lists = [_normalised(*c._recommend_rows(batch, depth)) for c in comps]
            return _blend(lists, self.weights_, k, n_items)
        content = self._content_index()
        lengths = np.diff(batch.hist_indptr)
        cold_user = lengths < self.min_interactions
        allowed = batch.allowed if len(batch.allowed) else np.ones(n_items, dtype=np.bool_)
        warm_items = self.item_counts_ >= self.min_interactions
        out_i = np.full((len(lengths), k), -1, dtype=np.int32)
        out_s = np.full((len(lengths), k), -np.inf, dtype=np.float32)
        rows = np.flatnonzero(cold_user)
        if len(rows):
            sub = _rows(batch, rows)
            out_i[rows], out_s[rows] = _blend([_normalised(*comps[content]._recommend_rows(sub, depth))],
                                              (1.0,), k, n_items)
        rows = np.flatnonzero(~cold_user)
        if len(rows):
            sub = _rows(batch, rows)
            parts = []
            for c, mask in ((comps[0], allowed & warm_items), (comps[content], allowed & ~warm_items)):
                if mask.any():
                    restricted = RowBatch(sub.user_index, sub.hist_indptr, sub.hist_indices, sub.hist_data,
                                          sub.excl_indptr, sub.excl_indices, mask)
                    parts.append(_normalised(*c._recommend_rows(restricted, depth)))
            if parts:
                out_i[rows], out_s[rows] = _blend(parts, (1.0,) * len(parts), k, n_items)
        return out_i, out_s

    def _content_index(self) -> int:
        comps = getattr(self, "components_", None) or self.components
        for i, c in enumerate(comps):
            if _takes_features(c):
                return i
        return len(comps) - 1

    # ------------------------------------------------------------------ explanations
    def explain(self, user, item, history=None):
        """Why ``item`` scores what it does for ``user``: one block of rows per component, with
        the component's own explanation (``via``, ``id``, ``weight``, ``similarity``,
        ``contribution`` as from ``ItemKNN.explain``; one ``via="model"`` row with its raw score
        for components without ``explain``), its blend weight (``component_weight``; 1 for the
        component a switch chose, 0 for the other) and its normalised score for the item
        (``component_score``): the Hybrid's score is sum of ``component_weight * component_score``
        over the components."""
        import pandas as pd

        self.check_fitted()
        batch = _explain_batch(self, user, history)
        j = int(self.item_map_.to_index([item])[0])
        depth = min(self.n_items, max(1, self.candidates))
        weights = self._explain_weights(batch, j)
        frames = []
        for c, w in zip(self.components_, weights):
            idx, scores = c._recommend_rows(batch, depth)
            norm = _normalised(idx, scores)[1][0]
            hit = np.flatnonzero(idx[0] == j)
            comp_score = float(norm[hit[0]]) if len(hit) else 0.0
            if hasattr(c, "explain"):
                frame = c.explain(user, item, history=history)
            else:
                raw = float(scores[0, hit[0]]) if len(hit) else float("nan")
                frame = pd.DataFrame({"component": [c.kind], "via": ["model"], "id": [None], "weight": [np.nan],
                                      "similarity": [np.nan], "contribution": [raw]})
            frames.append(frame.assign(component_weight=w, component_score=comp_score))
        return pd.concat(frames, ignore_index=True)

    def _explain_weights(self, batch: RowBatch, j: int) -> list[float]:
        if self.strategy == "weighted":
            return list(self.weights_)
        content = self._content_index()
        out = [0.0] * len(self.components_)
        cold_user = np.diff(batch.hist_indptr)[0] < self.min_interactions
        out[content if cold_user or self.item_counts_[j] < self.min_interactions else 0] = 1.0
        return out

    # ------------------------------------------------------------------ persistence
    def fingerprint(self) -> str:
        """Digest of the Hybrid's own arrays and parameters chained with its components' digests."""
        self.check_fitted()
        arrays = {"user_ids": self.user_map_.ids, "item_ids": self.item_map_.ids, "seen_indptr": self.seen_.indptr,
                  "seen_indices": self.seen_.indices, "seen_data": self.seen_.data, "item_counts": self.item_counts_}
        params = {k: v for k, v in self.get_params().items() if k != "components"}
        params["weights_"] = None if self.weights_ is None else [float(w) for w in self.weights_]
        return bundle.digest(self.kind, params, arrays, extra=[c.fingerprint() for c in self.components_])

    def save(self, path) -> Path:
        """A bundle of the Hybrid's arrays plus each component's bundle under ``components/<i>/``."""
        self.check_fitted()
        arrays = {"user_ids": self.user_map_.ids, "item_ids": self.item_map_.ids,
                  "seen_indptr": self.seen_.indptr, "seen_indices": self.seen_.indices, "seen_data": self.seen_.data,
                  "item_counts": self.item_counts_}
        params = {k: v for k, v in self.get_params().items() if k != "components"}
        meta = {**self._bundle_meta(), "weights_": None if self.weights_ is None else list(self.weights_),
                "components": [c.kind for c in self.components_],
                "tuning_": [[list(w), v] for w, v in self.tuning_]}
        files = {}
        scratch = Path(tempfile.mkdtemp(prefix=".hybrid-components."))
        try:
            for i, c in enumerate(self.components_):
                where = c.save(scratch / str(i))
                for f in sorted(p for p in where.rglob("*") if p.is_file()):
                    files[f"components/{i}/{f.relative_to(where).as_posix()}"] = f.read_bytes()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return bundle.write_bundle(path, self.kind, params, arrays, meta=meta, files=files)

    @classmethod
    def _from_bundle(cls, path, manifest: dict) -> "Hybrid":
        import scipy.sparse as sp

        from .registry import load

        path = Path(path)
        meta = manifest.get("meta", {})
        kinds = meta.get("components")
        if not isinstance(kinds, list) or not kinds:
            raise BundleError(f"{path}: hybrid bundle lists no components")
        comps = [load(path / "components" / str(i)) for i in range(len(kinds))]
        for i, (c, kind) in enumerate(zip(comps, kinds)):
            if c.kind != kind:
                raise BundleError(f"{path}: component {i} is {c.kind!r}, the manifest says {kind!r}")
        params = dict(manifest["params"])
        unknown = set(params) - set(cls.param_names())
        if unknown:
            raise BundleError(f"{path}: parameters {sorted(unknown)} are not parameters of {cls.__name__}")
        if params.get("weights") is not None:
            params["weights"] = tuple(params["weights"])
        model = cls(components=comps, **params)
        get = lambda name: bundle.load_array(path, name, manifest)  # noqa: E731
        model.user_map_ = IdMap(get("user_ids"), "user")
        model.item_map_ = IdMap(get("item_ids"), "item")
        model.seen_ = seen_matrix(path, get, len(model.user_map_), len(model.item_map_))
        model.item_counts_ = get("item_counts").astype(np.int64)
        model.components_ = comps
        w = meta.get("weights_")
        model.weights_ = None if w is None else tuple(float(x) for x in w)
        model.tuning_ = [(tuple(wv[0]), float(wv[1])) for wv in meta.get("tuning_", [])]
        for i, c in enumerate(comps):
            if c.item_map_ != model.item_map_ or c.user_map_ != model.user_map_:
                raise BundleError(f"{path}: component {i}'s id maps differ from the hybrid's")
        return model


# ---------------------------------------------------------------------- helpers
class Components(tuple):
    """The ``components`` parameter: a tuple of models that compares equal to another when the
    models are of the same types with the same parameters (so a loaded Hybrid's ``get_params``
    equals the saved one's, as for every model)."""

    def __eq__(self, other):
        if not isinstance(other, tuple) or len(other) != len(self):
            return False
        return all(type(a) is type(b) and a.get_params() == b.get_params() for a, b in zip(self, other))

    def __ne__(self, other):
        return not self == other

    __hash__ = None


def _takes_features(model) -> bool:
    return "features" in inspect.signature(model.fit).parameters


def _fit_component(model: Recommender, train: Interactions, features) -> Recommender:
    clone = type(model)(**model.get_params())
    return clone.fit(train, features=features) if _takes_features(clone) else clone.fit(train)


def _batch_for(model: Recommender, users: np.ndarray, exclude) -> RowBatch:
    """Training users' rows, excluding ``exclude``'s rows (inside models/: a RowBatch is ours)."""
    return model.batch_for_users(users, exclude)


def _explain_batch(model: Recommender, user, history) -> RowBatch:
    """One row: ``user``'s training history, or the given ``history`` (a new user, index -1);
    its items excluded, as ``recommend`` does."""
    if history is None:
        u = int(model.user_map_.to_index([user])[0])
        return model.batch_for_users(np.array([u]), model.seen_)
    h = model.item_map_.to_index(np.atleast_1d(np.asarray(history)), on_unknown="pad")
    h = h[h >= 0].astype(np.int32)
    ptr = np.array([0, len(h)], dtype=np.int64)
    return RowBatch(np.array([-1], np.int64), ptr, h, np.ones(len(h), np.float32), ptr, np.unique(h),
                    np.zeros(0, np.bool_))


def _rows(batch: RowBatch, rows: np.ndarray) -> RowBatch:
    from ..data.csr import gather_rows

    hist = gather_rows(batch.hist_indptr, batch.hist_indices, batch.hist_data, rows)
    if len(batch.excl_indptr):
        e = gather_rows(batch.excl_indptr, batch.excl_indices, np.zeros(len(batch.excl_indices), np.float32), rows)
        excl = (e[0], e[1])
    else:
        excl = (batch.excl_indptr, batch.excl_indices)
    return RowBatch(batch.user_index[rows], *hist, *excl, batch.allowed)


def _normalised(items: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, min-max scale the listed (non-padding) scores to [0, 1] (all 1 when equal)."""
    valid = scores > -np.inf
    s = scores.astype(np.float64)
    hi = np.where(valid, s, -np.inf).max(axis=1, initial=-np.inf, keepdims=True)
    lo = np.where(valid, s, np.inf).min(axis=1, initial=np.inf, keepdims=True)
    span = np.where(valid.any(axis=1, keepdims=True), hi - lo, 0.0)
    with np.errstate(invalid="ignore"):
        norm = np.where(span > 0, (s - lo) / np.where(span > 0, span, 1.0), 1.0)
    return items, np.where(valid, norm, -np.inf)


def _blend(lists, weights, k: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of ``sum_c weights[c] * norm_c`` per row over the union of the lists; ties by
    lower item index. A component's weight 0 still lets its items in (scored 0 from it)."""
    n = lists[0][0].shape[0]
    rows = np.concatenate([np.repeat(np.arange(n, dtype=np.int64), li.shape[1]) for li, _ in lists])
    items = np.concatenate([li.ravel() for li, _ in lists]).astype(np.int64)
    vals = np.concatenate([w * np.where(ls > -np.inf, ls, 0.0).ravel() for (_, ls), w in zip(lists, weights)])
    keep = items >= 0
    key = rows[keep] * n_items + items[keep]
    uniq, inv = np.unique(key, return_inverse=True)
    score = np.bincount(inv.reshape(-1), weights=vals[keep], minlength=len(uniq))
    r = uniq // n_items
    order = np.lexsort((uniq - r * n_items, -score, r))
    r_sorted = r[order]
    starts = np.searchsorted(r_sorted, np.arange(n))
    rank = np.arange(len(order)) - starts[r_sorted]
    take = rank < k
    out_i = np.full((n, k), -1, dtype=np.int32)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    out_i[r_sorted[take], rank[take]] = (uniq[order][take] - r_sorted[take] * n_items).astype(np.int32)
    out_s[r_sorted[take], rank[take]] = score[order][take].astype(np.float32)
    return out_i, out_s


def _simplex(n: int):
    """Weight vectors on a grid over the simplex: single components first, then the rest."""
    steps = 10 if n <= 3 else 4
    grid = [tuple(c / steps for c in combo) for combo in itertools.product(range(steps + 1), repeat=n)
            if sum(combo) == steps]
    grid.sort(key=lambda w: (sum(x > 0 for x in w), [-x for x in w]))
    return grid
