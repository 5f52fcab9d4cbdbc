"""ALS (implicit feedback, CG solver in Numba): the kernels against the closed-form solve, the
contract, planted structure, fold-in, similar items, parameters."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_fast import ALS
from recsys_fast.errors import ParameterError
from recsys_fast.kernels.als import cg_half_step, solve_rows
from recsys_fast.models.popularity import Popularity
from recsys_fast.testing import RecommenderContract

from tests.neural.conftest import ndcg_at_10, planted_clusters, split_holdout


def closed_form(Y, reg, matrix):
    """Textbook HKV row solve: (Y^T C_u Y + reg I)^-1 Y^T C_u p_u with dense C_u, p_u (float64)."""
    Y = Y.astype(np.float64)
    out = np.zeros((matrix.shape[0], Y.shape[1]))
    for u in range(matrix.shape[0]):
        c = np.ones(Y.shape[0])
        p = np.zeros(Y.shape[0])
        row = matrix[u]
        c[row.indices] += row.data
        p[row.indices] = 1.0
        out[u] = np.linalg.solve(Y.T @ (c[:, None] * Y) + reg * np.eye(Y.shape[1]), Y.T @ (c * p))
    return out


@pytest.fixture
def problem():
    rng = np.random.default_rng(3)
    m = sp.random(40, 25, density=0.2, random_state=4, format="csr", dtype=np.float32)
    m.data = (m.data * 4).astype(np.float32)
    m.data[m.indptr[5]:m.indptr[6]] = 0  # an empty row
    m.eliminate_zeros()
    m.sort_indices()
    return m, rng.standard_normal((25, 6)).astype(np.float32)


def test_exact_solve_matches_closed_form(problem):
    m, Y = problem
    got = solve_rows(Y, 0.3, m.indptr, m.indices, m.data)
    np.testing.assert_allclose(got, closed_form(Y, 0.3, m), rtol=1e-4, atol=1e-5)
    assert np.all(got[5] == 0)


def test_cg_converges_to_the_closed_form(problem):
    m, Y = problem
    ref = closed_form(Y, 0.3, m)
    X = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    start_err = np.abs(X - ref).max()
    few = X.copy()
    cg_half_step(few, Y, 0.3, m.indptr, m.indices, m.data, cg_steps=2)
    assert np.abs(few - ref).max() < start_err  # a few steps move towards the solution
    cg_half_step(X, Y, 0.3, m.indptr, m.indices, m.data, cg_steps=12)  # >= d steps: exact in exact arithmetic
    np.testing.assert_allclose(X, ref, rtol=1e-3, atol=1e-4)


def test_kernels_reject_bad_input(problem):
    m, Y = problem
    with pytest.raises(ValueError, match="float32"):
        solve_rows(Y.astype(np.float64), 0.3, m.indptr, m.indices, m.data)
    with pytest.raises(ValueError, match="rows"):
        cg_half_step(np.zeros((3, 6), np.float32), Y, 0.3, m.indptr, m.indices, m.data)


class TestALSContract(RecommenderContract):
    def make_model(self):
        return ALS(embedding_size=8, weight_decay=1.0, alpha=2.0, epochs=5, n_threads=1)


@pytest.fixture(scope="module")
def clusters():
    return split_holdout(planted_clusters())


@pytest.fixture(scope="module")
def fitted(clusters):
    return ALS(embedding_size=16, weight_decay=1.0, alpha=5.0, epochs=10, n_threads=1).fit(clusters[0])


def test_learns_planted_structure(clusters, fitted):
    train, test = clusters
    assert ndcg_at_10(fitted, train, test) > ndcg_at_10(Popularity().fit(train), train, test) + 0.2


def test_final_item_step_is_the_exact_solve(clusters):
    """With cg_steps >= embedding_size each half-step is the least-squares solve: the item factors
    solve the items' rows given the user factors."""
    train, _ = clusters
    model = ALS(embedding_size=6, weight_decay=0.5, alpha=3.0, epochs=3, cg_steps=12, n_threads=1).fit(train)
    by_item = sp.csr_matrix(train.matrix.T, dtype=np.float32) * 3.0
    ref = closed_form(model.user_factors_, 0.5, sp.csr_matrix(by_item))
    np.testing.assert_allclose(model.item_factors_, ref, rtol=1e-3, atol=1e-4)


def test_fold_in_is_the_least_squares_solve(clusters, fitted):
    train, _ = clusters
    items = train.item_map.ids[[1, 5, 9, 13]]
    recs = fitted.recommend(["newcomer"], k=train.n_items, history={"newcomer": items}, exclude_seen=False)
    row = sp.csr_matrix((np.full(4, fitted.alpha, np.float32), [1, 5, 9, 13], [0, 4]), shape=(1, train.n_items))
    x = closed_form(fitted.item_factors_, fitted.weight_decay, row)[0]
    expected = fitted.item_factors_.astype(np.float64) @ x
    idx = train.item_map.to_index(recs.items[0])
    np.testing.assert_allclose(recs.scores[0], expected[idx], rtol=1e-4, atol=1e-5)


def test_same_seed_same_model_any_thread_count(clusters):
    train, _ = clusters
    a = ALS(embedding_size=8, epochs=3, seed=4, n_threads=1).fit(train)
    b = ALS(embedding_size=8, epochs=3, seed=4, n_threads=2).fit(train)
    c = ALS(embedding_size=8, epochs=3, seed=5, n_threads=1).fit(train)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    assert not np.array_equal(a.user_factors_, c.user_factors_)
    assert [r["epoch"] for r in a.training_log_] == [1, 2, 3]


def test_similar_items_by_factor_cosine(clusters, fitted):
    train, _ = clusters
    q = train.item_map.ids[[0, 7]]
    nb = fitted.similar_items(q, k=5)
    assert nb.ids.shape == (2, 5)
    unit = fitted.item_factors_ / np.linalg.norm(fitted.item_factors_, axis=1, keepdims=True)
    for r, item in enumerate(q):
        assert item not in nb.ids[r]
        cos = unit @ unit[train.item_map.to_index([item])[0]]
        cos[train.item_map.to_index([item])[0]] = -np.inf
        np.testing.assert_allclose(nb.scores[r], np.sort(cos)[::-1][:5], rtol=1e-5, atol=1e-6)
    # planted clusters: items i and i + 4 share a cluster, and the nearest items are in it
    assert np.all(train.item_map.to_index(nb.ids[0]) % 4 == 0)


def test_parameters_validated_and_old_names_refused():
    with pytest.raises(ParameterError, match="embedding_size"):
        ALS(embedding_size=0)
    with pytest.raises(ParameterError, match="weight_decay"):
        ALS(weight_decay=-1.0)
    with pytest.raises(TypeError, match="'factors' was renamed to 'embedding_size'"):
        ALS(factors=64)
    with pytest.raises(TypeError, match="'iterations' was renamed to 'epochs'"):
        ALS(iterations=15)
    model = ALS().set_params(alpha=4.0, epochs=2)
    assert model.get_params()["alpha"] == 4.0 and model.epochs == 2
    with pytest.raises(ParameterError, match="cg_steps"):
        model.set_params(cg_steps=0)
