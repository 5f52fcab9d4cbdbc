import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_fast import threads
from recsys_fast.kernels.topk import dense_topk, ranked_topk
from tests.reference import topk_reference


def _exclusions(rng, n, m, p):
    sets = [set(np.flatnonzero(rng.random(m) < p).tolist()) for _ in range(n)]
    indptr = np.zeros(n + 1, np.int64)
    indptr[1:] = np.cumsum([len(s) for s in sets])
    indices = np.array([j for s in sets for j in sorted(s)], dtype=np.int32)
    return sets, indptr, indices


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 6), m=st.integers(1, 40), k=st.integers(1, 50), seed=st.integers(0, 10_000),
       levels=st.integers(1, 5), p_excl=st.floats(0, 1), restrict=st.booleans())
def test_dense_topk_matches_reference(n, m, k, seed, levels, p_excl, restrict):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, (n, m)).astype(np.float32)  # few levels: many ties
    scores[rng.random((n, m)) < 0.1] = np.nan
    sets, indptr, indices = _exclusions(rng, n, m, p_excl)
    allowed = rng.random(m) < 0.6 if restrict else None
    got_i, got_s = dense_topk(scores, k, indptr, indices,
                              allowed if allowed is not None else np.zeros(0, np.bool_))
    ref_i, ref_s = topk_reference(scores, k, sets, allowed)
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_array_equal(got_s, ref_s)


def test_dense_topk_properties_and_threads(rng):
    scores = rng.random((300, 500)).astype(np.float32)
    sets, indptr, indices = _exclusions(rng, 300, 500, 0.3)
    empty = np.zeros(0, np.bool_)
    with threads.limit(1):
        one = dense_topk(scores, 20, indptr, indices, empty)
    with threads.limit(2):
        two = dense_topk(scores, 20, indptr, indices, empty)
    np.testing.assert_array_equal(one[0], two[0])
    for r in range(300):
        assert not set(one[0][r].tolist()) & sets[r]
        assert np.all(np.diff(one[1][r]) <= 0)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_ranked_topk_skips_exclusions(rng, k):
    order = rng.permutation(12).astype(np.int32)
    order_scores = np.linspace(10, 1, 12).astype(np.float32)
    sets, indptr, indices = _exclusions(rng, 5, 12, 0.5)
    allowed = rng.random(12) < 0.7
    got_i, got_s = ranked_topk(order, order_scores, 5, k, indptr, indices, allowed)
    score_of = np.empty(12, np.float32)
    score_of[order] = order_scores
    ref_i, ref_s = topk_reference(np.tile(score_of, (5, 1)), k, sets, allowed)
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_array_equal(got_s, ref_s)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 12), m=st.integers(1, 60), k=st.integers(1, 70), seed=st.integers(0, 10_000),
       p_excl=st.floats(0, 1), restrict=st.booleans())
def test_serial_and_parallel_kernels_agree(n, m, k, seed, p_excl, restrict):
    """The serial path (what a single request takes) returns exactly what the parallel one does."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, (n, m)).astype(np.float32)  # ties: the order must agree too
    scores[rng.random((n, m)) < 0.1] = np.nan
    _, indptr, indices = _exclusions(rng, n, m, p_excl)
    allowed = rng.random(m) < 0.6 if restrict else np.zeros(0, np.bool_)
    serial = dense_topk(scores, k, indptr, indices, allowed, parallel=False)
    par = dense_topk(scores, k, indptr, indices, allowed, parallel=True)
    np.testing.assert_array_equal(serial[0], par[0])
    np.testing.assert_array_equal(serial[1], par[1])
    order = rng.permutation(m).astype(np.int32)
    order_scores = np.sort(rng.random(m).astype(np.float32))[::-1].copy()
    serial = ranked_topk(order, order_scores, n, k, indptr, indices, allowed, parallel=False)
    par = ranked_topk(order, order_scores, n, k, indptr, indices, allowed, parallel=True)
    np.testing.assert_array_equal(serial[0], par[0])
    np.testing.assert_array_equal(serial[1], par[1])


def test_small_batches_take_the_serial_kernel(monkeypatch, rng):
    import recsys_fast.kernels.topk as topk

    calls = []
    kernels = topk._dense_topk
    monkeypatch.setattr(topk, "_dense_topk", kernels._replace(
        parallel=lambda *a: calls.append("parallel") or kernels.serial(*a)))
    empty_p, empty_i, empty_a = np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.bool_)
    topk.dense_topk(rng.random((1, 50)).astype(np.float32), 5, empty_p, empty_i, empty_a)
    topk.dense_topk(rng.random((topk.SERIAL_MAX_ROWS, 50)).astype(np.float32), 5, empty_p, empty_i, empty_a)
    assert calls == []
    topk.dense_topk(rng.random((topk.SERIAL_MAX_ROWS + 1, 50)).astype(np.float32), 5, empty_p, empty_i, empty_a)
    assert calls == ["parallel"]


def test_wrappers_check_shapes_in_constant_time():
    from recsys_fast.errors import DataError
    from recsys_fast.kernels.topk import dense_topk, ranked_topk

    scores = np.arange(6, dtype=np.float64).reshape(2, 3)  # float64 is coerced
    got_i, got_s = dense_topk(scores, 2)
    np.testing.assert_array_equal(got_i, [[2, 1], [2, 1]])
    assert got_s.dtype == np.float32
    with pytest.raises(DataError, match="dense_topk: scores must be 2-d"):
        dense_topk(scores[0], 2)
    with pytest.raises(DataError, match="excl_indptr must be empty .* of 3 entries over the 1 1-d excl_indices"):
        dense_topk(scores, 2, [0, 1], [0])
    with pytest.raises(DataError, match="allowed must be empty .* over the 3 items, got shape \\(2,\\)"):
        dense_topk(scores, 2, allowed=np.ones(2, bool))
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        dense_topk(scores, 0)
    order, order_scores = np.array([2, 0, 1]), np.array([3.0, 2.0, 1.0])
    np.testing.assert_array_equal(ranked_topk(order, order_scores, 2, 2, [0, 1, 1], [2])[0], [[0, 1], [2, 0]])
    with pytest.raises(DataError, match="order and order_scores must be 1-d of one length"):
        ranked_topk(order, order_scores[:2], 1, 1)
    with pytest.raises(DataError, match="ranked_topk: allowed must be empty"):
        ranked_topk(order, order_scores, 1, 1, allowed=np.ones(4, bool))
