"""TF-IDF / BM25 / L2 weighting against the dense references and implicit's own functions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_fast.errors import DataError
from recsys_fast.kernels.weighting import bm25_weight, l2_normalize_rows, tfidf_weight

from tests.reference import bm25_reference, dense_of_csr, tfidf_reference


@st.composite
def count_matrices(draw):
    n_rows = draw(st.integers(1, 25))
    n_cols = draw(st.integers(1, 25))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dense = rng.integers(0, 6, size=(n_rows, n_cols)).astype(np.float32)
    dense *= rng.random((n_rows, n_cols)) < draw(st.sampled_from([0.1, 0.4, 1.0]))
    if n_rows > 1:
        dense[rng.integers(n_rows)] = 0  # an empty row
    indptr = np.concatenate([[0], np.cumsum((dense != 0).sum(axis=1))]).astype(np.int64)
    rows, cols = np.nonzero(dense)
    return dense, indptr, cols.astype(np.int32), dense[rows, cols]


def _values_at(dense_out, indptr, indices):
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return dense_out[rows, indices]


@settings(max_examples=40, deadline=None)
@given(m=count_matrices())
def test_tfidf_matches_reference(m):
    dense, indptr, indices, data = m
    got = tfidf_weight(indptr, indices, data, *dense.shape)
    assert got.dtype == np.float32 and got.shape == data.shape
    np.testing.assert_allclose(got, _values_at(tfidf_reference(dense), indptr, indices), rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(m=count_matrices(), k1=st.sampled_from([100.0, 1.2, 0.0]), b=st.sampled_from([0.8, 0.75, 0.0, 1.0]))
def test_bm25_matches_reference(m, k1, b):
    dense, indptr, indices, data = m
    got = bm25_weight(indptr, indices, data, *dense.shape, k1=k1, b=b)
    np.testing.assert_allclose(got, _values_at(bm25_reference(dense, k1, b), indptr, indices),
                               rtol=1e-5, atol=1e-6)


def test_matches_implicit_numerically():
    nn = pytest.importorskip("implicit.nearest_neighbours")
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    x = sp.random(300, 200, density=0.05, format="csr", random_state=rng, dtype=np.float64)
    x.data = np.ceil(x.data * 5)
    args = (x.indptr, x.indices, x.data, *x.shape)
    np.testing.assert_allclose(tfidf_weight(*args), nn.tfidf_weight(x).tocsr().data, rtol=1e-6)
    np.testing.assert_allclose(bm25_weight(*args), nn.bm25_weight(x).tocsr().data, rtol=1e-6)
    np.testing.assert_allclose(bm25_weight(*args, k1=1.2, b=0.75),
                               nn.bm25_weight(x, K1=1.2, B=0.75).tocsr().data, rtol=1e-6)
    np.testing.assert_allclose(l2_normalize_rows(*args), nn.normalize(x).tocsr().data, rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(m=count_matrices())
def test_l2_rows_have_unit_norm(m):
    dense, indptr, indices, data = m
    out = dense_of_csr(indptr, indices, l2_normalize_rows(indptr, indices, data, *dense.shape), dense.shape[1])
    norms = np.sqrt((out ** 2).sum(axis=1))
    np.testing.assert_allclose(norms, np.where((dense != 0).any(axis=1), 1.0, 0.0), rtol=1e-6)


def test_negative_weights_raise():
    with pytest.raises(DataError, match="weights must be >= 0 for bm25_weight, got -1.0"):
        bm25_weight([0, 2], [0, 1], [1.0, -1.0], 1, 2)
    with pytest.raises(DataError, match="weights must be >= 0 for tfidf_weight"):
        tfidf_weight([0, 1], [0], [-2.0], 1, 1)


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match=r"b must be a finite number >= 0.0 and <= 1.0, got 2"):
        bm25_weight([0, 1], [0], [1.0], 1, 1, b=2)
    with pytest.raises(TypeError, match="'K1' was renamed to 'k1'"):
        bm25_weight([0, 1], [0], [1.0], 1, 1, K1=2.0)
    with pytest.raises(DataError, match="indices and data must have the same length"):
        tfidf_weight([0, 1], [0], [1.0, 2.0], 1, 1)
