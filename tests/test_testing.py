"""The contract suite itself: its known answer fails recommenders that ignore their data."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_fast.models.base import Recommender
from recsys_fast.models.popularity import Popularity
from recsys_fast.testing import RecommenderContract, contract_data, planted_group, planted_group_share


class RandomScores(Recommender):
    """Ignores the training data: each user's scores are a fixed random vector (by user index)."""

    kind = "random_scores"

    def __init__(self, seed: int = 0):
        self._init_params(locals())

    def _check_params(self, p: dict) -> dict:
        return p

    def _fit(self, train):
        pass

    def _score_rows(self, batch):
        return np.stack([np.random.default_rng([self.seed, int(u) + 1]).random(self.n_items, dtype=np.float32)
                         for u in batch.user_index]).reshape(len(batch.user_index), self.n_items)


class ConstantScores(RandomScores):
    """Ignores the training data: every item scores 0 (ties: lower item index first)."""

    kind = "constant_scores"

    def _score_rows(self, batch):
        return np.zeros((len(batch.user_index), self.n_items), dtype=np.float32)


class _Suite(RecommenderContract):
    model_class = RandomScores

    def make_model(self):
        return self.model_class()


@pytest.fixture(scope="module")
def data():
    s = RecommenderContract
    return contract_data(n_users=s.N_USERS, n_items=s.N_ITEMS, n_groups=s.N_GROUPS)


@pytest.mark.parametrize("model_class", [RandomScores, ConstantScores, Popularity])
def test_data_ignoring_recommender_fails_the_contract(model_class, data):
    suite = _Suite()
    suite.model_class = model_class
    fitted = suite.fit_model(suite.make_model(), data)
    # the bookkeeping half of the contract cannot tell it from a real model ...
    suite.test_single_user(fitted, data)
    suite.test_batch_equals_single(fitted, data)
    suite.test_excludes_seen(fitted, data)
    suite.test_exactly_min_k_unseen(fitted, data)
    # ... the planted taste groups do
    with pytest.raises(AssertionError, match="of a user's top-3 come from its own taste group"):
        suite.test_planted_groups(fitted, data)
    assert planted_group_share(fitted, data).mean() < 0.5


def test_planted_groups_are_what_the_data_says(data):
    m = data.matrix
    users, items = data.user_map.ids, data.item_map.ids
    own = planted_group(users, 30, 3)
    item_group = planted_group(items, 30, 3)
    assert sorted(set(own.tolist())) == [0, 1, 2] and sorted(set(item_group.tolist())) == [0, 1, 2]
    in_group = [np.mean(item_group[m.indices[m.indptr[r]:m.indptr[r + 1]]] == own[r]) for r in range(len(users))]
    assert np.mean(in_group) > 0.85  # mostly the group's items, a little noise
    assert planted_group(np.array(["i100", "i129", ""]), 30, 3).tolist() == [0, 2, -1]
