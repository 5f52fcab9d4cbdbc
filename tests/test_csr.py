"""gather_rows: CSR row selection used by every batch path (histories, exclusions, graph rows)."""

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_fast.data.csr import gather_rows


@pytest.mark.parametrize("rows", [[2, 0, -1, 2, 3], [0, 1, 2, 3], [3, 2, 1, 0], [], [-1, -1], [2], [-1], [0]])
def test_rows_match_scipy_and_minus_one_is_empty(rows):
    rng = np.random.default_rng(0)
    m = sp.random(4, 6, density=0.5, format="csr", random_state=rng, dtype=np.float32)
    indptr, indices, data = gather_rows(m.indptr, m.indices, m.data, rows)
    assert indptr.dtype == np.int64 and indices.dtype == np.int32 and data.dtype == np.float32
    got = sp.csr_matrix((data, indices, indptr), shape=(len(rows), 6)).toarray()
    want = np.zeros((len(rows), 6), np.float32)
    for r, row in enumerate(rows):
        if row >= 0:
            want[r] = m[row].toarray()
    np.testing.assert_array_equal(got, want)


def test_one_row_is_a_copy():
    """The single-row path (a request) copies its slice: writing to the result leaves the matrix alone."""
    m = sp.csr_matrix(np.array([[1, 0, 2], [0, 3, 0]], np.float32))
    indptr, indices, data = gather_rows(m.indptr, m.indices, m.data, [0])
    indices[:] = 0
    data[:] = -1
    np.testing.assert_array_equal(m.toarray(), [[1, 0, 2], [0, 3, 0]])
