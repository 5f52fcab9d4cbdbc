"""kNN scoring kernel against the plain reference: exclusions, allowed mask, fill, padding, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_fast import threads
from recsys_fast.errors import ParameterError
from recsys_fast.kernels.knn import knn_topk, similar_rows
from tests.concurrency import run_in_threads
from tests.jit import size
from tests.reference import csr_rows, knn_topk_reference


def random_csr(rng, n_rows, n_cols, density, values=(1, 2, 3), empty_rows=0.2, negative=False):
    """CSR with small integer-valued floats (sums stay exact in float32, so ties are exact too)."""
    m = sp.random(n_rows, n_cols, density=density, format="csr", random_state=rng, dtype=np.float32)
    m.data = rng.choice(np.asarray(values, np.float32), size=m.nnz)
    if negative:
        m.data *= rng.choice(np.array([-1, 1], np.float32), size=m.nnz)
    m = m.tolil()
    for r in np.flatnonzero(rng.random(n_rows) < empty_rows):
        m.rows[r], m.data[r] = [], []
    m = m.tocsr()
    m.sort_indices()
    return m


def random_excl(rng, n_rows, n_items, p=0.2):
    rows = [np.flatnonzero(rng.random(n_items) < p) for _ in range(n_rows)]
    indptr = np.zeros(n_rows + 1, np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    indices = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
    return indptr, indices, rows


def run_case(rng, n_rows, n_src, n_items, k, with_excl=True, with_allowed=False, with_fill=True, negative=False,
             parallel=None):
    a = random_csr(rng, n_rows, n_src, 0.3)
    b = random_csr(rng, n_src, n_items, 0.25, values=(0.5, 1, 1.5, 2), negative=negative)
    excl_indptr, excl_indices, excl_rows = random_excl(rng, n_rows, n_items) if with_excl else (None, None, None)
    allowed = rng.random(n_items) < 0.6 if with_allowed else None
    fill = rng.permutation(n_items).astype(np.int32) if with_fill else None
    got_i, got_s = knn_topk(a.indptr, a.indices, a.data, b.indptr, b.indices, b.data, n_items, k,
                            excl_indptr, excl_indices, allowed, fill, parallel=parallel)
    ref_i, ref_s = knn_topk_reference(csr_rows(a), csr_rows(b), n_items, k, excl_rows, allowed, fill)
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_array_equal(got_s, ref_s.astype(np.float32))
    return got_i, got_s, excl_rows, allowed


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 3, 40, 200])
def test_matches_reference(seed, k):
    rng = np.random.default_rng(seed)
    run_case(rng, n_rows=25, n_src=30, n_items=40, k=k, with_allowed=seed % 2 == 1, negative=seed % 3 == 0)


@pytest.mark.parametrize("parallel", [False, True])
def test_serial_and_parallel_match_reference(parallel):
    run_case(np.random.default_rng(5), 60, 30, 50, 7, with_allowed=True, parallel=parallel)


def test_no_fill_pads_with_minus_one():
    got_i, got_s, excl_rows, allowed = run_case(np.random.default_rng(1), 30, 20, 60, 50, with_fill=False)
    pad = got_i == -1
    assert pad.any()
    assert np.all(got_s[pad] == -np.inf) and np.all(np.isfinite(got_s[~pad]))
    assert np.all(np.diff(pad.astype(int), axis=1) >= 0), "padding only at the end of a row"


def test_filled_rows_hold_every_allowed_unexcluded_item():
    rng = np.random.default_rng(2)
    n_items = 35
    got_i, got_s, excl_rows, allowed = run_case(rng, 20, 15, n_items, k=n_items + 5, with_allowed=True)
    for r in range(20):
        valid = got_i[r][got_i[r] >= 0]
        expect = {j for j in range(n_items) if allowed[j]} - set(excl_rows[r].tolist())
        assert set(valid.tolist()) == expect and len(valid) == len(expect)
        assert np.all(np.diff(got_s[r][: len(valid)]) <= 0), "scores non-increasing, filled items last"


def test_empty_inputs_and_all_items_excluded():
    n_items = 6
    a_indptr = np.array([0, 0, 2], np.int64)  # row 0 has no history
    a_indices, a_data = np.array([0, 1], np.int32), np.ones(2, np.float32)
    b = sp.csr_matrix(np.array([[0, 1, 2, 0, 0, 0], [0, 0, 3, 1, 0, 0]], np.float32))
    fill = np.array([5, 4, 3, 2, 1, 0], np.int32)
    excl_indptr = np.array([0, 0, n_items], np.int64)
    excl_indices = np.arange(n_items, dtype=np.int32)  # row 1 has seen everything
    got_i, got_s = knn_topk(a_indptr, a_indices, a_data, b.indptr, b.indices, b.data, n_items, 3,
                            excl_indptr, excl_indices, None, fill)
    np.testing.assert_array_equal(got_i, [[5, 4, 3], [-1, -1, -1]])
    np.testing.assert_array_equal(got_s, [[-1, -2, -3], [-np.inf] * 3])
    # no request rows at all
    out_i, out_s = knn_topk(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32),
                            b.indptr, b.indices, b.data, n_items, 4)
    assert out_i.shape == (0, 4) and out_s.shape == (0, 4)


def test_fill_goes_below_negative_neighbourhood_scores():
    b = sp.csr_matrix(np.array([[0, -2.0, 0, 0]], np.float32))
    got_i, got_s = knn_topk([0, 1], [0], [1.0], b.indptr, b.indices, b.data, 4, 3, fill_order=[0, 1, 2, 3])
    np.testing.assert_array_equal(got_i, [[1, 0, 2]])
    np.testing.assert_array_equal(got_s, [[-2, -3, -4]])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_rows=st.integers(0, 12), n_src=st.integers(1, 10),
       n_items=st.integers(1, 15), k=st.integers(1, 20), allowed=st.booleans(), fill=st.booleans())
def test_properties_hypothesis(seed, n_rows, n_src, n_items, k, allowed, fill):
    rng = np.random.default_rng(seed)
    run_case(rng, n_rows, n_src, n_items, k, with_allowed=allowed, with_fill=fill)


def big_case(seed=0):
    rng = np.random.default_rng(seed)
    a = sp.random(size(3000, 300), 400, density=0.02, format="csr", random_state=rng, dtype=np.float32)
    b = sp.random(400, 500, density=0.05, format="csr", random_state=rng, dtype=np.float32)
    fill = rng.permutation(500).astype(np.int32)
    return (a.indptr, a.indices, a.data, b.indptr, b.indices, b.data, 500, 10, a.indptr, a.indices, None, fill)


def test_one_and_two_threads_identical():
    args = big_case()
    with threads.limit(1):
        one = knn_topk(*args, parallel=True)
    with threads.limit(2):
        two = knn_topk(*args, parallel=True)
    serial = knn_topk(*args, parallel=False)
    for x in (two, serial):
        np.testing.assert_array_equal(one[0], x[0])
        np.testing.assert_array_equal(one[1], x[1])


@pytest.mark.parametrize("parallel", [True, False])
def test_eight_python_threads_at_once(parallel):
    args = big_case(1)
    expected = knn_topk(*args, parallel=parallel)
    results = [None] * 8

    def work(t):
        for _ in range(size(3, 1)):
            results[t] = knn_topk(*args, parallel=parallel)

    run_in_threads(work, 8)
    for got in results:
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


def test_bad_inputs_are_reported():
    b = sp.csr_matrix(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"knn_topk a: column index 5 out of range \[0, 3\)"):
        knn_topk([0, 1], [5], [1.0], b.indptr, b.indices, b.data, 3, 2)
    with pytest.raises(ValueError, match="knn_topk b, row 0: values must be finite, got nan"):
        knn_topk([0, 1], [0], [1.0], b.indptr, b.indices, np.array([np.nan, 1, 1]), 3, 2)
    with pytest.raises(ValueError, match="excl_indptr must be empty .* of 2 entries"):
        knn_topk([0, 1], [0], [1.0], b.indptr, b.indices, b.data, 3, 2, excl_indptr=[0, 0, 0], excl_indices=[])
    with pytest.raises(ValueError, match="allowed must be empty .* over the 3 items"):
        knn_topk([0, 1], [0], [1.0], b.indptr, b.indices, b.data, 3, 2, allowed=np.ones(2, bool))
    with pytest.raises(ValueError, match="fill_order holds item indices outside"):
        knn_topk([0, 1], [0], [1.0], b.indptr, b.indices, b.data, 3, 2, fill_order=[3])
    with pytest.raises(ParameterError, match="k must be an integer >= 1, got 0"):
        knn_topk([0, 1], [0], [1.0], b.indptr, b.indices, b.data, 3, 0)


def test_similar_rows_is_a_padded_row_slice():
    indptr = np.array([0, 3, 3, 5], np.int64)
    indices = np.array([2, 1, 0, 0, 1], np.int32)
    data = np.array([0.9, 0.5, 0.1, 0.7, 0.2], np.float32)
    got_i, got_s = similar_rows(indptr, indices, data, [2, 1, 0], 2)
    np.testing.assert_array_equal(got_i, [[0, 1], [-1, -1], [2, 1]])
    np.testing.assert_array_equal(got_s, np.array([[0.7, 0.2], [-np.inf, -np.inf], [0.9, 0.5]], np.float32))


def test_parallel_default_is_serial_off_main_thread_when_layer_unsafe(monkeypatch):
    import recsys_fast.kernels.knn as knn
    import recsys_fast.kernels.topk as topk

    calls = []
    monkeypatch.setattr(topk, "_parallel_calls_are_safe", lambda: False)
    kernels = knn._knn_topk
    monkeypatch.setattr(knn, "_knn_topk", kernels._replace(
        parallel=lambda *a: calls.append("parallel") or kernels.serial(*a)))
    args = big_case(2)
    main_thread = knn_topk(*args)
    worker = []
    t = threading.Thread(target=lambda: worker.append(knn_topk(*args)))
    t.start()
    t.join()
    assert calls == ["parallel"], "main thread may launch in parallel, a worker thread must not"
    np.testing.assert_array_equal(main_thread[0], worker[0][0])


@pytest.mark.parametrize("seed", range(4))
def test_relabelled_items_give_identical_results(seed):
    """Numbering items differently inside the kernel (``labels``) changes nothing in the output."""
    rng = np.random.default_rng(seed)
    n_rows, n_items = 40, 30
    a = random_csr(rng, n_rows, n_items, 0.2)  # item-kNN shape: sources are items too
    b = random_csr(rng, n_items, n_items, 0.2, values=(0.5, 1, 1.5))
    excl_indptr, excl_indices, _ = random_excl(rng, n_rows, n_items)
    allowed = rng.random(n_items) < 0.7
    fill = rng.permutation(n_items).astype(np.int32)
    k = 6
    want = knn_topk(a.indptr, a.indices, a.data, b.indptr, b.indices, b.data, n_items, k,
                    excl_indptr, excl_indices, allowed, fill)
    order = rng.permutation(n_items).astype(np.int32)  # new index p is old item order[p]
    perm = np.empty_like(order)
    perm[order] = np.arange(n_items, dtype=np.int32)
    b_new = sp.csr_matrix((b.data, perm[b.indices], b.indptr), shape=b.shape)[order]
    got = knn_topk(a.indptr, perm[a.indices], a.data, b_new.indptr, b_new.indices, b_new.data, n_items, k,
                   excl_indptr, perm[excl_indices], allowed[order], perm[fill], labels=order,
                   parallel=bool(seed % 2))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("seed", range(4))
def test_positive_and_stamped_paths_agree(seed):
    """Positive products take the zero-test path; a lower bound ``b_min <= 0`` forces the
    stamped path. Both must give the same rows, with exclusions, a mask and fill."""
    rng = np.random.default_rng(seed)
    n_rows, n_src, n_items = 50, 30, 45
    a = random_csr(rng, n_rows, n_src, 0.3)
    b = random_csr(rng, n_src, n_items, 0.2, values=(0.5, 1, 1.5))
    excl_indptr, excl_indices, _ = random_excl(rng, n_rows, n_items)
    allowed = rng.random(n_items) < 0.7 if seed % 2 else None
    fill = np.concatenate([rng.permutation(n_items), rng.permutation(n_items)[:5]]).astype(np.int32)
    args = (a.indptr, a.indices, a.data, b.indptr, b.indices, b.data, n_items, 12,
            excl_indptr, excl_indices, allowed, fill)
    fast = knn_topk(*args, parallel=bool(seed % 2))
    stamped = knn_topk(*args, parallel=bool(seed % 2), b_min=-1.0)
    np.testing.assert_array_equal(fast[0], stamped[0])
    np.testing.assert_array_equal(fast[1], stamped[1])


def test_small_wrappers_check_their_input():
    from recsys_fast.errors import DataError
    from recsys_fast.kernels.knn import neighbour_average

    g = sp.csr_matrix(np.array([[0, 1.0], [1.0, 0]], np.float32))
    with pytest.raises(DataError, match=r"similar_rows: rows must be row indices in \[0, 2\)"):
        similar_rows(g.indptr, g.indices, g.data, [2], 1)
    with pytest.raises(DataError, match="similar_rows: indptr"):
        similar_rows(g.indptr, g.indices, g.data[:1], [0], 1)
    means = np.zeros(2)
    with pytest.raises(DataError, match="targets and others must have one length"):
        neighbour_average([0, 1], [0], g.indptr, g.indices, g.data, g.indptr, g.indices, g.data, means, means)
    with pytest.raises(DataError, match=r"others must be row indices in \[0, 2\)"):
        neighbour_average([0], [5], g.indptr, g.indices, g.data, g.indptr, g.indices, g.data, means, means)
    with pytest.raises(DataError, match="one mean per row of the \\(square\\) graph \\(2\\)"):
        neighbour_average([0], [0], g.indptr, g.indices, g.data, g.indptr, g.indices, g.data, means[:1], means)


def test_neighbour_average_matches_the_formula():
    from recsys_fast.kernels.knn import neighbour_average

    rng = np.random.default_rng(4)
    g = random_csr(rng, 12, 12, 0.4, values=(0.5, 1, -0.5), empty_rows=0.1)  # a graph with negative edges
    ratings = random_csr(rng, 9, 12, 0.5, values=(1, 2, 3, 4, 5))  # others x graph rows, sorted
    n_means, t_means = rng.random(12) * 3, rng.random(12) * 3
    targets, others = rng.integers(0, 12, 40), rng.integers(0, 9, 40)
    pred, found = neighbour_average(targets, others, g.indptr, g.indices, g.data, ratings.indptr, ratings.indices,
                                    ratings.data, n_means, t_means)
    dense = ratings.toarray()
    for p, (a, b) in enumerate(zip(targets, others)):
        nbrs, sims = g.indices[g.indptr[a]:g.indptr[a + 1]], g.data[g.indptr[a]:g.indptr[a + 1]].astype(np.float64)
        rated = dense[b, nbrs] != 0
        den = np.abs(sims[rated]).sum()
        assert found[p] == (den > 0)
        expect = t_means[a] + (sims[rated] * (dense[b, nbrs][rated] - n_means[nbrs][rated])).sum() / den if den else 0.0
        assert pred[p] == pytest.approx(expect, rel=1e-9, abs=1e-12)
