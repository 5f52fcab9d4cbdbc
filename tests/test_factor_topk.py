"""kernels.factors.factor_topk against the dense reference: ties, exclusions, allowed, NaN,
k > n_items, tiles and threads not changing the answer, the serial request path, bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_fast import threads
from recsys_fast.errors import DataError
from recsys_fast.kernels.factors import factor_topk
from tests.reference import topk_reference
from tests.test_topk import _exclusions


def _problem(rng, n, m, d, levels):
    # small integers: every dot product is exact in float32, so the GEMM's blocking cannot
    # change a score and ties are real ties
    users = rng.integers(-levels, levels + 1, (n, d)).astype(np.float32)
    items = rng.integers(-levels, levels + 1, (m, d)).astype(np.float32)
    return users, items


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), m=st.integers(1, 150), d=st.integers(1, 6), k=st.integers(1, 160),
       seed=st.integers(0, 10_000), levels=st.integers(1, 3), p_excl=st.floats(0, 1), restrict=st.booleans(),
       bias=st.booleans(), tile=st.sampled_from([None, 1, 3, 16]), item_block=st.sampled_from([None, 1, 7, 64]))
def test_factor_topk_matches_reference(n, m, d, k, seed, levels, p_excl, restrict, bias, tile, item_block):
    rng = np.random.default_rng(seed)
    users, items = _problem(rng, n, m, d, levels)
    item_bias = rng.integers(-2, 3, m).astype(np.float32) if bias else None
    if n > 2:
        users[1, 0] = np.nan  # a broken user vector: nothing qualifies, the row is all padding
    sets, indptr, indices = _exclusions(rng, n, m, p_excl)
    allowed = rng.random(m) < 0.6 if restrict else None
    got_i, got_s = factor_topk(users, items, k, item_bias=item_bias, excl_indptr=indptr, excl_indices=indices,
                               allowed=allowed, tile_rows=tile, item_block=item_block)
    scores = users @ items.T + (item_bias if bias else 0)
    ref_i, ref_s = topk_reference(scores.astype(np.float32), k, sets, allowed)
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_array_equal(got_s, ref_s)


def test_large_batch_is_the_same_for_any_thread_count_and_tile(rng):
    users, items = _problem(rng, 3000, 700, 8, 4)
    sets, indptr, indices = _exclusions(rng, 3000, 700, 0.05)
    with threads.limit(1):
        one = factor_topk(users, items, 25, excl_indptr=indptr, excl_indices=indices)
    with threads.limit(2):
        two = factor_topk(users, items, 25, excl_indptr=indptr, excl_indices=indices, tile_rows=37, item_block=50)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    ref_i, _ = topk_reference(users[:50] @ items.T, 25, sets[:50])
    np.testing.assert_array_equal(one[0][:50], ref_i)
    for r in range(0, 3000, 97):  # properties: no excluded item, no duplicate, scores non-increasing
        row = one[0][r]
        assert not set(row.tolist()) & sets[r] and len(set(row.tolist())) == 25
        assert np.all(np.diff(one[1][r]) <= 0)


def test_request_sized_calls_from_threads_agree_with_the_batch(rng):
    from concurrent.futures import ThreadPoolExecutor

    users, items = _problem(rng, 64, 300, 8, 3)
    whole = factor_topk(users, items, 10)
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda r: factor_topk(users[r:r + 1], items, 10), range(64)))
    np.testing.assert_array_equal(np.vstack([p[0] for p in parts]), whole[0])


def test_empty_inputs_and_bad_input_errors(rng):
    users, items = _problem(rng, 4, 6, 3, 2)
    i, s = factor_topk(users[:0], items, 3)
    assert i.shape == (0, 3)
    i, s = factor_topk(users, items[:0], 3)
    assert (i == -1).all() and np.isneginf(s).all()
    with pytest.raises(DataError, match="3 dimensions, item_vectors 2"):
        factor_topk(users, items[:, :2], 3)
    with pytest.raises(DataError, match="2-d array"):
        factor_topk(users[0], items, 3)
    with pytest.raises(DataError, match=r"excl_indptr must be empty .* of 5 entries"):
        factor_topk(users, items, 3, excl_indptr=np.zeros(3, np.int64), excl_indices=np.zeros(0, np.int32))
    with pytest.raises(DataError, match=r"out of range \[0, 6\)"):
        factor_topk(users, items, 3, excl_indptr=np.array([0, 1, 1, 1, 1]), excl_indices=np.array([6]))
    with pytest.raises(DataError, match="item_bias must have shape"):
        factor_topk(users, items, 3, item_bias=np.zeros(5))
    with pytest.raises(DataError, match="allowed must be empty .* over the 6 items"):
        factor_topk(users, items, 3, allowed=np.ones(5, bool))
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        factor_topk(users, items, 0)
