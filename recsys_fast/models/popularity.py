"""Popularity: recommend the items with the most (or heaviest) training interactions."""

from __future__ import annotations

import numpy as np

from .. import validation
from ..data.interactions import Interactions
from ..kernels.topk import ranked_topk
from .base import Recommender, RowBatch


class Popularity(Recommender):
    """Scores every item by its number of training users (``weighting="count"``) or the sum of
    its weights (``"sum"``); the same ranking for every user, minus what each has seen.

    Scores users unseen in training too (their history only changes what is excluded).
    """

    kind = "popularity"
    supports_history = True

    def __init__(self, weighting: str = "count"):
        self._init_params(locals())

    def _check_params(self, p: dict) -> dict:
        return {"weighting": validation.choice("weighting", p["weighting"], ("count", "sum"))}

    def _fit(self, train: Interactions) -> None:
        m = train.matrix
        if self.weighting == "count":
            pop = np.bincount(m.indices, minlength=train.n_items).astype(np.float32)
        else:
            pop = np.bincount(m.indices, weights=m.data, minlength=train.n_items).astype(np.float32)
        self.item_scores_ = pop
        self._rank()

    def _update(self, combined, user_pos, item_pos, new_in) -> None:
        """Counts (or weight sums) over old + new interactions: exactly a refit's scores."""
        self._fit(combined)

    def _rank(self) -> None:
        # stable sort on -score: ties keep the lower item index first
        self.order_ = np.argsort(-self.item_scores_, kind="stable").astype(np.int32)

    def _recommend_rows(self, batch: RowBatch, k: int):
        return ranked_topk(self.order_, self.item_scores_[self.order_], len(batch.user_index), k,
                           batch.excl_indptr, batch.excl_indices, batch.allowed)

    def _score_rows(self, batch: RowBatch) -> np.ndarray:
        return np.broadcast_to(self.item_scores_, (len(batch.user_index), len(self.item_scores_)))

    def _get_state(self):
        return {"item_scores": self.item_scores_}

    def _set_state(self, arrays, meta):
        self.item_scores_ = arrays["item_scores"].astype(np.float32)
        self._rank()
