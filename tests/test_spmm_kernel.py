"""The CSR x dense kernel (LightGCN's propagation) against SciPy."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.sparse as sp

from recsys_fast import threads
from recsys_fast.kernels.spmm import csr_dense_mm, row_blocks


def _case(seed=0, n=70, m=50, d=7, density=0.1):
    rng = np.random.default_rng(seed)
    a = sp.random(n, m, density=density, format="csr", random_state=seed, dtype=np.float32)
    a = sp.vstack([a[:10], sp.csr_matrix((5, m), dtype=np.float32), a[10:]]).tocsr()  # empty rows
    a.sort_indices()
    return a, rng.standard_normal((m, d)).astype(np.float32)


def test_matches_scipy_at_any_thread_count():
    a, x = _case()
    expected = a @ x
    with threads.limit(1):
        one = csr_dense_mm(a.indptr, a.indices, a.data, x)
    with threads.limit(min(2, numba.config.NUMBA_NUM_THREADS)):
        two = csr_dense_mm(a.indptr, a.indices, a.data, x)
    np.testing.assert_allclose(one, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(one, two)  # each row summed by one thread, in stored order
    assert one.dtype == np.float32 and one.flags.c_contiguous


def test_base_accumulator_rows_and_source_mask():
    a, x = _case(1, n=40, m=40)
    rng = np.random.default_rng(2)
    base = rng.standard_normal((a.shape[0], x.shape[1])).astype(np.float32)
    acc = rng.standard_normal(base.shape).astype(np.float32)
    acc0 = acc.copy()
    rows = np.array([3, 0, 17, 3], dtype=np.int64)
    mask = rng.random(40) < 0.5
    got = csr_dense_mm(a.indptr, a.indices, a.data, x, base=base, acc=acc, rows=rows, src_mask=mask)
    want = (base + a @ (x * mask[:, None]))[rows]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    touched = np.zeros(len(acc), bool)
    touched[rows] = True
    np.testing.assert_array_equal(acc[~touched], acc0[~touched])
    np.testing.assert_allclose(acc[[0, 17]], acc0[[0, 17]] + got[[1, 2]], rtol=1e-5, atol=1e-5)


def test_row_blocks_balance_entries():
    indptr = np.concatenate([[0], np.cumsum([1] * 100 + [100] * 10)]).astype(np.int64)
    bounds = row_blocks(indptr, 4)
    assert bounds[0] == 0 and bounds[-1] == 110 and np.all(np.diff(bounds) > 0)
    per_block = np.diff(indptr[bounds])
    assert per_block.max() <= 2 * per_block.min() + 100


def test_bad_inputs_are_named():
    a, x = _case()
    with pytest.raises(ValueError, match="column indices"):
        csr_dense_mm(a.indptr, a.indices, a.data, x[:10])
    with pytest.raises(ValueError, match="base must be"):
        csr_dense_mm(a.indptr, a.indices, a.data, x, base=np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="rows must lie"):
        csr_dense_mm(a.indptr, a.indices, a.data, x, rows=np.array([a.shape[0]]))
