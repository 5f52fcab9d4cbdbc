"""Factor models: score(u, i) = user_factors[u] . item_factors[i] (+ item_bias[i]).

A model whose scores are dot products of user and item vectors (BPRMF, LightGCN, ALS) mixes in
``FactorModel`` (before its base class) and implements ``factors()``; ``recommend``,
``recommend_indices`` (so ``evaluate`` and ``batch.score``) then rank through one path here:
``kernels.factors.factor_topk``, a blocked BLAS sgemm with a parallel Numba top-k and the seen
items excluded, never an n_users x n_items matrix. ``similar_items`` is the cosine of item vectors.
"""

from __future__ import annotations

import numpy as np

from .base import Neighbours, RowBatch, _check_k


class FactorModel:
    """Mixin for dot-product models. Subclasses implement ``factors()``; rows of users known only
    by a ``history=`` (``user_index == -1``) need ``_fold_in(batch)`` giving their user vectors."""

    def factors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(user_factors (n_users, d), item_factors (n_items, d), item_bias (n_items,) or None)``,
        float32, C-contiguous; the fitted model's scoring vectors."""
        raise NotImplementedError

    def _fold_in(self, batch: RowBatch) -> np.ndarray:
        """User vectors (n, d) for the rows of ``batch`` whose user is known only by history."""
        raise NotImplementedError(f"{type(self).__name__} cannot fold in new users")

    def _user_vectors(self, batch: RowBatch, user_factors: np.ndarray) -> np.ndarray:
        rows = batch.user_index
        vectors = user_factors[np.maximum(rows, 0)]
        new = rows < 0
        if new.any() and self.supports_history:  # otherwise -1 rows are unknown users, padded later
            vectors[new] = self._fold_in(batch)[new]
        return vectors

    def _score_rows(self, batch: RowBatch) -> np.ndarray:
        users, items, bias = self.factors()
        scores = self._user_vectors(batch, users) @ items.T
        if bias is not None:
            scores += bias
        return scores

    def _recommend_rows(self, batch: RowBatch, k: int) -> tuple[np.ndarray, np.ndarray]:
        from ..kernels.factors import factor_topk

        users, items, bias = self.factors()
        return factor_topk(self._user_vectors(batch, users), items, k, item_bias=bias,
                           excl_indptr=batch.excl_indptr, excl_indices=batch.excl_indices, allowed=batch.allowed,
                           validate=False)

    def similar_items(self, items, k: int = 10) -> Neighbours:
        """The ``k`` items whose vectors have the highest cosine with each of ``items``' (the item
        itself left out); items with a zero vector have no neighbours (padding)."""
        from ..kernels.factors import factor_topk

        self.check_fitted()
        k = _check_k(k)
        ids = np.atleast_1d(np.asarray(items))
        rows = self.item_map_.to_index(ids) if len(ids) else np.zeros(0, np.int64)
        _, vectors, _ = self.factors()
        norms = np.linalg.norm(vectors, axis=1)
        unit = (vectors / np.where(norms > 0, norms, 1)[:, None]).astype(np.float32)
        unit[norms == 0] = np.nan  # a zero vector has no direction: nothing is similar to it
        excl_indptr = np.arange(len(rows) + 1, dtype=np.int64)
        idx, scores = factor_topk(unit[rows], np.nan_to_num(unit, nan=0.0), k, excl_indptr=excl_indptr,
                                  excl_indices=rows.astype(np.int32), validate=False)
        return Neighbours(query=ids, ids=self.item_map_.to_external(idx), scores=scores)
