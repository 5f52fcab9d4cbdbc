"""Metric kernels against the plain references in tests/reference.py, on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_fast import threads
from recsys_fast.errors import ParameterError
from recsys_fast.evaluation import RANKING_METRICS, coverage, ranking_metrics, rating_errors
from recsys_fast.evaluation.metrics import check_ks, check_metrics, ranking_metrics_array
from tests.reference import METRIC_REFERENCES, coverage_reference, rating_errors_reference


@st.composite
def ranking_case(draw):
    """Recommendations (with -1 padding, empty rows, optional repeats), test sets and cutoffs.

    The catalogue may be smaller than K (k > catalogue), test sets may have one item or none.
    """
    n_items = draw(st.integers(1, 12))
    n_users = draw(st.integers(0, 6))
    width = draw(st.integers(1, 15))
    repeats = draw(st.booleans())
    recs = np.full((n_users, width), -1, dtype=np.int32)
    tests = []
    for u in range(n_users):
        length = draw(st.integers(0, width))
        if repeats:
            row = draw(st.lists(st.integers(0, n_items - 1), min_size=length, max_size=length))
        else:
            row = draw(st.permutations(range(n_items)))[:length]
        recs[u, :len(row)] = row
        tests.append(sorted(draw(st.sets(st.integers(0, n_items - 1), max_size=n_items))))
    ks = draw(st.lists(st.integers(1, width), min_size=1, max_size=4))
    return recs, tests, ks, n_items


def _check_against_reference(recs, tests, ks):
    got = ranking_metrics(recs, tests, ks)
    for u, test in enumerate(tests):
        for k in sorted(set(ks)):
            for name in RANKING_METRICS:
                value = got[f"{name}@{k}"][u]
                if not test:
                    assert np.isnan(value), (name, k, u)
                    continue
                want = METRIC_REFERENCES[name](recs[u], set(test), k)
                assert value == pytest.approx(want, rel=1e-12, abs=1e-15), (name, k, recs[u], test)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ranking_case())
def test_ranking_metrics_match_reference(case):
    recs, tests, ks, _ = case
    _check_against_reference(recs, tests, ks)


@settings(max_examples=60, deadline=None)
@given(ranking_case())
def test_coverage_matches_reference(case):
    recs, _, ks, n_items = case
    for k in ks:
        assert coverage(recs, n_items, k) == pytest.approx(coverage_reference(recs, n_items, k))


def test_edge_cases_single_test_item_padding_and_misses():
    recs = np.array([
        [3, 1, 2, -1, -1],      # one test item at rank 2, padding after the catalogue ran out
        [-1, -1, -1, -1, -1],   # empty recommendation row
        [5, 6, 7, 8, 9],        # test items absent from the recommendations
        [2, 2, 4, -1, -1],      # a repeated hit counts once
    ], dtype=np.int32)
    tests = [[1], [0, 1], [0, 1, 2], [2, 4]]
    _check_against_reference(recs, tests, [1, 2, 5])
    got = ranking_metrics(recs, tests, 5)
    # spot checks a reader can verify by hand against the formulas
    assert got["precision@5"][0] == pytest.approx(1 / 5)
    assert got["mrr@5"][0] == pytest.approx(1 / 2)
    assert got["ndcg@5"][0] == pytest.approx(1 / np.log2(3))
    assert got["hit_rate@5"][1] == 0.0 and got["recall@5"][2] == 0.0 and got["f1@5"][2] == 0.0
    assert got["precision@5"][3] == pytest.approx(2 / 5)


def test_sparse_and_sequence_inputs_agree(rng):
    n_users, n_items = 40, 30
    recs = np.stack([rng.permutation(n_items)[:10] for _ in range(n_users)]).astype(np.int64)
    dense = rng.random((n_users, n_items)) < 0.1
    as_sparse = ranking_metrics(recs, sp.csr_matrix(dense), (5, 10))
    as_lists = ranking_metrics(recs, [np.flatnonzero(r)[::-1] for r in dense], (5, 10))  # unsorted is fine
    for key in as_sparse:
        np.testing.assert_array_equal(as_sparse[key], as_lists[key])


def test_identical_for_one_and_two_threads(rng):
    n_users, n_items, width = 3000, 500, 50
    recs = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :width].astype(np.int32)
    recs[rng.random(recs.shape) < 0.05] = -1
    test = sp.csr_matrix(rng.random((n_users, n_items)) < 0.02)
    with threads.limit(1):
        one, _ = ranking_metrics_array(recs, test, (1, 10, 50))
    with threads.limit(2):
        two, _ = ranking_metrics_array(recs, test, (1, 10, 50))
    np.testing.assert_array_equal(one, two)


def test_rating_errors_match_reference(rng):
    pred, actual = rng.random(50) * 5, rng.integers(1, 6, 50).astype(np.float32)
    got, want = rating_errors(pred, actual), rating_errors_reference(pred, actual)
    assert got["rmse"] == pytest.approx(want["rmse"]) and got["mae"] == pytest.approx(want["mae"])
    assert np.isnan(rating_errors([], [])["rmse"])


def test_bad_inputs_are_named():
    recs = np.zeros((2, 3), dtype=np.int32)
    with pytest.raises(ParameterError, match=r"k must be at most the 3 recommendations per row, got 5"):
        ranking_metrics(recs, [[0], [1]], 5)
    with pytest.raises(ParameterError, match=r"recommended must be 2-D \(n_users, k\) item indices, got shape \(3,\)"):
        ranking_metrics(np.zeros(3, np.int32), [[0]], 1)
    with pytest.raises(ParameterError, match="integer item indices .*got dtype float64"):
        ranking_metrics(np.zeros((2, 3)), [[0], [1]], 1)
    with pytest.raises(ParameterError, match=r"test must be aligned with recommended \(2 rows\), got 1 rows"):
        ranking_metrics(recs, [[0]], 1)
    with pytest.raises(ParameterError, match=r"k must be an integer >= 1 or a non-empty list of them, got \[10, 0\] \(0 is not\)"):
        check_ks([10, 0])
    with pytest.raises(ParameterError, match=r"k must be .*non-empty list of them, got \[\]"):
        check_ks([])
    with pytest.raises(ParameterError, match=r"metrics must be some of 'precision', .*got \['ndgc'\] \(unknown: 'ndgc'\)"):
        check_metrics(["ndgc"])
    with pytest.raises(ParameterError, match="test must be aligned with recommended .2 rows., got 3 rows"):
        ranking_metrics(recs, sp.csr_matrix(np.eye(3)), 1)
    with pytest.raises(ParameterError, match="test must be item indices >= 0, got -2"):
        ranking_metrics(recs, [[0], [-2]], 1)
    with pytest.raises(ParameterError, match=r"item indices in \[-1, 2\*\*31\)"):
        ranking_metrics(np.full((1, 1), 2**31), [[0]], 1)
    with pytest.raises(ParameterError, match="n_items must be an integer >= 1, got 0"):
        coverage(recs, 0)
    with pytest.raises(ParameterError, match=r"recommended must be item indices < n_items \(2\), got 5"):
        coverage(np.full((1, 1), 5), 2)
    with pytest.raises(ParameterError, match=r"actual must be the shape of predicted \(1,\), got shape \(2,\)"):
        rating_errors([1.0], [1.0, 2.0])


def test_kernel_wrapper_checks_its_input_and_pads_short_lists():
    from recsys_fast.errors import DataError
    from recsys_fast.kernels.metrics import NDCG, RECALL, per_user_metrics

    recs = np.array([[2, 0], [1, -1]], np.int32)
    indptr, indices = np.array([0, 2, 3]), np.array([0, 3, 1])
    short = per_user_metrics(recs, indptr, indices, [1, 4])
    padded = per_user_metrics(np.pad(recs, ((0, 0), (0, 2)), constant_values=-1), indptr, indices, [1, 4])
    np.testing.assert_array_equal(short, padded)  # ranks past the list are padding
    assert short[RECALL, 0, 1] == 0.5 and short[NDCG, 1, 0] == 1.0
    with pytest.raises(DataError, match="sorted and unique"):
        per_user_metrics(recs, indptr, np.array([3, 0, 1]), [1])
    with pytest.raises(DataError, match="test_indptr must be a CSR index pointer of 3 entries"):
        per_user_metrics(recs, np.array([0, 3]), indices, [1])
    with pytest.raises(DataError, match="ks must be unique cutoffs >= 1"):
        per_user_metrics(recs, indptr, indices, [0])
    with pytest.raises(DataError, match="recs must be 2-D"):
        per_user_metrics(recs[0], indptr, indices, [1])
