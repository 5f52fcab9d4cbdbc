"""The protocol every recommender follows: fit, recommend, predict, save, load.

A subclass implements ``_fit(train)`` and either ``_score_rows`` (dense scores for a batch of
rows; the base selects the top-k with the kernels) or ``_recommend_rows`` (its own top-k, as the
kNN models do), plus ``_get_state``/``_set_state`` for bundles. Everything a user passes and
receives is in external ids; internal indices stay inside.

Underneath the external-id API sits the **index-level protocol** that every layer above
``models/`` (evaluation, batch scoring, serving, the CLI, the benches) uses, and nothing else:

- ``recommend_indices(user_index, k, exclude=None, allowed=None) -> (items, scores)``
- ``predict_indices(user_index, item_index) -> ratings`` (rating models)
- ``param_names()``, ``get_params()``, ``is_fitted``, ``check_fitted()``, ``n_users``, ``n_items``, ``user_map_``,
  ``item_map_``, ``seen_`` (the training matrix, model users x items).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from .. import bundle, limits, validation
from ..data.csr import gather_rows
from ..data.idmap import IdMap
from ..data.interactions import Interactions
from ..errors import BundleError, DataError, NotFittedError, ParameterError, ParameterTypeError, UnknownIdError
from ..kernels.csr_merge import merge_csr

_log = logging.getLogger("recsys_fast")

SCORE_CHUNK_ROWS = 1024  # dense score rows per batch: bounds memory at chunk x n_items floats
PROGRESS_CHUNK_ROWS = 8192  # users per step of a large recommend call (the unit of its progress)


class Ranked:
    """Top-k results for a batch of query ids, in external ids: what ``recommend``,
    ``similar_items`` and ``similar_users`` return (one vocabulary for all of them).

    ``query`` has shape (n,): the ids asked about (users for ``recommend``); ``ids`` and
    ``scores`` (n, k), best first: the recommended (or most similar) ids and their scores. When
    fewer than k ids qualify, a row is padded at the end with id -1 (``""`` for string ids) and
    score -inf. Read-only.
    """

    __slots__ = ("query", "ids", "scores")
    _RENAMED: ClassVar[dict[str, str]] = {}

    def __init__(self, query=None, ids=None, scores=None, **renamed):
        validation.renamed(type(self).__name__, renamed, self._RENAMED)
        if query is None or ids is None or scores is None:
            raise TypeError(f"{type(self).__name__} needs query, ids and scores")
        object.__setattr__(self, "query", np.asarray(query))
        object.__setattr__(self, "ids", np.asarray(ids))
        object.__setattr__(self, "scores", np.asarray(scores))

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __len__(self) -> int:
        return len(self.query)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, k={self.ids.shape[1] if self.ids.ndim == 2 else 0})"

    def to_pandas(self):
        """Long format: one row per (query, rank) with columns query, rank (1-based), id, score;
        padding entries are left out."""
        import pandas as pd

        n, k = self.ids.shape
        valid = (self.scores > -np.inf).ravel()
        return pd.DataFrame({
            "query": np.repeat(self.query, k)[valid],
            "rank": np.tile(np.arange(1, k + 1), n)[valid],
            "id": self.ids.ravel()[valid],
            "score": self.scores.ravel()[valid],
        })


class Recommendations(Ranked):
    """Top-k items for a batch of users (``recommend``'s result): ``query`` the users, ``ids`` the
    items, ``scores``; ``users`` and ``items`` are the same arrays under their own names."""

    __slots__ = ()
    _RENAMED = {"users": "query", "items": "ids"}

    @property
    def users(self) -> np.ndarray:
        return self.query

    @property
    def items(self) -> np.ndarray:
        return self.ids


class Neighbours(Ranked):
    """The most similar ids of a batch of query ids (``similar_items``, ``similar_users``)."""

    __slots__ = ()


@dataclass(frozen=True)
class RowBatch:
    """The internal form of a recommend request.

    ``user_index`` is the training index of each row's user, or -1 for a user known only by the
    ``history=`` given; ``hist_*`` is each row's history as CSR (training row, or the given items in
    the order given); ``excl_*`` the sorted items to exclude per row (empty indptr: none); ``allowed``
    a bool mask over items (empty: all).
    """

    user_index: np.ndarray
    hist_indptr: np.ndarray
    hist_indices: np.ndarray
    hist_data: np.ndarray
    excl_indptr: np.ndarray
    excl_indices: np.ndarray
    allowed: np.ndarray

    def rows(self, start: int, stop: int) -> "RowBatch":
        """Rows ``start:stop`` of the batch (CSR parts re-based to 0; ``allowed`` shared), for
        scoring a large batch in chunks."""
        hp = self.hist_indptr[start:stop + 1]
        hist = (hp - hp[0], self.hist_indices[hp[0]:hp[-1]], self.hist_data[hp[0]:hp[-1]])
        if len(self.excl_indptr):
            ep = self.excl_indptr[start:stop + 1]
            excl = (ep - ep[0], self.excl_indices[ep[0]:ep[-1]])
        else:
            excl = (self.excl_indptr, self.excl_indices)
        return RowBatch(self.user_index[start:stop], *hist, *excl, self.allowed)


class Recommender:
    """Base class: parameters in the constructor, data in ``fit``, learned state ends in ``_``."""

    kind: ClassVar[str] = ""
    supports_history: ClassVar[bool] = False  # can score users unseen in training from a history
    predicts_ratings: ClassVar[bool] = False

    # ------------------------------------------------------------------ parameters
    # Parameters are validated in one place per model, ``_check_params``, when the model is built
    # and on every ``set_params``; what it returns is stored, returned by ``get_params`` and
    # recorded in bundles. Old parameter names (``_RENAMED``: old -> new) raise a TypeError naming
    # the new one.
    _RENAMED: ClassVar[dict[str, str]] = {}

    @classmethod
    def param_names(cls) -> list[str]:
        """The constructor's parameter names, in order."""
        sig = inspect.signature(cls.__init__)
        return [name for name, p in sig.parameters.items()
                if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]

    def get_params(self) -> dict:
        """The validated parameters, by name (scikit-learn's ``get_params``)."""
        return {name: getattr(self, name) for name in self.param_names()}

    def set_params(self, **params) -> "Recommender":
        """Change parameters (validated again, all together); returns self. A fitted model keeps its
        learned state until the next ``fit``."""
        names = self.param_names()
        for name in params:
            if name in self._RENAMED:
                validation.renamed(type(self).__name__, {name: None}, self._RENAMED)
            if name not in names:
                raise ParameterError("parameter name", name, "one of " + ", ".join(names),
                                     hint=f"{type(self).__name__} has no parameter {name!r}")
        self._apply_params({**self.get_params(), **params})
        return self

    def _init_params(self, values: dict, renamed: dict | None = None) -> None:
        """For ``__init__``: validate and store the constructor's arguments (``locals()``)."""
        validation.renamed(type(self).__name__, renamed or {}, self._RENAMED)
        self._apply_params({name: values[name] for name in self.param_names()})

    def _apply_params(self, params: dict) -> None:
        checked = self._check_params(dict(params))
        for name in self.param_names():
            object.__setattr__(self, name, checked[name])

    def _check_params(self, params: dict) -> dict:
        """The model's one validator: every parameter checked (through ``recsys_fast.validation``)
        and coerced; returns the dict to store. Subclasses extend it."""
        return params

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ fitting
    def fit(self, train: Interactions) -> "Recommender":
        """Learn from ``train`` and return self."""
        check_train(train)
        self.__dict__.pop("_state_digest", None)  # fingerprint() hashes the new state
        self.user_map_ = train.user_map
        self.item_map_ = train.item_map
        self.seen_ = train.matrix
        self._fit(train)
        return self

    def _fit(self, train: Interactions) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ the feedback loop
    def update(self, new: Interactions, duplicates: str = "last") -> "Recommender":
        """Fold ``new`` interactions into the fitted model without a full refit; returns self.

        The model afterwards stands for its training data plus ``new``, combined as
        ``Interactions`` combines events: a (user, item) pair present in both is resolved by
        ``duplicates`` with the new event as the later one ("last", the default: the new event
        replaces the old; "sum": weights add; "first", "max"). New users and new items join the
        id maps (internal indices are renumbered; external ids stay). What each model recomputes,
        and how close that is to a refit, is in its ``_update`` docstring (kNN: identical to a
        refit; Popularity and EASE: recomputed exactly; factor models: fold-in; sequential
        models: the events join the sequences). Save again to ship it: a serving runtime loads
        the new bundle.
        """
        self.check_fitted()
        if not isinstance(new, Interactions):
            raise TypeError(f"update expects recsys_fast.Interactions, got {type(new).__name__}")
        if duplicates not in ("last", "first", "sum", "max"):
            raise ParameterError("duplicates", duplicates, "one of 'last', 'first', 'sum', 'max'")
        combined, user_pos, item_pos, new_in = self._merged(new, duplicates)
        self._check_update(combined, user_pos, item_pos, new_in)
        self._update_duplicates = duplicates  # for models that pass the events on (Hybrid)
        self._update(combined, user_pos, item_pos, new_in)
        self.user_map_, self.item_map_, self.seen_ = combined.user_map, combined.item_map, combined.matrix
        return self

    def _check_update(self, combined: Interactions, user_pos, item_pos, new_in: Interactions) -> None:
        """Refuse an update the model cannot take before anything changes (default: any)."""

    def _update(self, combined: Interactions, user_pos: np.ndarray, item_pos: np.ndarray,
                new_in: Interactions) -> None:
        """Change the learned state to stand for ``combined`` (old + new data, union id maps).
        ``user_pos``/``item_pos``: the new index of every old user/item (increasing);
        ``new_in``: the new events alone on the union maps (with their timestamps)."""
        raise NotImplementedError(f"{type(self).__name__} has no update; refit it on the combined data")

    def _stored_ratings(self) -> np.ndarray | None:
        """Ratings aligned with ``seen_.data`` that the model keeps (kNN), else None."""
        return None

    def _merged(self, new: Interactions, duplicates: str):
        """(old + new on the union id maps, old users' new indices, old items' new indices,
        the new events alone on the union maps)."""
        user_map = _union_map(self.user_map_, new.user_map)
        item_map = _union_map(self.item_map_, new.item_map)
        user_pos = _positions(self.user_map_, user_map)
        item_pos = _positions(self.item_map_, item_map)
        new_in, _ = new.remap(user_map, item_map)
        seen = self.seen_
        old_r = self._stored_ratings()
        new_r = None
        if old_r is not None:
            new_r = new_in.ratings if new_in.ratings is not None else new_in.matrix.data
        # both sides are sorted CSR and the maps only insert ids: a linear merge, not a sort of every key
        m = new_in.matrix
        indptr, indices, data, ratings, _ = merge_csr((seen.indptr, seen.indices, seen.data), user_pos, item_pos,
                                                      (m.indptr, m.indices, m.data), len(item_map), duplicates,
                                                      old_r, new_r)
        matrix = sp.csr_matrix((data, indices, indptr), shape=(len(user_map), len(item_map)))
        matrix.has_sorted_indices = True
        combined = Interactions(matrix, user_map, item_map, None, ratings)
        return combined, user_pos, item_pos, new_in

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "seen_")

    def check_fitted(self) -> None:
        """Raise ``NotFittedError`` unless the model is fitted (or loaded)."""
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(train) or recsys_fast.load(path)")

    @property
    def n_items(self) -> int:
        self.check_fitted()
        return len(self.item_map_)

    @property
    def n_users(self) -> int:
        self.check_fitted()
        return len(self.user_map_)

    # ------------------------------------------------------------------ index-level protocol
    def recommend_indices(self, user_index, k: int, exclude=None, allowed=None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` for training users given by internal index: the protocol of the layers above.

        ``user_index``: int array (n,) of internal user indices, ``0 <= u < n_users``.
        ``exclude``: None (exclude nothing), ``"seen"`` (each user's training items) or a CSR
        matrix with the model's shape ``(n_users, n_items)`` and sorted indices whose rows are the
        items to exclude (e.g. an evaluation's train split aligned to the model).
        ``allowed``: None (every item) or a bool mask over the ``n_items`` items.
        Returns ``(items, scores)``: int32 internal item indices and float32 scores, shape (n, k),
        best first, rows padded at the end with -1 / -inf when fewer than k items qualify.
        """
        self.check_fitted()
        user_index = _index_array("user_index", user_index, self.n_users)
        k = self._clamped_k(k, len(user_index))
        if isinstance(exclude, str) and exclude == "seen":
            exclude = self.seen_
        elif exclude is not None and not (sp.issparse(exclude) and exclude.shape == self.seen_.shape):
            raise ParameterError("exclude", validation.type_of(exclude) if not sp.issparse(exclude)
                                 else validation.Shown(f"shape {exclude.shape}"),
                                 f"None, 'seen' or a CSR matrix of the model's shape {self.seen_.shape}")
        if allowed is None:
            allowed = np.zeros(0, dtype=np.bool_)
        else:
            allowed = np.asarray(allowed)
            if allowed.shape != (self.n_items,) or allowed.dtype.kind != "b":
                raise ParameterError("allowed", validation.Shown(f"{allowed.dtype} of shape {allowed.shape}"),
                                     f"None or a bool mask of shape ({self.n_items},)")
        batch = self.batch_for_users(user_index, exclude)
        batch = RowBatch(batch.user_index, batch.hist_indptr, batch.hist_indices, batch.hist_data,
                         batch.excl_indptr, batch.excl_indices, allowed)
        return self._recommend_rows(batch, k)

    def predict_indices(self, user_index, item_index) -> np.ndarray:
        """Predicted ratings (float) for (user, item) pairs of internal indices (rating models)."""
        self.check_fitted()
        if not self.predicts_ratings:
            raise TypeError(f"{type(self).__name__} ranks items and does not predict ratings")
        u = np.asarray(user_index, dtype=np.int64).reshape(-1)
        i = np.asarray(item_index, dtype=np.int64).reshape(-1)
        if len(u) != len(i):
            raise ParameterError("item_index", validation.Shown(f"{len(i)} entries"),
                                 f"as long as user_index ({len(u)})")
        return self._predict_pairs(u, i)

    # ------------------------------------------------------------------ recommending
    def recommend(self, users, k: int = 10, exclude_seen: bool = True, items=None, history: dict | None = None,
                  on_unknown: str = "raise", on_unknown_items: str = "raise",
                  progress: bool | None = None) -> Recommendations:
        """Top-``k`` items for each of ``users`` (external ids; one id or a sequence).

        ``k`` above the catalogue is clamped: the result has ``min(k, n_items)`` columns; users x
        that width is bounded by ``recsys_fast.limits.MAX_RESULT_ENTRIES`` (``LimitError`` above).
        ``exclude_seen`` removes the user's training items and given history from the candidates.
        ``items`` restricts the candidates to those item ids. ``history={user: [items]}`` scores
        users from the given items (fold-in, for models with ``supports_history``); for a known
        user the given items replace the training row as the scoring history, and exclusion
        covers both. Unknown users raise ``UnknownIdError`` (``on_unknown="raise"``) or get an
        all-padding row (``on_unknown="pad"``). Unknown item ids in a history raise
        ``UnknownIdError`` (``on_unknown_items="raise"``) or are left out
        (``on_unknown_items="ignore"``; their count is logged at INFO by ``recsys_fast``).
        ``progress``: a call over more than ``PROGRESS_CHUNK_ROWS`` users runs in steps of that
        many and, when it lasts over a few seconds, shows progress (None, the default: a bar on a
        terminal, log lines otherwise, see ``recsys_fast.progress``; False: never).
        """
        self.check_fitted()
        if progress is not None:
            progress = validation.boolean("progress", progress)
        on_unknown = validation.on_unknown(on_unknown)
        on_unknown_items = validation.choice("on_unknown_items", on_unknown_items, ON_UNKNOWN_ITEMS)
        exclude_seen = validation.boolean("exclude_seen", exclude_seen)
        users = _query_ids("users", users)
        k = self._clamped_k(k, len(users))
        if history is not None:
            validation.instance("history", history, dict, "None or a dict {user: [item ids]}")
        batch, padded = self._build_rows(users, exclude_seen, items, history, on_unknown, on_unknown_items)
        idx, scores = self._recommend_in_steps(batch, k, progress)
        if padded.any():
            idx[padded] = -1
            scores[padded] = -np.inf
        return Recommendations(users, self.item_map_.to_external(idx), scores)

    def _recommend_in_steps(self, batch: RowBatch, k: int, progress: bool | None) -> tuple[np.ndarray, np.ndarray]:
        """``_recommend_rows`` over a large batch in steps of ``PROGRESS_CHUNK_ROWS`` users, with progress."""
        n = len(batch.user_index)
        if n <= PROGRESS_CHUNK_ROWS or progress is False:
            return self._recommend_rows(batch, k)
        from ..progress import progress as progress_bar

        out_i = np.empty((n, k), dtype=np.int32)
        out_s = np.empty((n, k), dtype=np.float32)
        with progress_bar(n, f"recommending {type(self).__name__}", "users", enabled=progress) as bar:
            for start in range(0, n, PROGRESS_CHUNK_ROWS):
                stop = min(n, start + PROGRESS_CHUNK_ROWS)
                out_i[start:stop], out_s[start:stop] = self._recommend_rows(batch.rows(start, stop), k)
                bar.update(stop - start)
        return out_i, out_s

    def _clamped_k(self, k, n_rows: int) -> int:
        """``k`` validated, clamped to the catalogue, and the result size checked against the limit."""
        k = min(_check_k(k), max(self.n_items, 1))
        limits.check_result_size(n_rows, k)
        return k

    def _build_rows(self, users, exclude_seen, items, history, on_unknown, on_unknown_items="raise"):
        history = history or {}
        uidx = self.user_map_.to_index(users, on_unknown="pad") if len(users) else np.zeros(0, np.int64)
        if not history:  # fast path for large batches: no Python loop over users
            unknown = uidx < 0
            self._raise_unknown(users, unknown, on_unknown)
            seen = self.seen_
            indptr, hist_indices, hist_data = gather_rows(seen.indptr, seen.indices, seen.data, uidx)
            if exclude_seen:  # training rows are sorted and duplicate-free already
                excl_indptr, excl_indices = indptr, hist_indices
            else:
                excl_indptr, excl_indices = np.zeros(0, np.int64), np.zeros(0, np.int32)
            batch = RowBatch(uidx.astype(np.int64), indptr, hist_indices, hist_data, excl_indptr, excl_indices,
                             self._allowed_mask(items))
            return batch, unknown
        history_keys = {_key(h) for h in history}
        in_history = np.array([_key(u) in history_keys for u in users], dtype=bool)
        unknown = (uidx < 0) & ~in_history
        self._raise_unknown(users, unknown, on_unknown)
        if in_history.any() and not self.supports_history:
            raise ParameterError("history", validation.Shown(f"histories for {int(in_history.sum())} users"),
                                 "None", hint=f"{type(self).__name__} cannot score users from a given history "
                                 "(no fold-in); refit with those users' interactions")
        hist_by_key = {_key(u): v for u, v in history.items()}
        indptr = np.zeros(len(users) + 1, dtype=np.int64)
        rows_i, rows_d = [], []
        also_excluded = []  # (row, training items) of known users scored from a given history
        seen = self.seen_
        n_ignored = 0
        for r, u in enumerate(users):
            if in_history[r]:
                given = _query_ids(f"history[{_plain_id(u)!r}]", hist_by_key[_key(u)])
                hi = self.item_map_.to_index(given, on_unknown=on_unknown_items.replace("ignore", "pad"))
                n_ignored += int((hi < 0).sum())
                hi = hi[hi >= 0].astype(np.int32)
                hd = np.ones(len(hi), dtype=np.float32)
                if uidx[r] >= 0:
                    also_excluded.append((r, seen.indices[seen.indptr[uidx[r]]:seen.indptr[uidx[r] + 1]]))
                uidx[r] = -1
            elif uidx[r] >= 0:
                lo, up = seen.indptr[uidx[r]], seen.indptr[uidx[r] + 1]
                hi, hd = seen.indices[lo:up], seen.data[lo:up]
            else:
                hi, hd = np.zeros(0, np.int32), np.zeros(0, np.float32)
            rows_i.append(hi)
            rows_d.append(hd)
            indptr[r + 1] = indptr[r] + len(hi)
        if n_ignored:
            _log.info("recommend: %d history item id(s) unknown to the model were ignored", n_ignored)
        hist_indices = np.concatenate(rows_i).astype(np.int32) if rows_i else np.zeros(0, np.int32)
        hist_data = np.concatenate(rows_d).astype(np.float32) if rows_d else np.zeros(0, np.float32)
        if exclude_seen:
            # copies: sum_duplicates sorts in place, and the history must keep its given order
            excl = sp.csr_matrix((np.ones(len(hist_indices), np.float32), hist_indices.copy(), indptr.copy()),
                                 shape=(len(users), self.n_items))
            if also_excluded:  # a known user's training items stay excluded next to the given history
                rows = np.concatenate([np.full(len(i), r, np.int64) for r, i in also_excluded])
                cols = np.concatenate([i for _, i in also_excluded])
                excl = excl + sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=excl.shape)
            excl.sum_duplicates()
            excl_indptr, excl_indices = excl.indptr.astype(np.int64), excl.indices.astype(np.int32)
        else:
            excl_indptr, excl_indices = np.zeros(0, np.int64), np.zeros(0, np.int32)
        allowed = self._allowed_mask(items)
        batch = RowBatch(uidx.astype(np.int64), indptr, hist_indices, hist_data, excl_indptr, excl_indices, allowed)
        return batch, unknown

    def _raise_unknown(self, users, unknown: np.ndarray, on_unknown: str) -> None:
        if unknown.any() and on_unknown == "raise":
            hint = "pass history={user: [items]} to score new users" if self.supports_history \
                else f"{type(self).__name__} cannot score users unseen in training"
            raise UnknownIdError("user", users[unknown], hint=hint)

    def batch_for_users(self, user_index: np.ndarray, exclude: sp.csr_matrix | None = None) -> RowBatch:
        """A RowBatch for training users by internal index: history = their training rows,
        exclusions = the same rows of ``exclude`` (a CSR over the model's users x items with sorted
        indices, e.g. the train split aligned to the model), or none when ``exclude`` is None.

        Part of the index-level protocol (``recommend_indices`` builds its rows with it): the
        evaluation and serving path, no external-id round trip, no per-user Python loop.
        """
        self.check_fitted()
        user_index = np.asarray(user_index, dtype=np.int64)
        seen = self.seen_
        hist_indptr, hist_indices, hist_data = gather_rows(seen.indptr, seen.indices, seen.data, user_index)
        if exclude is None:
            excl_indptr, excl_indices = np.zeros(0, np.int64), np.zeros(0, np.int32)
        elif exclude is seen:  # the usual case: the same arrays, so kernels map them once
            excl_indptr, excl_indices = hist_indptr, hist_indices
        else:
            if exclude.shape != self.seen_.shape:
                raise ParameterError("exclude", validation.Shown(f"shape {exclude.shape}"),
                                     f"None, 'seen' or a CSR matrix of the model's shape {self.seen_.shape}")
            excl_indptr, excl_indices, _ = gather_rows(exclude.indptr, exclude.indices, exclude.data, user_index)
        return RowBatch(user_index, hist_indptr, hist_indices, hist_data,
                        excl_indptr, excl_indices, np.zeros(0, dtype=np.bool_))

    def _allowed_mask(self, items) -> np.ndarray:
        if items is None:
            return np.zeros(0, dtype=np.bool_)
        idx = self.item_map_.to_index(_query_ids("items", items), on_unknown="raise")
        mask = np.zeros(self.n_items, dtype=np.bool_)
        mask[idx] = True
        return mask

    def _recommend_rows(self, batch: RowBatch, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k internal item indices and scores per row; default: dense scores + kernel top-k."""
        from ..kernels.topk import dense_topk

        n = len(batch.user_index)
        out_i = np.empty((n, k), dtype=np.int32)
        out_s = np.empty((n, k), dtype=np.float32)
        for start in range(0, n, SCORE_CHUNK_ROWS):
            stop = min(n, start + SCORE_CHUNK_ROWS)
            sub = batch.rows(start, stop)
            scores = np.ascontiguousarray(self._score_rows(sub), dtype=np.float32)
            out_i[start:stop], out_s[start:stop] = dense_topk(scores, k, sub.excl_indptr, sub.excl_indices,
                                                              sub.allowed)
        return out_i, out_s

    def _score_rows(self, batch: RowBatch) -> np.ndarray:
        """Dense float32 scores (rows x n_items) for a batch; higher is better."""
        raise NotImplementedError

    # ------------------------------------------------------------------ ratings
    def predict(self, users, items) -> np.ndarray:
        """Predicted ratings for (user, item) pairs of external ids (rating models only)."""
        self.check_fitted()
        if not self.predicts_ratings:
            raise TypeError(f"{type(self).__name__} ranks items and does not predict ratings")
        u = self.user_map_.to_index(_query_ids("users", users))
        i = self.item_map_.to_index(_query_ids("items", items))
        if len(u) != len(i):
            raise ParameterError("items", validation.Shown(f"{len(i)} ids"), f"as many ids as users ({len(u)})")
        return self.predict_indices(u, i)

    def _predict_pairs(self, user_index: np.ndarray, item_index: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------------ warm-up
    def prepare(self) -> "Recommender":
        """Compile kernels on a tiny batch so the first real request is not the slow one."""
        self.check_fitted()
        if len(self.user_map_):
            self.recommend(self.user_map_.ids[:1], k=1)
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> Path:
        """Write the fitted model as a bundle directory (atomic; no pickle)."""
        self.check_fitted()
        arrays = {
            "user_ids": self.user_map_.ids, "item_ids": self.item_map_.ids,
            "seen_indptr": self.seen_.indptr, "seen_indices": self.seen_.indices, "seen_data": self.seen_.data,
        }
        state = self._get_state()
        clash = set(state) & set(arrays)
        if clash:
            raise RuntimeError(f"state arrays {clash} clash with the base arrays")
        arrays.update(state)
        return bundle.write_bundle(path, self.kind, self.get_params(), arrays, meta=self._bundle_meta())

    def _bundle_meta(self) -> dict:
        """The model's own metadata plus the fingerprint of its training data."""
        return {"data": bundle.data_fingerprint(self.user_map_.ids, self.item_map_.ids, self.seen_.nnz),
                **self._get_meta()}

    def fingerprint(self) -> str:
        """A sha256 hex digest of the fitted model: kind, parameters, id maps, training matrix and
        learned arrays (what a bundle of it holds). Batch jobs use it to resume only their own work."""
        self.check_fitted()
        # the learned arrays change only in fit (or loading), so their digest is kept per state;
        # the parameters (set_params may change them) are hashed on every call
        state = (id(self.seen_), id(self.user_map_))
        cached = self.__dict__.get("_state_digest")
        if cached is None or cached[0] != state:
            seen = self.seen_
            arrays = {"user_ids": self.user_map_.ids, "item_ids": self.item_map_.ids, "seen_indptr": seen.indptr,
                      "seen_indices": seen.indices, "seen_data": seen.data, **self._get_state()}
            cached = (state, bundle.digest(self.kind, {}, arrays))
            self.__dict__["_state_digest"] = cached
        return bundle.digest(self.kind, self.get_params(), {}, extra=[cached[1]])

    def _get_state(self) -> dict[str, np.ndarray]:
        return {}

    def _get_meta(self) -> dict:
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        pass

    @classmethod
    def _from_bundle(cls, path, manifest: dict) -> "Recommender":
        params = manifest["params"]
        unknown = set(params) - set(cls.param_names())
        if unknown:
            raise BundleError(f"{path}: parameters {sorted(unknown)} are not parameters of {cls.__name__}")
        model = cls(**params)
        get = lambda name: bundle.load_array(path, name, manifest)  # noqa: E731
        model.user_map_ = IdMap(get("user_ids"), "user")
        model.item_map_ = IdMap(get("item_ids"), "item")
        model.seen_ = seen_matrix(path, get, len(model.user_map_), len(model.item_map_))
        names = [f[:-4] for f in manifest["files"] if f.endswith(".npy")]
        model._set_state({n: get(n) for n in names}, manifest.get("meta", {}))
        return model


def seen_matrix(path, get, n_users: int, n_items: int) -> sp.csr_matrix:
    """The training matrix of a bundle from its ``seen_*`` arrays, checked against the id maps."""
    indptr, indices, data = get("seen_indptr"), get("seen_indices"), get("seen_data")
    ok = (indptr.ndim == indices.ndim == data.ndim == 1 and indptr.dtype.kind in "iu" and indices.dtype.kind in "iu"
          and data.dtype.kind == "f" and len(indptr) == n_users + 1 and len(indices) == len(data)
          and (len(indptr) == 0 or (indptr[0] == 0 and indptr[-1] == len(indices) and (np.diff(indptr) >= 0).all()))
          and (len(indices) == 0 or (indices.min() >= 0 and indices.max() < n_items)))
    if not ok:
        raise BundleError(f"{path}: the stored training matrix does not fit the id maps ({n_users} users x "
                          f"{n_items} items); the bundle is inconsistent")
    return sp.csr_matrix((data, indices, indptr), shape=(n_users, n_items))


def _positions(old: IdMap, union: IdMap) -> np.ndarray:
    """The index in ``union`` of each id of ``old`` (increasing)."""
    if union is old:
        return np.arange(len(old), dtype=np.int64)
    return union.to_index(old.ids) if len(old) else np.zeros(0, np.int64)


def _union_map(old: IdMap, new: IdMap) -> IdMap:
    """The sorted union of two id maps (old ids keep their order, so old indices map increasingly)."""
    if len(old) and len(new) and old.is_string != new.is_string:
        raise DataError(f"the new {old.kind} ids are {'strings' if new.is_string else 'integers'} but the model's are "
                        f"{'strings' if old.is_string else 'integers'}", source="update")
    if not len(new) or new == old:
        return old
    if len(old) and (old.to_index(new.ids, on_unknown="pad") >= 0).all():  # no new ids: no sort
        return old
    return IdMap(np.union1d(old.ids, new.ids) if len(old) else new.ids, old.kind)


def _check_k(k) -> int:
    return validation.integer("k", k, minimum=1, maximum=limits.MAX_K)


ON_UNKNOWN_ITEMS = ("raise", "ignore")  # unknown item ids in a given history


def check_train(train) -> None:
    """``fit``'s argument: Interactions with at least one interaction (DataError otherwise)."""
    validation.instance("train", train, Interactions, "recsys_fast.Interactions")
    if train.nnz == 0:
        raise DataError(f"cannot fit on empty training data ({train!r}): check the split (e.g. a temporal "
                        "cutoff before the first event) or the filters that produced it")


def _query_ids(name: str, ids) -> np.ndarray:
    """Ids a caller passes (one id or a 1-d sequence) as a 1-d array; a clear error otherwise."""
    if isinstance(ids, (dict, set, frozenset)) or ids is None:
        raise ParameterTypeError(name, validation.type_of(ids), "one id or a sequence of ids")
    try:
        arr = np.atleast_1d(np.asarray(ids))
        if isinstance(ids, (list, tuple)) and arr.dtype.kind == "U" and arr.ndim == 1:
            arr = np.asarray(ids, dtype=object)  # keep 3 an int next to "a", as given
    except (ValueError, TypeError):  # ragged nesting
        raise ParameterTypeError(name, validation.type_of(ids), "one id or a sequence of ids") from None
    if arr.ndim != 1 or arr.dtype.kind not in "iuUOfSb":
        raise ParameterError(name, validation.Shown(f"{arr.ndim}-d {arr.dtype} array"), "one id or a 1-d sequence of ids")
    return arr


def _index_array(name: str, index, n: int) -> np.ndarray:
    """Internal indices (integers in ``[0, n)``) as int64; ParameterError naming the first bad one."""
    arr = np.atleast_1d(np.asarray(index))
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ParameterError(name, validation.Shown(f"{arr.ndim}-d {arr.dtype} array"), "a 1-d array of integer indices")
    bad = (arr < 0) | (arr >= n)
    if bad.any():
        raise ParameterError(name, arr[bad][0], f"indices in [0, {n})")
    return arr.astype(np.int64)


def _plain_id(u):
    return u.item() if isinstance(u, np.generic) else u


def _key(user):
    """A hashable, type-normalised form of an external id (numpy ints and Python ints match)."""
    if isinstance(user, (np.integer,)):
        return int(user)
    if isinstance(user, np.str_):
        return str(user)
    return user
