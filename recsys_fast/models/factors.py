"""Factor models: score(u, i) = user_factors[u] . item_factors[i] (+ item_bias[i]).

A model whose scores are dot products of user and item vectors (BPRMF, LightGCN, ALS) mixes in
``FactorModel`` and implements ``factors()``; scoring for ``recommend``, ``evaluate``, batch
scoring and the serving runtime then goes through one path here.
"""

from __future__ import annotations

import numpy as np

from .base import RowBatch


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
        if new.any():
            vectors[new] = self._fold_in(batch)[new]
        return vectors

    def _score_rows(self, batch: RowBatch) -> np.ndarray:
        users, items, bias = self.factors()
        scores = self._user_vectors(batch, users) @ items.T
        if bias is not None:
            scores += bias
        return scores
