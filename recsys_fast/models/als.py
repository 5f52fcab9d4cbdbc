"""ALS: implicit-feedback matrix factorisation by alternating least squares (Hu, Koren and
Volinsky 2008; the iALS of Rendle et al. 2022), on the Numba kernels of ``kernels.als``.
NumPy only, no torch."""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from .. import threads, validation
from ..data.csr import gather_rows
from ..data.interactions import Interactions
from .base import Neighbours, Recommender, RowBatch, _check_k
from .factors import FactorModel


class ALS(FactorModel, Recommender):
    """score(u, i) = user_factors[u] . item_factors[i], fitted to every (user, item) cell with
    preference 1 on the interactions and 0 elsewhere, weighted by confidence ``1 + alpha *
    weight`` on the interactions (the ``Interactions`` weights: pass binary data for presence
    only) and 1 elsewhere, plus ``weight_decay * |x|^2`` per row.

    Each of ``epochs`` sweeps solves every user row given the items, then every item row given
    the users, by ``cg_steps`` conjugate-gradient steps from the current row (``cg_steps >=
    embedding_size`` is the exact solve). Rows start as seeded N(0, 0.01^2) draws; ``n_threads``
    bounds the parallel threads (None: the pools as they are). With one thread a seed gives the
    same model bit for bit; the rows are independent, so more threads give the same result too.

    New users are scored from a ``history=`` by one exact least-squares solve against the item
    factors (``supports_history``), which is what the user half-step converges to.
    ``similar_items`` ranks items by the cosine of their factors. Parameter names follow the
    library's vocabulary (implicit's ``factors``, ``regularization`` and ``iterations`` are
    ``embedding_size``, ``weight_decay`` and ``epochs``; the old spellings raise naming the new).
    After ``fit``: ``training_log_`` lists the wall and CPU seconds of each epoch.
    """

    kind = "als"
    supports_history = True
    _RENAMED = {"factors": "embedding_size", "regularization": "weight_decay", "iterations": "epochs"}

    def __init__(self, embedding_size: int = 64, weight_decay: float = 70.0, alpha: float = 3.0, epochs: int = 15,
                 cg_steps: int = 3, seed: int | None = 0, n_threads: int | None = None, **renamed):
        self._init_params(locals(), renamed)

    def _check_params(self, p: dict) -> dict:
        v = validation
        return {
            "embedding_size": v.integer("embedding_size", p["embedding_size"], minimum=1),
            "weight_decay": v.number("weight_decay", p["weight_decay"], minimum=0.0, min_inclusive=False),
            "alpha": v.number("alpha", p["alpha"], minimum=0.0),
            "epochs": v.integer("epochs", p["epochs"], minimum=1),
            "cg_steps": v.integer("cg_steps", p["cg_steps"], minimum=1),
            "seed": v.integer("seed", p["seed"], minimum=0, allow_none=True),
            "n_threads": v.integer("n_threads", p["n_threads"], minimum=1, allow_none=True),
        }

    # ------------------------------------------------------------------ fitting
    def _fit(self, train: Interactions) -> None:
        from ..kernels.als import cg_half_step

        by_user = sp.csr_matrix(train.matrix, dtype=np.float32, copy=True)
        by_user.sum_duplicates()
        by_user.sort_indices()
        by_user.data *= np.float32(self.alpha)
        by_item = by_user.T.tocsr()
        by_item.sort_indices()
        rng = np.random.default_rng(0 if self.seed is None else self.seed)
        d = self.embedding_size
        users = (rng.standard_normal((train.n_users, d)) * 0.01).astype(np.float32)
        items = (rng.standard_normal((train.n_items, d)) * 0.01).astype(np.float32)
        log = []
        with threads.limit(self.n_threads):
            for epoch in range(self.epochs):
                started, cpu_started = time.perf_counter(), time.process_time()
                cg_half_step(users, items, self.weight_decay, by_user.indptr, by_user.indices, by_user.data,
                             self.cg_steps)
                cg_half_step(items, users, self.weight_decay, by_item.indptr, by_item.indices, by_item.data,
                             self.cg_steps)
                log.append({"epoch": epoch + 1, "seconds": time.perf_counter() - started,
                            "cpu_seconds": time.process_time() - cpu_started})
        self.user_factors_, self.item_factors_ = users, items
        self.training_log_ = log

    def factors(self):
        self.check_fitted()
        return self.user_factors_, self.item_factors_, None

    def _fold_in(self, batch: RowBatch) -> np.ndarray:
        """The exact least-squares user vector of the history of each row with ``user_index == -1``."""
        from ..kernels.als import solve_rows

        new = np.flatnonzero(batch.user_index < 0)
        indptr, indices, data = gather_rows(batch.hist_indptr, batch.hist_indices, batch.hist_data, new)
        out = np.zeros((len(batch.user_index), self.embedding_size), dtype=np.float32)
        out[new] = solve_rows(self.item_factors_, self.weight_decay, indptr, indices,
                              np.asarray(data, dtype=np.float32) * np.float32(self.alpha))
        return out

    # ------------------------------------------------------------------ neighbours
    def similar_items(self, items, k: int = 10) -> Neighbours:
        """The ``k`` items whose factors have the highest cosine with each of ``items`` (itself excluded)."""
        from ..kernels.topk import dense_topk

        self.check_fitted()
        k = _check_k(k)
        ids = np.atleast_1d(np.asarray(items))
        rows = self.item_map_.to_index(ids) if len(ids) else np.zeros(0, np.int64)
        norms = np.linalg.norm(self.item_factors_, axis=1)
        unit = self.item_factors_ / np.maximum(norms, 1e-12)[:, None]
        scores = np.ascontiguousarray(unit[rows] @ unit.T, dtype=np.float32)
        idx, top = dense_topk(scores, k, np.arange(len(rows) + 1, dtype=np.int64), rows.astype(np.int32),
                              np.zeros(0, dtype=np.bool_))
        return Neighbours(query=ids, ids=self.item_map_.to_external(idx), scores=top)

    # ------------------------------------------------------------------ persistence
    def _get_state(self):
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _get_meta(self):
        return {"training_log": self.training_log_}

    def _set_state(self, arrays, meta):
        self.user_factors_ = np.ascontiguousarray(arrays["user_factors"], dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(arrays["item_factors"], dtype=np.float32)
        self.training_log_ = meta.get("training_log", [])
