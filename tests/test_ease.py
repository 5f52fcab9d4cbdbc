"""EASE (closed form, NumPy only): the contract, planted structure, fold-in, the memory guard."""

from __future__ import annotations

import pytest

from recsys_fast import EASE
from recsys_fast.errors import LimitError
from recsys_fast.models.popularity import Popularity
from recsys_fast.testing import RecommenderContract

from tests.fold_in import assert_history_matches_known_user
from tests.neural.conftest import ndcg_at_10, planted_clusters, split_holdout


class TestEASEContract(RecommenderContract):
    def make_model(self):
        return EASE(weight_decay=5.0)


@pytest.fixture(scope="module")
def clusters():
    return split_holdout(planted_clusters())


def test_learns_planted_structure(clusters):
    train, test = clusters
    model = EASE(weight_decay=10.0).fit(train)
    assert ndcg_at_10(model, train, test) > ndcg_at_10(Popularity().fit(train), train, test) + 0.2


def test_history_for_new_user_matches_known_user(clusters):
    train, _ = clusters
    model = EASE(weight_decay=10.0).fit(train)
    assert_history_matches_known_user(model, train)


def test_refuses_large_catalogues(clusters):
    with pytest.raises(LimitError, match=r"EASE items .* is above the limit of max_items=10 \(filter rare items"):
        EASE(max_items=10).fit(clusters[0])


def test_old_parameter_name_names_the_new_one():
    with pytest.raises(TypeError, match="'regularization' was renamed to 'weight_decay'"):
        EASE(regularization=5.0)
    with pytest.raises(ValueError, match="weight_decay must be a finite number > 0.0, got 0"):
        EASE(weight_decay=0)
