"""topk_similarity against the dense reference: every similarity, shrink, min_support, k >= n."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_fast import threads
from recsys_fast.errors import DataError, ParameterError
from recsys_fast.kernels.similarity import SIMILARITIES, topk_similarity
from tests.jit import size

from tests.reference import dense_of_csr, similarity_reference

TOL = 1e-5


def _csr(mask, values):
    """CSR arrays of the stored entries ``mask`` (values may be explicit zeros)."""
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int64)
    rows, cols = np.nonzero(mask)
    return indptr, cols.astype(np.int32), values[rows, cols].astype(np.float32)


def _check_against_reference(out, dense, k, **options):
    """Our rows are a valid, exact top-k of the reference (float noise allowed only near ties/0)."""
    score, eligible = similarity_reference(dense, **options)
    ip, ii, dd = out
    n = dense.shape[0]
    assert ip.dtype == np.int64 and ii.dtype == np.int32 and dd.dtype == np.float32
    assert ip.shape == (n + 1,) and ip[0] == 0 and np.all(np.diff(ip) >= 0)
    for i in range(n):
        idx, s = ii[ip[i]:ip[i + 1]], dd[ip[i]:ip[i + 1]]
        assert len(idx) <= k
        assert len(np.unique(idx)) == len(idx)
        assert np.all(eligible[i, idx]), "an entry without enough co-support (or self)"
        assert np.all(s > 0)
        np.testing.assert_allclose(s, score[i, idx], rtol=TOL, atol=TOL)
        assert np.all(np.diff(s) <= 0), "scores not sorted descending"
        tied = np.diff(s) == 0
        assert np.all(np.diff(idx.astype(np.int64))[tied] > 0), "ties not broken by lower index"
        rest = eligible[i].copy()
        rest[idx] = False
        floor = float(s[-1]) if len(idx) == k else 0.0
        assert np.all(score[i, rest] <= floor + TOL), "a better eligible row was left out"
        n_strong = int(np.sum(eligible[i] & (score[i] > TOL)))
        assert len(idx) >= min(k, n_strong)


@st.composite
def csr_inputs(draw):
    n_rows = draw(st.integers(0, 40))
    n_cols = draw(st.integers(0, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from([0.1, 0.3, 0.7]))
    rng = np.random.default_rng(seed)
    mask = rng.random((n_rows, n_cols)) < density
    if n_rows > 2 and draw(st.booleans()):
        mask[rng.integers(n_rows)] = False  # an empty row
    if n_cols > 2:
        mask[:, rng.integers(n_cols)] = False  # an empty column
    if draw(st.booleans()):  # equal values: the counting ("binary") path
        values = np.full((n_rows, n_cols), draw(st.sampled_from([1.0, 2.5])), dtype=np.float32)
    else:
        values = rng.integers(0, 5, size=(n_rows, n_cols)).astype(np.float32)  # 0 = explicit zero
    return mask, values


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=csr_inputs(), similarity=st.sampled_from(SIMILARITIES), k=st.integers(1, 50),
       shrink=st.sampled_from([0.0, 2.5]), min_support=st.integers(1, 3),
       alpha=st.sampled_from([0.5, 0.2, 0.9]), exclude_self=st.booleans())
def test_matches_dense_reference(data, similarity, k, shrink, min_support, alpha, exclude_self):
    mask, values = data
    indptr, indices, vals = _csr(mask, values)
    options = dict(similarity=similarity, shrink=shrink, min_support=min_support, alpha=alpha,
                   exclude_self=exclude_self)
    out = topk_similarity(indptr, indices, vals, mask.shape[1], k, **options)
    dense = dense_of_csr(indptr, indices, vals, mask.shape[1])
    _check_against_reference(out, dense, k, **options)


@settings(max_examples=30, deadline=None)
@given(data=csr_inputs(), k=st.integers(1, 45), shrink=st.sampled_from([0.0, 1.0]))
def test_jaccard_ties_match_reference_exactly(data, k, shrink):
    """Jaccard scores are small rationals, so ties are exact and the index lists must be equal."""
    mask, values = data
    indptr, indices, vals = _csr(mask, values)
    ip, ii, _ = topk_similarity(indptr, indices, vals, mask.shape[1], k, "jaccard", shrink=shrink)
    dense = dense_of_csr(indptr, indices, vals, mask.shape[1])
    score, eligible = similarity_reference(dense, "jaccard", shrink=shrink)
    for i in range(mask.shape[0]):
        cands = [j for j in range(mask.shape[0]) if eligible[i, j] and score[i, j] > 0]
        cands.sort(key=lambda j: (-score[i, j], j))
        assert ii[ip[i]:ip[i + 1]].tolist() == cands[:k]


def _random_csr(rng, n_rows, n_cols, density, binary=False):
    mask = rng.random((n_rows, n_cols)) < density
    values = (rng.random((n_rows, n_cols)) * 4 + 0.5).astype(np.float32)
    if binary:
        values[:] = 1.0
    return _csr(mask, values)


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_large_and_small_k_match_reference(similarity, binary):
    """k = 1000 (most candidates kept) and k = 5 (most dropped) on 1500 rows (400 with the JIT
    off), sparse and dense row paths."""
    rng = np.random.default_rng(7)
    indptr, indices, vals = _random_csr(rng, size(1500, 400), 60, 0.05, binary)
    dense = dense_of_csr(indptr, indices, vals, 60)
    for k in (1000, 5):
        out = topk_similarity(indptr, indices, vals, 60, k, similarity, min_support=2)
        _check_against_reference(out, dense, k, similarity=similarity, min_support=2)
    if not (binary and similarity in ("pearson", "adjusted_cosine")):  # centred 0/1 rows are all 0
        assert np.diff(out[0]).max() == 5


@pytest.mark.parametrize("k", [1, 7, 64, 400])
def test_scores_crowded_into_one_bucket_are_ordered_exactly(k):
    """Near-equal scores share a histogram bucket of the selection: the kept set and its
    order must still be exact (sorted inside the bucket, ties by lower index)."""
    rng = np.random.default_rng(5)
    n_rows, n_cols = 600, 40
    mask = rng.random((n_rows, n_cols)) < 0.3
    values = (1.0 + rng.random((n_rows, n_cols)) * 1e-3).astype(np.float32)
    indptr, indices, vals = _csr(mask, values)
    out = topk_similarity(indptr, indices, vals, n_cols, k)
    _check_against_reference(out, dense_of_csr(indptr, indices, vals, n_cols), k)
    o_ptr, o_idx, o_val = out
    for r in range(n_rows):
        s, j = o_val[o_ptr[r]:o_ptr[r + 1]], o_idx[o_ptr[r]:o_ptr[r + 1]]
        order = np.lexsort((j, -s.astype(np.float64)))
        np.testing.assert_array_equal(order, np.arange(len(s)))


@pytest.mark.parametrize("k", [3, 5, 300, 450])
def test_hundreds_of_exact_ties_are_broken_by_lower_index(k):
    """Item 0 shares one user with each of 400 single-user items (equal cosine 1/20) and two
    users with items 401-403 (higher): the ties fill one histogram bucket far beyond what the
    insertion sort takes, and must still come out by lower index after the better items."""
    n_items = 404
    users = [[0, j] for j in range(1, 401)] + [[0, j] for j in (401, 402, 403)] * 2
    ui = np.zeros((len(users), n_items), np.float32)
    for u, items in enumerate(users):
        ui[u, items] = 1.0
    indptr, indices, vals = _csr(ui.T > 0, ui.T)
    o_ptr, o_idx, o_val = topk_similarity(indptr, indices, vals, len(users), k)
    row = o_idx[o_ptr[0]:o_ptr[1]]
    expect = np.array([401, 402, 403] + list(range(1, 401)))[:k]
    np.testing.assert_array_equal(row, expect)
    assert np.all(np.diff(o_val[o_ptr[0]:o_ptr[1]]) <= 0)


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_one_and_two_threads_identical(similarity, binary):
    rng = np.random.default_rng(3)
    indptr, indices, vals = _random_csr(rng, size(700, 200), 80, 0.08, binary)
    results = []
    for n in (1, 2):
        with threads.limit(n):
            results.append(topk_similarity(indptr, indices, vals, 80, 20, similarity, shrink=3.0))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_concurrent_calls_from_eight_threads_agree():
    """A service calls kernels from many Python threads at once (safe threading layer)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(11)
    indptr, indices, vals = _random_csr(rng, 400, 50, 0.1)
    expected = topk_similarity(indptr, indices, vals, 50, 10)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: topk_similarity(indptr, indices, vals, 50, 10), range(16)))
    for res in results:
        for a, b in zip(res, expected):
            np.testing.assert_array_equal(a, b)


def test_unsorted_rows_are_sorted_first():
    indptr = np.array([0, 3, 5])
    out_sorted = topk_similarity(indptr, [0, 1, 2, 0, 2],
                                 np.array([1.0, 2.0, 3.0, 1.0, 1.0]), 3, 5)
    out_shuffled = topk_similarity(indptr, [2, 0, 1, 2, 0], [3.0, 1.0, 2.0, 1.0, 1.0], 3, 5)
    for a, b in zip(out_sorted, out_shuffled):
        np.testing.assert_array_equal(a, b)


def test_empty_matrix():
    ip, ii, dd = topk_similarity(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), 4, 3)
    assert ip.tolist() == [0] and ii.size == 0 and dd.size == 0


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(indices=[0, 0]), DataError, "duplicate column index"),
    (dict(indices=[0, 7]), DataError, r"column index 7 out of range \[0, 3\)"),
    (dict(data=[1.0, np.nan]), DataError, "values must be finite"),
    (dict(indptr=[0, 1]), DataError, "indptr must start at 0"),
    (dict(similarity="euclid"), ParameterError, "similarity must be one of 'cosine', .*got 'euclid'"),
    (dict(k=0), ParameterError, "k must be an integer >= 1, got 0"),
    (dict(shrink=-1.0), ParameterError, "shrink must be a finite number >= 0.0, got -1.0"),
    (dict(min_support=0), ParameterError, "min_support must be an integer >= 1, got 0"),
    (dict(alpha=1.5), ParameterError, r"alpha must be a finite number >= 0.0 and <= 1.0, got 1.5"),
])
def test_bad_input_raises(kwargs, error, match):
    args = dict(indptr=[0, 2], indices=[0, 1], data=[1.0, 2.0], n_cols=3, k=2)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        topk_similarity(**args)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=csr_inputs(), similarity=st.sampled_from(SIMILARITIES), k=st.integers(1, 20),
       shrink=st.sampled_from([0.0, 2.5]), min_support=st.integers(1, 2), seed=st.integers(0, 2**32 - 1),
       n_added=st.integers(0, 12))
def test_update_equals_a_full_call(data, similarity, k, shrink, min_support, seed, n_added):
    """update_topk_similarity from an earlier result equals topk_similarity on the new matrix,
    bit for bit, when entries are added or re-weighted and rows that did not exist appear."""
    from recsys_fast.kernels.similarity_update import update_topk_similarity

    mask, values = data
    n_rows, n_cols = mask.shape
    if n_rows == 0 or n_cols == 0:
        return
    rng = np.random.default_rng(seed)
    new_mask, new_values = mask.copy(), values.copy()
    for _ in range(n_added):
        r, c = rng.integers(n_rows), rng.integers(n_cols)
        new_mask[r, c] = True
        new_values[r, c] = values.flat[0] if rng.random() < 0.7 else rng.integers(1, 5)
    absent = rng.random(n_rows) < 0.15  # rows the old matrix did not have
    opts = dict(similarity=similarity, shrink=shrink, min_support=min_support, alpha=0.3)
    keep = np.flatnonzero(~absent)
    o_ptr, o_idx, o_val = _csr(mask[keep], values[keep])
    g_ptr, g_idx, g_val = topk_similarity(o_ptr, o_idx, o_val, n_cols, k, **opts)
    lens = np.zeros(n_rows, np.int64)
    lens[keep] = np.diff(g_ptr)
    graph = (np.r_[0, np.cumsum(lens)], keep[g_idx].astype(np.int32), g_val)
    old = _csr(mask & ~absent[:, None], values)
    new = _csr(new_mask, new_values)
    expected = topk_similarity(*new, n_cols, k, **opts)
    *got, info = update_topk_similarity(old, len(keep), graph, new, n_cols, k, **opts)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert info["rows"] == n_rows and info["changed"] <= info["recomputed"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=csr_inputs(), similarity=st.sampled_from(SIMILARITIES), k=st.integers(1, 50),
       shrink=st.sampled_from([0.0, 2.5]), min_support=st.integers(1, 3), alpha=st.sampled_from([0.5, 0.2]),
       seed=st.integers(0, 2**32 - 1))
def test_query_rows_get_the_graph_rows_of_equal_targets(data, similarity, k, shrink, min_support, alpha, seed):
    """query_topk_similarity of a target row's own values (queries in any order, with repeats)
    is that row of topk_similarity(exclude_self=False): the one kernel and the same rules."""
    from recsys_fast.kernels.similarity import neighbour_index, query_topk_similarity

    mask, values = data
    indptr, indices, vals = _csr(mask, values)
    n_rows, n_cols = mask.shape
    options = dict(similarity=similarity, shrink=shrink, min_support=min_support)
    full = topk_similarity(indptr, indices, vals, n_cols, k, alpha=alpha, exclude_self=False, **options)
    index = neighbour_index(indptr, indices, vals, n_cols, similarity, alpha)
    rows = np.random.default_rng(seed).integers(0, max(n_rows, 1), size=min(n_rows, 7) * 2) if n_rows else []
    q_ptr = np.r_[0, np.cumsum([indptr[r + 1] - indptr[r] for r in rows])].astype(np.int64)
    q_idx = np.concatenate([indices[indptr[r]:indptr[r + 1]] for r in rows] + [np.zeros(0, np.int32)])
    q_val = np.concatenate([vals[indptr[r]:indptr[r + 1]] for r in rows] + [np.zeros(0, np.float32)])
    ip, ii, dd = query_topk_similarity(index, q_ptr, q_idx, q_val, k, shrink=shrink, min_support=min_support)
    assert ip.shape == (len(rows) + 1,)
    for q, r in enumerate(rows):
        np.testing.assert_array_equal(ii[ip[q]:ip[q + 1]], full[1][full[0][r]:full[0][r + 1]])
        np.testing.assert_allclose(dd[ip[q]:ip[q + 1]], full[2][full[0][r]:full[0][r + 1]], rtol=1e-6)


def test_query_with_other_values_matches_the_reference():
    """A query whose values differ from the targets' common value leaves the counting path and
    is scored as the dense reference scores it against the targets."""
    from recsys_fast.kernels.similarity import neighbour_index, query_topk_similarity

    rng = np.random.default_rng(3)
    mask = rng.random((30, 10)) < 0.4
    t_ptr, t_idx, t_val = _csr(mask, np.ones(mask.shape, np.float32))
    query = (rng.random((1, 10)) < 0.5) * rng.integers(1, 5, size=(1, 10)).astype(np.float32)
    q_ptr, q_idx, q_val = _csr(query != 0, query)
    for similarity in SIMILARITIES:
        index = neighbour_index(t_ptr, t_idx, t_val, 10, similarity, 0.3)
        ip, ii, dd = query_topk_similarity(index, q_ptr, q_idx, q_val, 40)
        stacked = np.vstack([query, mask.astype(np.float32)])
        score, eligible = similarity_reference(stacked, similarity=similarity, alpha=0.3, exclude_self=True)
        if similarity == "adjusted_cosine":  # the query is centred with the targets' column means
            continue
        want = [j for j in range(1, 31) if eligible[0, j] and score[0, j] > TOL]
        assert sorted(ii.tolist()) == sorted(j - 1 for j in want), similarity
        np.testing.assert_allclose(dd, score[0, np.asarray(ii) + 1], rtol=1e-5, atol=1e-6)
