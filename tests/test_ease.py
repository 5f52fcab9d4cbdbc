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


def test_weights_are_c_contiguous_and_scores_are_the_closed_form(clusters, tmp_path):
    """B is kept in C order after fit and after load (a Fortran B made every request copy all of
    it), and recommend still ranks by the textbook closed form X B."""
    import numpy as np

    from recsys_fast.models.registry import load

    train, _ = clusters
    model = EASE(weight_decay=10.0).fit(train)
    x = train.matrix.toarray().astype(np.float64)
    x[x != 0] = 1.0
    p = np.linalg.inv(x.T @ x + 10.0 * np.eye(train.n_items))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    expected = x @ b
    loaded = load(model.save(tmp_path / "ease"))
    for m in (model, loaded):
        assert m.weights_.flags["C_CONTIGUOUS"]
        users = m.user_map_.ids[:5]
        recs = m.recommend(users, k=5)
        rows = m.user_map_.to_index(users)
        got = expected[rows[:, None], m.item_map_.to_index(recs.items.ravel()).reshape(recs.items.shape)]
        np.testing.assert_allclose(recs.scores, got, rtol=1e-4, atol=1e-5)
        seen = expected.copy()
        seen[x != 0] = -np.inf
        np.testing.assert_allclose(recs.scores[:, 0], seen[rows].max(axis=1), rtol=1e-4, atol=1e-5)
