"""Neighbourhood models: ItemKNN and UserKNN on the compiled similarity and kNN scoring kernels.

Both build a top-``k`` neighbour graph with ``kernels.similarity.topk_similarity`` (through
``kernels.similarity_update.topk_similarity_reserve``: the same graph, plus the reserve ItemKNN's
``update`` starts from), after an optional TF-IDF or BM25 weighting of the rows being compared, and
score users with ``kernels.knn.knn_topk``: seen items are removed from the candidates, never
returned; when the neighbourhood reaches fewer than the requested number of items,
``fill="popularity"`` continues the list with the most popular remaining items, scored ``base - 1,
base - 2, ...`` with ``base = min(0, the row's lowest neighbourhood score)``, so filled items always
rank below neighbourhood items and keep their popularity order (``fill=None`` pads with -1 / -inf
instead).

Rating prediction (``predict``), mean-centred weighted neighbour average over the stored graph:

- ItemKNN: ``r(u, j) = mu_j + sum_n s(j, n) (r(u, n) - mu_n) / sum_n |s(j, n)|`` over the
  neighbours n of item j that u rated (item means mu);
- UserKNN: ``r(u, j) = mu_u + sum_v s(u, v) (r(v, j) - mu_v) / sum_v |s(u, v)|`` over the
  neighbours v of user u that rated j (user means mu).

With no such neighbour the prediction is the baseline mean (the item's for ItemKNN, the user's
for UserKNN), or the other one, or the global mean when the baseline entity has no training
ratings. Predictions are clipped to the training ratings' range. Ratings are
``train.ratings`` when present, else the matrix values.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .. import threads, validation
from ..data.interactions import Interactions
from ..errors import BundleError, DataError
from ..kernels.csr_merge import merge_csr
from ..kernels.knn import knn_topk, neighbour_average, similar_rows
from ..kernels.similarity import SIMILARITIES, neighbour_index, query_topk_similarity
from ..kernels.similarity_update import (RESERVE_ARRAYS, check_reserve, reindex_reserve, topk_similarity_reserve,
                                          update_topk_similarity)
from ..kernels.weighting import bm25_weight, idf_weights, row_sum_mean, tfidf_weight
from ..data.csr import gather_rows
from .base import Neighbours, Recommender, RowBatch

WEIGHTINGS = (None, "tfidf", "bm25")
FILLS = ("popularity", None)


class _NeighbourhoodModel(Recommender):
    """Shared parameters, fitting and state of ItemKNN and UserKNN."""

    predicts_ratings = True

    _RENAMED = {"K1": "k1", "B": "b"}

    def __init__(self, k: int = 100, similarity: str = "cosine", shrink: float = 0.0, min_support: int = 1,
                 weighting: str | None = None, alpha: float = 0.5, fill: str | None = "popularity",
                 k1: float = 100.0, b: float = 0.8, n_threads: int | None = None, **renamed):
        self._init_params(locals(), renamed)

    def _check_params(self, p: dict) -> dict:
        return {
            "k": validation.integer("k", p["k"], minimum=1),
            "similarity": validation.choice("similarity", p["similarity"], SIMILARITIES),
            "shrink": validation.number("shrink", p["shrink"], minimum=0.0),
            "min_support": validation.integer("min_support", p["min_support"], minimum=1),
            "weighting": validation.choice("weighting", p["weighting"], WEIGHTINGS),
            "alpha": validation.number("alpha", p["alpha"], minimum=0.0, maximum=1.0),
            "fill": validation.choice("fill", p["fill"], FILLS),
            "k1": validation.number("k1", p["k1"], minimum=0.0),
            "b": validation.number("b", p["b"], minimum=0.0, maximum=1.0),
            "n_threads": validation.integer("n_threads", p["n_threads"], minimum=1, allow_none=True),
        }

    # ------------------------------------------------------------------ fitting
    def fit(self, train: Interactions, client=None) -> "_NeighbourhoodModel":
        """Learn the neighbour graph from ``train``; returns self. ``client``: a
        ``dask.distributed.Client`` whose workers build the graph's rows in blocks (extra
        ``dist``); the graph is identical to the local build."""
        self._client = client
        try:
            return super().fit(train)
        finally:
            self._client = None

    # the reserve kept for ``update`` (see ``_update``): this many neighbours after the k of each row
    _RESERVE_EXTRA = 0

    def _fit(self, train: Interactions) -> None:
        rows = _sorted_csr(self._compared_rows(train.matrix))
        with threads.limit(self.n_threads):
            self.graph_ = self._neighbour_graph(rows)
        self._rows = rows if self._keeps_rows() else None
        self.popularity_ = np.bincount(train.matrix.indices, minlength=train.n_items).astype(np.float32)
        ratings = train.matrix.data if train.ratings is None else train.ratings
        self.ratings_ = np.ascontiguousarray(ratings, dtype=np.float32)
        self._derive()

    def _compared_rows(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        """The CSR whose rows are compared: items x users (ItemKNN) or users x items (UserKNN)."""
        raise NotImplementedError

    def _weighted(self, rows: sp.csr_matrix, idf=None, average_length=None) -> np.ndarray:
        """``rows``' values under the model's ``weighting`` (float32; CSR with sorted indices);
        ``idf``/``average_length``: statistics to reuse (fold-in uses the training matrix's)."""
        n_rows, n_cols = rows.shape
        if self.weighting == "tfidf":
            return tfidf_weight(rows.indptr, rows.indices, rows.data, n_rows, n_cols, idf=idf)
        if self.weighting == "bm25":
            return bm25_weight(rows.indptr, rows.indices, rows.data, n_rows, n_cols, k1=self.k1, b=self.b, idf=idf,
                               average_length=average_length)
        return np.asarray(rows.data, dtype=np.float32)

    def _keeps_rows(self) -> bool:
        """Whether the compared rows are kept for ``update`` (ItemKNN: a transposed copy)."""
        return False

    def _neighbour_graph(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        """The graph of ``rows`` (sorted float32 CSR); sets ``_reserve`` (None when not kept)."""
        client = getattr(self, "_client", None)
        n_rows, n_cols = rows.shape
        data = self._weighted(rows)
        opts = dict(similarity=self.similarity, shrink=self.shrink, min_support=self.min_support, alpha=self.alpha,
                    exclude_self=True)
        self._reserve = None
        if client is not None:  # the same rows computed on the workers, stitched in order
            from .distributed import topk_similarity_on_cluster

            indptr, indices, values = topk_similarity_on_cluster(client, rows.indptr, rows.indices, data, n_cols,
                                                                 self.k, **opts)
        else:
            indptr, indices, values, self._reserve = topk_similarity_reserve(
                rows.indptr, rows.indices, data, n_cols, self.k, self._RESERVE_EXTRA, **opts)
        return sp.csr_matrix((values, indices, indptr), shape=(n_rows, n_rows))

    # ------------------------------------------------------------------ the feedback loop
    def _stored_ratings(self):
        return self.ratings_

    def _update(self, combined, user_pos, item_pos, new_in) -> None:
        """The graph of a refit on old + new data, identical to it (same neighbours, same float32
        scores, so the same recommendations), with only what the new events can change recomputed
        (``kernels.similarity_update.update_topk_similarity``). ItemKNN on implicit data (the
        counting path: binary cosine, asymmetric cosine, Jaccard) keeps a reserve of
        ``_RESERVE_EXTRA`` neighbours after the k of each item and updates from it and from the
        pairs the new events create, without rescanning any item's users (new events that only add
        pairs; otherwise, or when their pairs are too many, every row is recomputed with its
        reserve, about one refit). Other cases take the generic path: rows whose weighted, scaled
        values changed are recomputed, and every row sharing a column with them merges in its top-k
        among those rows (a row whose list may have lost a neighbour to the cut is recomputed).
        Weightings that depend on every row (BM25's mean row length; TF-IDF when rows are added)
        change every row, so their update costs about a refit; so does ``similarity="dot"``,
        recomputed in full (its kept values are rescaled after the kernel). A model loaded from a
        bundle without a reserve rebuilds it on its first update. The new graph and reserve are
        written into the old ones' arrays where their layout allows (``overwrite``): a ``graph_``
        taken before the update is not a snapshot of it. ``update_info_`` counts the rows changed,
        merged and recomputed and names the path."""
        old_rows, new_rows, row_pos, col_pos = self._update_rows(combined, user_pos, item_pos, new_in)
        n = new_rows.shape[0]
        same_rows = len(row_pos) == n
        same_cols = len(col_pos) == new_rows.shape[1]
        old_w = self._weighted(old_rows)
        if same_rows and same_cols:
            old = (old_rows.indptr, old_rows.indices, old_w)
        else:
            old = _reindex(old_rows.indptr, old_rows.indices, old_w, row_pos, col_pos, n)
        g = self.graph_
        graph = (g.indptr, g.indices, g.data) if same_rows else _reindex(g.indptr, g.indices, g.data, row_pos,
                                                                           row_pos, n)
        reserve = getattr(self, "_reserve", None)
        if reserve is not None and not same_rows:
            reserve = reindex_reserve(reserve, row_pos, n)
        new_t = self._transposed_structure(combined)
        with threads.limit(self.n_threads):
            indptr, indices, values, info = update_topk_similarity(
                old, old_rows.shape[0], graph, (new_rows.indptr, new_rows.indices, self._weighted(new_rows)),
                new_rows.shape[1], self.k, similarity=self.similarity, shrink=self.shrink,
                min_support=self.min_support, alpha=self.alpha, exclude_self=True, reserve=reserve,
                extra=self._RESERVE_EXTRA, new_t=new_t, overwrite=True,  # the model's own arrays: given up
                validate=False)  # merged from checked data (csr_merge), sorted
        self.graph_ = sp.csr_matrix((values, indices, indptr), shape=(n, n))
        self._reserve = info.pop("reserve")
        self._rows = new_rows if self._keeps_rows() else None
        self.update_info_ = info
        self.popularity_ = self._popularity(combined, new_rows)
        ratings = combined.matrix.data if combined.ratings is None else combined.ratings
        self.ratings_ = np.ascontiguousarray(ratings, dtype=np.float32)
        self.seen_ = combined.matrix  # _derive reads it
        self._derive()

    def _popularity(self, combined, new_rows) -> np.ndarray:
        """Stored entries per item of ``combined`` (float32), as ``_fit`` counts them."""
        return np.bincount(combined.matrix.indices, minlength=combined.n_items).astype(np.float32)

    def _transposed_structure(self, combined):
        """The new compared rows' structure transposed, when it is at hand (ItemKNN: the user x item
        matrix); None otherwise."""
        return None

    def _update_rows(self, combined, user_pos, item_pos, new_in):
        """(old compared rows, new compared rows, new index of each old row, of each old column);
        sorted float32 CSR."""
        raise NotImplementedError

    def _derive(self) -> None:
        """State computed from the saved arrays: the fill order now; the means used by predict on
        first use (``_rating_stats``), so neither fit nor update pays for them."""
        self.fill_order_ = np.argsort(-self.popularity_, kind="stable").astype(np.int32)
        seen = self.seen_
        self._stats = None
        self._by_item = None  # ratings as items x users, built on first UserKNN predict
        # lower bounds of the scored values, so a per-request call does not scan them (knn_topk b_min)
        self._seen_min = float(seen.data.min()) if seen.nnz else 1.0
        self._graph_min = float(self.graph_.data.min()) if self.graph_.nnz else 1.0

    def _rating_stats(self) -> dict:
        """Global mean, rating range, user and item means of the training ratings (built once)."""
        stats = self._stats
        if stats is None:
            seen = self.seen_
            r = self.ratings_.astype(np.float64)
            stats = {"global_mean": float(r.mean()) if len(r) else 0.0,
                     "rating_range": (float(r.min()), float(r.max())) if len(r) else (0.0, 0.0),
                     "user_means": _means(np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr)), r,
                                          seen.shape[0]),
                     "item_means": _means(seen.indices, r, seen.shape[1])}
            self._stats = stats
        return stats

    global_mean_ = property(lambda self: self._rating_stats()["global_mean"], doc="Mean training rating.")
    rating_range_ = property(lambda self: self._rating_stats()["rating_range"], doc="(min, max) training rating.")
    user_means_ = property(lambda self: self._rating_stats()["user_means"], doc="Mean rating per user (NaN: none).")
    item_means_ = property(lambda self: self._rating_stats()["item_means"], doc="Mean rating per item (NaN: none).")

    # ------------------------------------------------------------------ recommending
    def _fill_order(self) -> np.ndarray | None:
        return self.fill_order_ if self.fill == "popularity" else None

    def _neighbours(self, graph: sp.csr_matrix, id_map, ids, k: int) -> Neighbours:
        from .base import _check_k

        self.check_fitted()
        k = _check_k(k)
        ids = np.atleast_1d(np.asarray(ids))
        rows = id_map.to_index(ids) if len(ids) else np.zeros(0, np.int64)
        idx, scores = similar_rows(graph.indptr, graph.indices, graph.data, rows, k)
        return Neighbours(query=ids, ids=id_map.to_external(idx), scores=scores)

    def prepare(self) -> "_NeighbourhoodModel":
        """Compile (or load from the cache) the serial and the parallel scoring kernels and the
        rating kernel, so that neither the first request nor the first batch is the slow one."""
        super().prepare()
        if len(self.user_map_):
            rows = np.zeros(1, dtype=np.int64)
            batch, _ = self._build_rows(self.user_map_.ids[rows], True, None, None, "raise")
            for parallel in (False, True):
                self._recommend_rows_with(batch, 1, parallel)
            self._predict_pairs(rows, rows)
        return self

    def _recommend_rows(self, batch: RowBatch, k: int):
        if self.n_threads is None:
            return self._recommend_rows_with(batch, k, None)
        with threads.limit(self.n_threads):
            return self._recommend_rows_with(batch, k, None)

    def _recommend_rows_with(self, batch: RowBatch, k: int, parallel: bool | None):
        raise NotImplementedError

    def _explanation(self, via: str, id_map, index, weights, sims):
        """The ``explain`` frame shared by the kNN models (and, per component, by Hybrid)."""
        import pandas as pd

        frame = pd.DataFrame({
            "component": self.kind, "via": via,
            "id": id_map.to_external(np.asarray(index, dtype=np.int64)),
            "weight": np.asarray(weights, dtype=np.float32),
            "similarity": np.asarray(sims, dtype=np.float32),
        })
        frame["contribution"] = (frame["weight"].astype(np.float64) * frame["similarity"]).astype(np.float32)
        return frame.sort_values(["contribution", "id"], ascending=[False, True], kind="stable",
                                 ignore_index=True)

    # ------------------------------------------------------------------ ratings
    def _finish_prediction(self, pred, found, base_index, base_means, other_index, other_means):
        """Apply the documented fallbacks (baseline mean, other mean, global mean) and clip."""
        base = base_means[base_index]
        other = other_means[other_index]
        fallback = np.where(np.isnan(base), np.where(np.isnan(other), self.global_mean_, other), base)
        out = np.where(found, pred, fallback)
        return np.clip(out, *self.rating_range_).astype(np.float32)

    # ------------------------------------------------------------------ persistence
    def _get_state(self):
        g = self.graph_
        state = {"graph_indptr": g.indptr.astype(np.int64), "graph_indices": g.indices.astype(np.int32),
                 "graph_data": g.data.astype(np.float32), "popularity": self.popularity_, "ratings": self.ratings_}
        reserve = getattr(self, "_reserve", None)
        if reserve is not None:  # so that the first update after loading takes the reserve path
            state["reserve_extra"] = np.array([reserve["extra"]], dtype=np.int64)
            state.update({f"reserve_{name}": reserve[name] for name in RESERVE_ARRAYS})
        return state

    def _set_state(self, arrays, meta):
        n = len(arrays["graph_indptr"]) - 1
        self.graph_ = sp.csr_matrix((arrays["graph_data"], arrays["graph_indices"], arrays["graph_indptr"]),
                                    shape=(n, n))
        self.popularity_ = arrays["popularity"].astype(np.float32)
        self.ratings_ = arrays["ratings"].astype(np.float32)
        self._reserve = None  # bundles written before the reserve existed: rebuilt on the first update
        if "reserve_extra" in arrays:
            reserve = {"extra": int(arrays["reserve_extra"][0]),
                       **{name: arrays[f"reserve_{name}"] for name in RESERVE_ARRAYS}}
            try:
                self._reserve = check_reserve(reserve, n, "bundle")
            except DataError as exc:
                raise BundleError(f"the stored update reserve does not fit the graph: {exc}") from None
        self._rows = None
        self._derive()


class ItemKNN(_NeighbourhoodModel):
    """Item-based k nearest neighbours (Sarwar et al. 2001; implicit's ItemItemRecommender).

    ``k`` neighbours other than the item itself are kept per item, by ``similarity`` ("cosine",
    "jaccard", "asymmetric_cosine" with ``alpha``, "pearson", "adjusted_cosine", or "dot": the plain
    dot product, as implicit's BM25Recommender uses) computed over the items' user vectors after
    ``weighting`` (None, "tfidf", or "bm25" with ``k1``, ``b``), with ``shrink`` and
    ``min_support`` (minimum co-count). implicit's ``K`` counts the item itself, so its ``K=n``
    corresponds to ``k=n-1`` here. A user's score for item j is
    ``sum_i w(u, i) s(i, j)`` over the user's items i whose neighbours include j, with w the
    training weights (1 for items given as ``history=``). See the module docstring for the fill
    policy and ``predict``.

    New users are scored from ``recommend(..., history={user: [items]})`` without refitting
    (fold-in, each item weight 1).
    """

    kind = "item_knn"
    supports_history = True

    def _compared_rows(self, matrix):
        return matrix.T.tocsr()

    _RESERVE_EXTRA = 32

    def _keeps_rows(self) -> bool:
        return True

    def _update_rows(self, combined, user_pos, item_pos, new_in):
        old = getattr(self, "_rows", None)
        if old is None:  # loaded from a bundle: built once
            old = _sorted_csr(self._compared_rows(self.seen_))
        # the new events merged into the kept items x users rows (linear), not a transpose of everything
        events = _sorted_csr(self._compared_rows(new_in.matrix))
        indptr, indices, data, _, _ = merge_csr((old.indptr, old.indices, old.data), item_pos, user_pos,
                                                (events.indptr, events.indices, events.data), combined.n_users,
                                                getattr(self, "_update_duplicates", "last"))
        new = sp.csr_matrix((data, indices, indptr), shape=(combined.n_items, combined.n_users))
        new.has_sorted_indices = True
        return old, new, item_pos, user_pos

    def _transposed_structure(self, combined):
        m = combined.matrix
        return m.indptr, m.indices

    def _popularity(self, combined, new_rows) -> np.ndarray:
        return np.diff(new_rows.indptr).astype(np.float32)  # the items x users rows: entries per item

    def _derive(self) -> None:
        super()._derive()
        # Scoring runs on a copy of the graph with items numbered by popularity (rows and columns):
        # the rows most histories read, and the accumulator entries most scatter-adds hit, are then
        # contiguous, which saves cache and TLB misses on large catalogues (about a quarter of the
        # time at 300k x 50k x 10M). The kernel maps results back (``labels``), ties included, so
        # the output is identical to scoring the graph as fitted.
        # Built on first use (``_ranked``), so that fit and update do not pay for it.
        self._ranking = None

    def _ranked(self):
        """(rank of each item, the graph renumbered by rank, the fill order in ranks)."""
        ranking = self._ranking
        if ranking is None:
            order = self.fill_order_
            rank_of = np.empty(len(order), dtype=np.int32)
            rank_of[order] = np.arange(len(order), dtype=np.int32)
            g = self.graph_
            indptr, indices, data = gather_rows(g.indptr, g.indices, g.data, order)
            ranking = (rank_of, (indptr, rank_of[indices], data), np.arange(len(order), dtype=np.int32))
            self._ranking = ranking
        return ranking

    def _recommend_rows_with(self, batch: RowBatch, k: int, parallel: bool | None):
        rank, ranked_graph, ranked_fill = self._ranked()
        allowed = batch.allowed[self.fill_order_] if len(batch.allowed) else batch.allowed
        hist = rank[batch.hist_indices]
        excl = hist if batch.excl_indices is batch.hist_indices else rank[batch.excl_indices]
        return knn_topk(batch.hist_indptr, hist, batch.hist_data, *ranked_graph,
                        self.n_items, k, batch.excl_indptr, excl, allowed,
                        ranked_fill if self.fill == "popularity" else None, labels=self.fill_order_,
                        parallel=parallel, validate=False, b_min=self._graph_min)

    def similar_items(self, items, k: int = 10) -> Neighbours:
        """The ``k`` most similar items of each of ``items`` (at most the fitted ``k`` are stored)."""
        self.check_fitted()
        return self._neighbours(self.graph_, self.item_map_, items, k)

    def _predict_pairs(self, user_index, item_index):
        seen = self.seen_
        pred, found = neighbour_average(item_index, user_index, self.graph_.indptr, self.graph_.indices,
                                        self.graph_.data, seen.indptr, seen.indices, self.ratings_,
                                        self.item_means_, self.item_means_)
        return self._finish_prediction(pred, found, item_index, self.item_means_, user_index, self.user_means_)

    def explain(self, user, item, history=None):
        """Why ``item`` scores what it does for ``user`` ("because you liked ..."): the user's
        training items (or the given ``history``) i whose neighbours include ``item``, with
        ``weight`` w(u, i), ``similarity`` s(i, item) and ``contribution`` w * s, largest first;
        the contributions sum to the neighbourhood score ``recommend`` gives the item. Returns a
        DataFrame with columns component (the model kind), via ("item"), id (the user's item),
        weight, similarity, contribution; empty when no neighbour contributed (a filled item).
        """
        self.check_fitted()
        j = int(self.item_map_.to_index([item])[0])
        if history is not None:
            h_items = self.item_map_.to_index(np.atleast_1d(np.asarray(history)), on_unknown="pad")
            h_items = h_items[h_items >= 0]
            h_weights = np.ones(len(h_items), dtype=np.float32)
        else:
            u = int(self.user_map_.to_index([user])[0])
            lo, hi = self.seen_.indptr[u], self.seen_.indptr[u + 1]
            h_items, h_weights = self.seen_.indices[lo:hi], self.seen_.data[lo:hi]
        g = self.graph_
        items, weights, sims = [], [], []
        for i, w in zip(h_items.tolist(), h_weights.tolist()):
            lo, hi = g.indptr[i], g.indptr[i + 1]
            hit = np.flatnonzero(g.indices[lo:hi] == j)
            if len(hit):
                items.append(i)
                weights.append(w)
                sims.append(float(g.data[lo + hit[0]]))
        return self._explanation("item", self.item_map_, items, weights, sims)


class UserKNN(_NeighbourhoodModel):
    """User-based k nearest neighbours: a user's score for item j is ``sum_v s(u, v) w(v, j)`` over
    the user's ``k`` most similar training users v (same options as ItemKNN, computed over the
    users' item vectors, so "tfidf"/"bm25" down-weight popular items).

    Users unseen in training are folded in from ``recommend(..., history={user: [items]})``: their
    similarity to every training user is computed on the fly with the fitted options (each given
    item weighted 1; TF-IDF/BM25 and ``adjusted_cosine`` use the training statistics), the top
    ``k`` kept, and they are scored like a training user. No refit, and the training graph does not
    change. A training user given a ``history=`` is folded in the same way from that history
    (its own training row counts as one of the training users it is compared with).
    Unknown users without a history raise ``UnknownIdError`` (``on_unknown="pad"``: padded row);
    ``predict`` covers training users only.
    """

    kind = "user_knn"
    supports_history = True

    def _compared_rows(self, matrix):
        return matrix

    def _update_rows(self, combined, user_pos, item_pos, new_in):
        return _sorted_csr(self.seen_), _sorted_csr(combined.matrix), user_pos, item_pos

    def _recommend_rows_with(self, batch: RowBatch, k: int, parallel: bool | None):
        g = self.graph_
        a = gather_rows(g.indptr, g.indices, g.data, batch.user_index)
        folded = np.flatnonzero((batch.user_index < 0) & (np.diff(batch.hist_indptr) > 0))
        if len(folded):
            a = self._with_folded_rows(a, folded, batch)
        seen = self.seen_
        return knn_topk(*a, seen.indptr, seen.indices, seen.data, self.n_items, k,
                        batch.excl_indptr, batch.excl_indices, batch.allowed, self._fill_order(),
                        parallel=parallel, validate=False, b_min=self._seen_min)

    def similar_users(self, users, k: int = 10) -> Neighbours:
        """The ``k`` most similar training users of each of ``users`` (at most the fitted ``k``)."""
        self.check_fitted()
        return self._neighbours(self.graph_, self.user_map_, users, k)

    def explain(self, user, item, history=None):
        """Why ``item`` scores what it does for ``user``: the user's neighbours v (fitted, or
        folded in from the given ``history``) who interacted with ``item``, with ``similarity``
        s(u, v), ``weight`` w(v, item) and ``contribution`` s * w, largest first; they sum to the
        score ``recommend`` gives the item. Same columns as ``ItemKNN.explain``, via "user" and
        id the neighbour's user id."""
        self.check_fitted()
        j = int(self.item_map_.to_index([item])[0])
        if history is not None:
            h = self.item_map_.to_index(np.atleast_1d(np.asarray(history)), on_unknown="pad")
            h = h[h >= 0].astype(np.int32)
            ptr, nbrs, sims = self.fold_in(np.array([0, len(h)], np.int64), h, np.ones(len(h), np.float32), self.k)
        else:
            u = int(self.user_map_.to_index([user])[0])
            g = self.graph_
            nbrs, sims = g.indices[g.indptr[u]:g.indptr[u + 1]], g.data[g.indptr[u]:g.indptr[u + 1]]
        seen = self.seen_
        users, weights, kept = [], [], []
        for v, s in zip(nbrs.tolist(), sims.tolist()):
            lo, hi = seen.indptr[v], seen.indptr[v + 1]
            hit = np.flatnonzero(seen.indices[lo:hi] == j)
            if len(hit):
                users.append(v)
                weights.append(float(seen.data[lo + hit[0]]))
                kept.append(s)
        return self._explanation("user", self.user_map_, users, weights, kept)

    # ------------------------------------------------------------------ fold-in
    def _with_folded_rows(self, a, folded, batch):
        """Rows ``a`` with rows ``folded`` replaced by the fold-in of their histories."""
        sub = gather_rows(batch.hist_indptr, batch.hist_indices, batch.hist_data, folded)
        f_indptr, f_indices, f_data = self.fold_in(sub[0], sub[1], np.ones(len(sub[1]), np.float32), self.k)
        a_indptr, a_indices, a_data = a
        n = len(a_indptr) - 1
        stacked = (np.concatenate([a_indptr, a_indptr[-1] + f_indptr[1:]]), np.concatenate([a_indices, f_indices]),
                   np.concatenate([a_data, f_data]))
        pick = np.arange(n, dtype=np.int64)
        pick[folded] = n + np.arange(len(folded))
        return gather_rows(*stacked, pick)

    def fold_in(self, indptr, indices, data, k: int):
        """Top-``k`` training users most similar to each given row (CSR over items, internal
        indices), by the rules and kernel of the fitted graph (``query_topk_similarity``): the
        similarity, weighting, shrink and min_support; weighting and centring statistics come from
        the training data. Returns CSR (indptr, indices, data)."""
        st = self._fold_state()
        x = sp.csr_matrix((np.asarray(data, np.float32), indices, indptr), shape=(len(indptr) - 1, self.n_items))
        x.sum_duplicates()
        if self.weighting is not None:
            x.data = self._weighted(x, idf=st["idf"], average_length=st["average_length"])
        return query_topk_similarity(st["index"], x.indptr, x.indices, x.data, k, shrink=self.shrink,
                                     min_support=self.min_support)

    def _fold_state(self) -> dict:
        """The training users as ``query_topk_similarity`` searches them, and the weighting
        statistics new rows are weighted with; built once."""
        if getattr(self, "_fold", None) is not None:
            return self._fold
        seen = sp.csr_matrix(self.seen_, dtype=np.float32)
        seen.sort_indices()
        n_users, n_items = seen.shape
        stats = {"idf": idf_weights(seen.indptr, seen.indices, n_users, n_items),
                 "average_length": row_sum_mean(seen.indptr, seen.data)}
        values = self._weighted(seen, **stats) if self.weighting is not None else seen.data
        index = neighbour_index(seen.indptr, seen.indices, values, n_items, self.similarity, self.alpha)
        self._fold = {**stats, "index": index}
        return self._fold

    def _derive(self) -> None:
        super()._derive()
        self._fold = None

    def _predict_pairs(self, user_index, item_index):
        if self._by_item is None:
            seen = self.seen_
            by_item = sp.csr_matrix((self.ratings_, seen.indices, seen.indptr), shape=seen.shape).T.tocsr()
            by_item.sort_indices()
            self._by_item = by_item
        t = self._by_item
        pred, found = neighbour_average(user_index, item_index, self.graph_.indptr, self.graph_.indices,
                                        self.graph_.data, t.indptr, t.indices, t.data,
                                        self.user_means_, self.user_means_)
        return self._finish_prediction(pred, found, user_index, self.user_means_, item_index, self.item_means_)


def _sorted_csr(m) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float32)
    m.sort_indices()
    return m


def _reindex(indptr, indices, data, row_pos, col_pos, n_rows: int):
    """A CSR's rows moved to ``row_pos`` (increasing) of ``n_rows`` rows, its columns renamed by
    ``col_pos``; entries keep their order. Returns CSR arrays."""
    lens = np.zeros(n_rows, dtype=np.int64)
    lens[row_pos] = np.diff(indptr)
    out_ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(lens, out=out_ptr[1:])
    return out_ptr, np.asarray(col_pos)[indices].astype(np.int32), np.asarray(data, dtype=np.float32)


def _means(groups: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``values`` per group (float64); NaN for groups without values."""
    total = np.bincount(groups, weights=values, minlength=n)
    count = np.bincount(groups, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
