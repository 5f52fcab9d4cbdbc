"""kernels.similarity_update: the reserve path of update_topk_similarity equals topk_similarity on the
new matrix bit for bit (random binary matrices, ties, rows and columns that did not exist, several
updates in a row), topk_similarity_reserve's graph is topk_similarity's, and kernels.csr_merge
equals rebuilding the matrix from all events."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_fast.data.idmap import IdMap
from recsys_fast.data.interactions import Interactions
from recsys_fast.errors import DataError
from recsys_fast.kernels import similarity_update as su
from recsys_fast.kernels.csr_merge import merge_csr
from recsys_fast.kernels.similarity import topk_similarity


def _csr(mask):
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int64)
    return indptr, np.nonzero(mask)[1].astype(np.int32), np.ones(int(mask.sum()), np.float32)


def _same(got, expected):
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


@pytest.fixture()
def always_reserve(monkeypatch):
    """Take the reserve path whatever the pairs cost (small matrices would otherwise rebuild)."""
    monkeypatch.setattr(su, "_PAIR_SHARE", 0)


OPTIONS = st.fixed_dictionaries({
    "similarity": st.sampled_from(su._RESERVE_SIMILARITIES), "shrink": st.sampled_from([0.0, 2.5]),
    "min_support": st.integers(1, 3), "alpha": st.sampled_from([0.5, 0.3, 0.9])})


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(n_rows=st.integers(1, 45), n_cols=st.integers(1, 25), density=st.sampled_from([0.05, 0.2, 0.5]),
       k=st.integers(1, 12), extra=st.integers(1, 6), options=OPTIONS, seed=st.integers(0, 2**32 - 1),
       steps=st.integers(1, 3), overwrite=st.booleans(), bitmaps=st.booleans(), validate=st.booleans())
def test_reserve_updates_equal_a_full_call(always_reserve, monkeypatch, n_rows, n_cols, density, k, extra, options,
                                           seed, steps, overwrite, bitmaps, validate):
    """Entries added in a few steps, with rows (and columns) that did not exist at first: every
    step's graph equals topk_similarity of the matrix then, bit for bit, whether the exact co-counts
    read bitmaps or merge rows, and whether the result is written into the old arrays (``overwrite``)
    or not (then they are left as they were), with the input checks or without (``validate``)."""
    monkeypatch.setattr(su, "_BITMAP_MIN", 1 if bitmaps else 10**9)
    rng = np.random.default_rng(seed)
    mask = rng.random((n_rows, n_cols)) < density
    absent = rng.random(n_rows) < 0.15  # rows the first matrix did not have
    mask[absent] = False
    keep = np.flatnonzero(~absent)
    *graph, reserve = su.topk_similarity_reserve(*_csr(mask[keep]), n_cols, k, extra, **options)
    _same(graph, topk_similarity(*_csr(mask[keep]), n_cols, k, **options))
    if reserve is None:  # no entries yet: not the counting path
        assert not mask.any()
        return
    # into the full index space, as a model does when items appear
    lens = np.zeros(n_rows, np.int64)
    lens[keep] = np.diff(graph[0])
    graph = (np.r_[0, np.cumsum(lens)].astype(np.int64), keep[graph[1]].astype(np.int32), graph[2])
    reserve = su.reindex_reserve(reserve, keep, n_rows)
    old, old_n = mask, len(keep)
    for _ in range(steps):
        new = old.copy()
        for _ in range(rng.integers(0, 10)):
            new[rng.integers(n_rows), rng.integers(n_cols)] = True
        if rng.random() < 0.3:  # a popular column gains many rows
            new[:, rng.integers(n_cols)] |= rng.random(n_rows) < 0.5
        before = [a.copy() for a in graph] + [reserve[name].copy() for name in su.RESERVE_ARRAYS]
        *got, info = su.update_topk_similarity(_csr(old), old_n, graph, _csr(new), n_cols, k, reserve=reserve,
                                               extra=extra, overwrite=overwrite, validate=validate, **options)
        _same(got, topk_similarity(*_csr(new), n_cols, k, **options))
        if not overwrite:
            _same(list(graph) + [reserve[name] for name in su.RESERVE_ARRAYS], before)
        assert info["path"] in ("reserve", "full") and info["reserve"] is not None
        graph, reserve, old, old_n = tuple(got), info["reserve"], new, n_rows


@settings(max_examples=40, deadline=None)
@given(n_rows=st.integers(1, 40), n_cols=st.integers(1, 15), k=st.integers(1, 10), extra=st.integers(1, 8),
       options=OPTIONS, seed=st.integers(0, 2**32 - 1))
def test_reserve_is_the_next_neighbours(n_rows, n_cols, k, extra, options, seed):
    """The reserve holds ranks k+1 .. k+extra of every row and, for a cut row, rank k+extra+1 as its
    bound (ties broken by the lower index, as the graph's)."""
    mask = np.random.default_rng(seed).random((n_rows, n_cols)) < 0.4
    *graph, reserve = su.topk_similarity_reserve(*_csr(mask), n_cols, k, extra, **options)
    if reserve is None:  # no entries: not the counting path, nothing to keep
        assert not mask.any()
        return
    ptr, idx, val = topk_similarity(*_csr(mask), n_cols, k + extra + 1, **options)
    for r in range(n_rows):
        row_i, row_s = idx[ptr[r]:ptr[r + 1]], val[ptr[r]:ptr[r + 1]]
        g = slice(graph[0][r], graph[0][r + 1])
        np.testing.assert_array_equal(graph[1][g], row_i[:k])
        n_e = reserve["lengths"][r]
        np.testing.assert_array_equal(reserve["indices"][r * extra:r * extra + n_e], row_i[k:k + extra])
        np.testing.assert_array_equal(reserve["scores"][r * extra:r * extra + n_e], row_s[k:k + extra])
        if len(row_i) == k + extra + 1:
            assert (reserve["bound_scores"][r], reserve["bound_indices"][r]) == (row_s[-1], row_i[-1])
        else:
            assert reserve["bound_scores"][r] == 0.0


def test_reserve_path_is_taken_and_rebuilds_when_it_cannot(always_reserve):
    rng = np.random.default_rng(0)
    mask = rng.random((60, 40)) < 0.2
    *graph, reserve = su.topk_similarity_reserve(*_csr(mask), 40, 5, 4)
    new = mask.copy()
    new[3, 7] = new[10, 2] = True
    *got, info = su.update_topk_similarity(_csr(mask), 60, graph, _csr(new), 40, 5, reserve=reserve, extra=4)
    assert info["path"] == "reserve" and info["recomputed"] < 60
    _same(got, topk_similarity(*_csr(new), 40, 5))
    fewer = new.copy()
    fewer[np.nonzero(new)[0][0], np.nonzero(new)[1][0]] = False  # an entry removed: recomputed with a reserve
    *got2, info2 = su.update_topk_similarity(_csr(new), 60, got, _csr(fewer), 40, 5, reserve=info["reserve"],
                                             extra=4)
    assert info2["path"] == "full" and info2["reserve"] is not None
    _same(got2, topk_similarity(*_csr(fewer), 40, 5))
    values = _csr(new)[:2] + (rng.integers(1, 4, int(new.sum())).astype(np.float32),)  # not the counting path
    *got3, info3 = su.update_topk_similarity(_csr(mask), 60, graph, values, 40, 5, reserve=reserve, extra=4)
    assert info3["path"] == "generic" and info3["reserve"] is None
    _same(got3, topk_similarity(*values, 40, 5))


def test_bad_reserve_and_transpose_raise():
    mask = np.random.default_rng(1).random((8, 6)) < 0.4
    *graph, reserve = su.topk_similarity_reserve(*_csr(mask), 6, 2, 2)
    with pytest.raises(DataError, match="reserve\\['lengths'\\] must have 9 entries"):
        su.check_reserve(reserve, 9, "test")
    with pytest.raises(DataError, match="reserve must be a dict"):
        su.update_topk_similarity(_csr(mask), 8, graph, _csr(mask), 6, 2, reserve={"extra": 2})
    with pytest.raises(DataError, match="new_t must be the new matrix transposed"):
        su.update_topk_similarity(_csr(mask), 8, graph, _csr(mask), 6, 2, reserve=reserve,
                                  new_t=(np.zeros(3, np.int64), np.zeros(0, np.int32)))
    short = (_csr(mask)[0][:-1],) + _csr(mask)[1:]  # one row short, unchecked otherwise
    with pytest.raises(DataError, match="old and new must be CSR triples of 8 rows"):
        su.update_topk_similarity(short, 8, graph, _csr(mask), 6, 2, reserve=reserve, validate=False)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), policy=st.sampled_from(["last", "first", "sum", "max"]),
       n_users=st.integers(1, 12), n_items=st.integers(1, 10))
def test_merge_csr_equals_rebuilding_from_all_events(seed, policy, n_users, n_items):
    """Old entries (renumbered into larger id maps) merged with new ones equal Interactions built
    from the old events followed by the new, duplicates resolved the same way (ratings too)."""
    rng = np.random.default_rng(seed)
    users, items = np.arange(n_users + 3) * 2, np.arange(n_items + 3) * 3
    old_u, old_i = rng.choice(users[:n_users], 20), rng.choice(items[:n_items], 20)
    new_u, new_i = rng.choice(users, 8), rng.choice(items, 8)
    old_w = rng.integers(0, 4, 20).astype(np.float32)  # 0: an explicit zero, kept
    new_w = rng.integers(0, 4, 8).astype(np.float32)
    old = Interactions.from_arrays(old_u, old_i, old_w, duplicates="last")
    new = Interactions.from_arrays(new_u, new_i, new_w, duplicates="last")
    user_map = IdMap(np.union1d(old.user_map.ids, new.user_map.ids), "user")
    item_map = IdMap(np.union1d(old.item_map.ids, new.item_map.ids), "item")
    both = Interactions._from_indices(
        np.r_[user_map.to_index(old.user_map.ids[old.row_of_nnz()]),
              user_map.to_index(new.user_map.ids[new.row_of_nnz()])],
        np.r_[item_map.to_index(old.item_map.ids[old.matrix.indices]),
              item_map.to_index(new.item_map.ids[new.matrix.indices])].astype(np.int64),
        np.r_[old.matrix.data, new.matrix.data], None, np.r_[old.ratings, new.ratings], user_map, item_map, policy)
    aligned, _ = new.remap(user_map, item_map)
    m, a = old.matrix, aligned.matrix
    ptr, idx, val, rat, added = merge_csr((m.indptr, m.indices, m.data), user_map.to_index(old.user_map.ids),
                                          item_map.to_index(old.item_map.ids), (a.indptr, a.indices, a.data),
                                          len(item_map), policy, old.ratings, aligned.ratings)
    _same((ptr, idx, val, rat), (both.matrix.indptr, both.matrix.indices, both.matrix.data, both.ratings))
    np.testing.assert_array_equal(added + np.bincount(item_map.to_index(old.item_map.ids[m.indices]),
                                                      minlength=len(item_map)),
                                  np.bincount(both.matrix.indices, minlength=len(item_map)))


def test_overwrite_writes_in_place_and_quiet_rows_that_fail_are_recomputed(always_reserve, monkeypatch):
    """``overwrite=True`` returns the old graph's own arrays when every row keeps its length, and a
    quiet row the assembly cannot keep (it reports it failed) is recomputed and placed, in place or
    not: equal to a full call either way."""
    rng = np.random.default_rng(5)
    mask = rng.random((80, 60)) < 0.15
    new = mask.copy()
    new[rng.integers(80, size=4), rng.integers(60, size=4)] = True
    expected = topk_similarity(*_csr(new), 60, 6)
    fill = su._reserve_fill
    recomputed = {}
    for fail_quiet in (False, True):
        if fail_quiet:  # as if every quiet row lost too many entries
            def failing(source, *args):
                failed = fill(source, *args)
                return failed | (source == 3)
            monkeypatch.setattr(su, "_reserve_fill", failing)
        for overwrite in (False, True):
            *graph, reserve = su.topk_similarity_reserve(*_csr(mask), 60, 6, 4)
            *got, info = su.update_topk_similarity(_csr(mask), 80, graph, _csr(new), 60, 6, reserve=reserve, extra=4,
                                                   overwrite=overwrite)
            _same(got, expected)
            assert info["path"] == "reserve"
            if not fail_quiet:
                assert (got[1] is graph[1]) == overwrite
            recomputed[fail_quiet] = info["recomputed"]
    assert recomputed[True] > recomputed[False]
