"""Splits: disjoint, complete, aligned, reproducible, and each one's own policy."""

from __future__ import annotations

from datetime import date, datetime, timezone

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_fast import Interactions
from recsys_fast.datasets import load_movielens, synthetic
from recsys_fast.errors import DataError, ParameterError, ParameterTypeError
from recsys_fast.split import holdout, leave_last_out, temporal, test_counts, user_folds


def records(data: Interactions) -> dict:
    """{(user index, item index): (weight, timestamp, rating)} for every stored interaction."""
    rows, cols = data.row_of_nnz(), data.matrix.indices
    ts = data.timestamps if data.timestamps is not None else [None] * data.nnz
    r = data.ratings if data.ratings is not None else [None] * data.nnz
    return {(int(u), int(i)): (float(w), t if t is None else int(t), x if x is None else float(x))
            for u, i, w, t, x in zip(rows, cols, data.matrix.data, ts, r)}


def assert_partition(data, train, test):
    assert train.user_map is data.user_map and train.item_map is data.item_map
    assert test.user_map is data.user_map and test.item_map is data.item_map
    a, b = records(train), records(test)
    assert not set(a) & set(b)
    assert {**a, **b} == records(data)  # union is the input, with weights/timestamps/ratings aligned


def per_user(data):
    return np.diff(data.matrix.indptr)


def small_data(seed=0, n=400, users=30, items=25, with_ts=True):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, n)
    i = rng.integers(0, items, n)
    w = rng.integers(1, 6, n).astype(float)
    t = rng.integers(0, 50, n) if with_ts else None  # few distinct values: many ties
    return Interactions.from_arrays(u, i, w, t)


@pytest.fixture(scope="module")
def ml(ml_latest_small_path):
    return load_movielens(ml_latest_small_path)[0]


# ---------------------------------------------------------------------- holdout
def test_test_counts_policy():
    counts = np.array([0, 1, 2, 3, 4, 5, 7, 8, 10, 13])
    assert test_counts(counts, 0.2).tolist() == [0, 0, 1, 1, 1, 1, 1, 2, 2, 3]
    assert test_counts(counts, 0.5).tolist() == [0, 0, 1, 2, 2, 3, 4, 4, 5, 7]  # half up, keep one in train
    assert test_counts(np.array([2, 3]), 0.99).tolist() == [1, 2]


def test_holdout_partition_and_counts():
    d = small_data()
    train, test = holdout(d, 0.3, seed=1)
    assert_partition(d, train, test)
    assert per_user(test).tolist() == test_counts(per_user(d), 0.3).tolist()
    n = per_user(d)
    assert np.all(per_user(train)[n >= 1] >= 1)


def test_holdout_single_interaction_users_stay_in_train():
    d = Interactions.from_arrays([1, 2, 2, 3], [1, 1, 2, 3])
    train, test = holdout(d, 0.5, seed=0)
    assert per_user(test).tolist() == [0, 1, 0] and per_user(train).tolist() == [1, 1, 1]


def test_holdout_reproducible_and_seed_dependent():
    d = small_data()
    a, b, c = holdout(d, seed=5)[1], holdout(d, seed=5)[1], holdout(d, seed=6)[1]
    assert records(a) == records(b)
    assert records(a) != records(c)


def test_holdout_independent_of_input_row_order():
    rng = np.random.default_rng(3)
    u, i = rng.integers(0, 40, 500), rng.integers(0, 30, 500)
    d1 = Interactions.from_arrays(u, i, duplicates="first")
    perm = rng.permutation(500)
    d2 = Interactions.from_arrays(u[perm], i[perm], duplicates="first")
    t1, t2 = holdout(d1, seed=9)[1].to_pandas(), holdout(d2, seed=9)[1].to_pandas()
    assert t1[["user", "item"]].values.tolist() == t2[["user", "item"]].values.tolist()


def test_holdout_ratio_on_movielens(ml):
    train, test = holdout(ml, 0.2, seed=42)
    assert_partition(ml, train, test)
    assert abs(test.nnz / ml.nnz - 0.2) < 0.01


def test_holdout_random_within_user():
    # one user, many items: over seeds each item lands in test about test_fraction of the time
    d = Interactions.from_arrays(np.zeros(20, int), np.arange(20))
    hits = np.zeros(20)
    for seed in range(200):
        hits += holdout(d, 0.25, seed=seed)[1].matrix.toarray()[0]
    assert hits.sum() == 200 * 5
    assert hits.min() > 20 and hits.max() < 80  # expectation 50 per item


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, True, "0.2"])
def test_holdout_bad_fraction(fraction):
    with pytest.raises(ParameterError, match="test_fraction must be a finite number > 0.0 and < 1.0, got"):
        holdout(small_data(), fraction)


def test_split_rejects_non_interactions():
    with pytest.raises(ParameterTypeError, match="data must be recsys_fast.Interactions, got a DataFrame"):
        holdout(pd.DataFrame({"user": [1]}))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.05, 0.95), st.integers(1, 300))
def test_holdout_properties(seed, fraction, n):
    d = small_data(seed, n=n, users=12, items=15)
    train, test = holdout(d, fraction, seed=seed)
    assert_partition(d, train, test)
    counts = per_user(d)
    assert per_user(test).tolist() == test_counts(counts, fraction).tolist()
    assert np.all(per_user(train)[counts >= 1] >= 1)


# ---------------------------------------------------------------------- leave_last_out
def leave_last_reference(data, n):
    test = set()
    rows, cols, ts = data.row_of_nnz(), data.matrix.indices, data.timestamps
    for u in range(data.n_users):
        mine = sorted((int(ts[k]), int(cols[k])) for k in np.flatnonzero(rows == u))
        if len(mine) > n:
            test |= {(u, i) for _, i in mine[-n:]}
    return test


@pytest.mark.parametrize("n", [1, 2, 5])
def test_leave_last_out_matches_reference(n):
    d = small_data(1)
    train, test = leave_last_out(d, n)
    assert_partition(d, train, test)
    assert set(records(test)) == leave_last_reference(d, n)


def test_leave_last_out_picks_latest_and_breaks_ties_by_item():
    d = Interactions.from_arrays([1, 1, 1, 2, 2, 2, 3], [10, 11, 12, 10, 11, 12, 10],
                                 timestamps=[5, 9, 1, 7, 7, 3, 4])
    train, test = leave_last_out(d, 1)
    got = test.to_pandas()[["user", "item", "timestamp"]].values.tolist()
    assert got == [[1, 11, 9], [2, 11, 7]]  # user 2: tie at 7 -> larger item id; user 3 has one interaction
    assert per_user(train).tolist() == [2, 2, 1]


def test_leave_last_out_wide_timestamps_use_the_general_path():
    # nanosecond stamps span more than 2**32: the packed sort key does not fit, lexsort is used
    base = small_data(7)
    wide = Interactions(base.matrix, base.user_map, base.item_map, base.timestamps * 10**9 + 1_700_000_000 * 10**9)
    assert int(np.ptp(wide.timestamps)) >= 2**32
    for n in (1, 3):
        assert set(records(leave_last_out(wide, n)[1])) == leave_last_reference(wide, n) \
            == leave_last_reference(base, n)


def test_leave_last_out_needs_timestamps():
    with pytest.raises(DataError, match="leave_last_out needs timestamps"):
        leave_last_out(small_data(with_ts=False))


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_leave_last_out_bad_n(n):
    with pytest.raises(ParameterError, match="n must be an integer >= 1, got"):
        leave_last_out(small_data(), n)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 4), st.integers(1, 200))
def test_leave_last_out_properties(seed, n, size):
    d = small_data(seed, n=size, users=10, items=12)
    train, test = leave_last_out(d, n)
    assert_partition(d, train, test)
    assert set(records(test)) == leave_last_reference(d, n)


# ---------------------------------------------------------------------- temporal
def test_temporal_respects_numeric_cutoff():
    d = small_data(2)
    train, test = temporal(d, 25)
    assert_partition(d, train, test)
    assert train.timestamps.max() < 25 <= test.timestamps.min()


def test_temporal_on_movielens_with_dates(ml):
    cut = datetime(2015, 1, 1, tzinfo=timezone.utc)
    train, test = temporal(ml, "2015-01-01")
    assert_partition(ml, train, test)
    assert train.timestamps.max() < cut.timestamp() <= test.timestamps.min()
    for same in (cut, datetime(2015, 1, 1), date(2015, 1, 1), np.datetime64("2015-01-01"),
                 pd.Timestamp("2015-01-01"), "2015-01-01T00:00:00Z", int(cut.timestamp())):
        assert temporal(ml, same)[1].nnz == test.nnz
    assert temporal(ml, "2015-01-01T01:00:00+01:00")[1].nnz == test.nnz  # same instant, other zone


def test_temporal_fraction_is_a_quantile(ml):
    train, test = temporal(ml, 0.8)
    assert_partition(ml, train, test)
    assert abs(train.nnz / ml.nnz - 0.8) < 0.01
    assert train.timestamps.max() < test.timestamps.min()


def test_temporal_needs_timestamps_and_a_valid_cutoff():
    with pytest.raises(DataError, match="temporal needs timestamps"):
        temporal(small_data(with_ts=False), 10)
    with pytest.raises(ParameterError, match="cutoff must be a timestamp, a datetime, an ISO 8601 date/time .*got 'next tuesday'"):
        temporal(small_data(), "next tuesday")
    with pytest.raises(ParameterError, match="cutoff must be .*got a list"):
        temporal(small_data(), [1])
    with pytest.raises(ParameterError, match="cutoff must be .*got nan"):
        temporal(small_data(), float("nan"))


# ---------------------------------------------------------------------- user_folds
def test_user_folds_each_eligible_user_tested_once():
    d = small_data(4)
    folds = user_folds(d, n_folds=4, seed=3)
    assert len(folds) == 4
    tested = np.zeros(d.n_users, dtype=int)
    for train, test in folds:
        assert_partition(d, train, test)
        tested += per_user(test) > 0
    counts = per_user(d)
    assert tested.tolist() == (counts >= 2).astype(int).tolist()
    sizes = [int((per_user(test) > 0).sum()) for _, test in folds]
    assert max(sizes) - min(sizes) <= 1
    total = sum(per_user(test) for _, test in folds)
    assert total.tolist() == test_counts(counts, 0.2).tolist()


def test_user_folds_reproducible_and_seed_dependent():
    d = small_data(5)
    a, b, c = user_folds(d, 3, seed=1), user_folds(d, 3, seed=1), user_folds(d, 3, seed=2)
    assert [records(t) for _, t in a] == [records(t) for _, t in b]
    assert [records(t) for _, t in a] != [records(t) for _, t in c]


def test_user_folds_bad_arguments():
    d = Interactions.from_arrays([1, 1, 2, 2, 3], [1, 2, 1, 2, 1])
    with pytest.raises(DataError, match="only 2 users have 2 or more interactions; cannot make 3 folds"):
        user_folds(d, 3)
    with pytest.raises(ParameterError, match="n_folds must be an integer >= 2, got 1"):
        user_folds(d, 1)


def test_splits_of_synthetic_data_at_scale():
    d = synthetic(2000, 500, 40_000, seed=0)
    for train, test in (holdout(d, seed=0), leave_last_out(d, 2), temporal(d, 0.5)):
        assert train.nnz + test.nnz == d.nnz and train.nnz > 0 and test.nnz > 0


def test_cold_items_moves_every_interaction_of_the_drawn_items():
    from recsys_fast.split import cold_items

    rng = np.random.default_rng(3)
    users = rng.integers(0, 50, 800)
    items = rng.integers(0, 120, 800)
    data = Interactions.from_arrays(users, items)
    train, test = cold_items(data, fraction=0.1, seed=42)
    assert train.nnz + test.nnz == data.nnz
    assert train.item_map == data.item_map and test.user_map == data.user_map
    cold = np.unique(test.matrix.indices)
    active = np.unique(data.matrix.indices)
    assert len(cold) == int(np.floor(0.1 * len(active) + 0.5))
    assert not np.isin(train.matrix.indices, cold).any(), "no train interaction with a cold item"
    again = cold_items(data, fraction=0.1, seed=42)[1]
    np.testing.assert_array_equal(again.matrix.indices, test.matrix.indices)
    other = cold_items(data, fraction=0.1, seed=7)[1]
    assert not np.array_equal(np.unique(other.matrix.indices), cold)
    with pytest.raises(ParameterError, match="fraction must be a finite number > 0.0 and < 1.0, got 1.0"):
        cold_items(data, fraction=1.0)
