"""The Numba negative sampler and the fused BPR epoch against plain NumPy references."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.sparse as sp

from recsys_fast import threads
from recsys_fast.kernels.bpr import BETA1, BETA2, EPS, bpr_epoch, new_adam_state
from recsys_fast.kernels.sampling import sample_negatives


def _csr(seed=1, n_users=60, n_items=40, density=0.3):
    m = sp.random(n_users, n_items, density=density, format="csr", random_state=seed, dtype=np.float32)
    m.data[:] = 1
    m.sort_indices()
    return m


def test_negatives_are_never_seen_and_reproducible_at_any_thread_count():
    m = _csr()
    users = np.repeat(np.arange(60), 50)
    with threads.limit(1):
        one = sample_negatives(m.indptr, m.indices, users, 40, 3, seed=11, block=64)
    with threads.limit(min(2, numba.config.NUMBA_NUM_THREADS)):
        two = sample_negatives(m.indptr, m.indices, users, 40, 3, seed=11, block=64)
    np.testing.assert_array_equal(one, two)
    assert one.shape == (3000, 3) and one.dtype == np.int64
    assert not (m.toarray() > 0)[users[:, None], one].any()
    other = sample_negatives(m.indptr, m.indices, users, 40, 3, seed=12, block=64)
    assert not np.array_equal(one, other)
    # uniform over each user's unseen items: every unseen item of user 0 turns up
    unseen = np.setdiff1d(np.arange(40), m.indices[m.indptr[0]:m.indptr[1]])
    many = sample_negatives(m.indptr, m.indices, np.zeros(4000, np.int64), 40, 1, seed=3)
    assert set(np.unique(many)) == set(unseen)


def test_negatives_of_a_user_with_every_item_are_kept_after_the_tries():
    m = sp.csr_matrix(np.ones((2, 5), np.float32))
    out = sample_negatives(m.indptr, m.indices, np.array([0, 1]), 5, 2, seed=0, max_tries=4)
    assert out.shape == (2, 2) and ((out >= 0) & (out < 5)).all()


def test_sampler_rejects_bad_arguments():
    m = _csr()
    with pytest.raises(ValueError, match="users must be row indices"):
        sample_negatives(m.indptr, m.indices, np.array([60]), 40, 1, seed=0)
    with pytest.raises(ValueError, match="n_negatives"):
        sample_negatives(m.indptr, m.indices, np.array([0]), 40, 0, seed=0)


def _adam_ref(w, m, v, g, step):
    m = BETA1 * m + (1 - BETA1) * g
    v = BETA2 * v + (1 - BETA2) * g * g
    return w - step * m / (np.sqrt(v) + EPS), m, v


def test_one_sample_epoch_equals_the_numpy_update():
    """The kernel's update of one (u, i, j) triple is the textbook BPR gradient with Adam's first
    bias-corrected step, on exactly the three rows and two biases involved."""
    rng = np.random.default_rng(0)
    m = _csr()
    d, lr, reg = 8, 0.05, 0.01
    U = rng.standard_normal((60, d)).astype(np.float32)
    V = rng.standard_normal((40, d)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    U0, V0, b0 = U.copy(), V.copy(), b.copy()
    users = np.repeat(np.arange(60), np.diff(m.indptr))
    items = m.indices.astype(np.int64)
    p = 17
    u, i = users[p], items[p]
    j = sample_negatives(m.indptr, m.indices, np.array([u]), 40, 1, seed=5)[0, 0]  # the same stream
    state = new_adam_state(60, 40, d)
    loss = bpr_epoch(U, V, b, state, m.indptr, m.indices, users, items, np.array([p]), 5, lr, reg)
    x = b0[i] - b0[j] + U0[u] @ (V0[i] - V0[j])
    z = 1 / (1 + np.exp(x))
    step = lr * np.sqrt(1 - BETA2) / (1 - BETA1)
    zero = np.zeros(d)
    exp_u = _adam_ref(U0[u], zero, zero, reg * U0[u] - z * (V0[i] - V0[j]), step)[0]
    exp_i = _adam_ref(V0[i], zero, zero, reg * V0[i] - z * U0[u], step)[0]
    exp_j = _adam_ref(V0[j], zero, zero, reg * V0[j] + z * U0[u], step)[0]
    np.testing.assert_allclose(loss, np.log1p(np.exp(-x)), rtol=1e-5)
    np.testing.assert_allclose(U[u], exp_u, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(V[i], exp_i, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(V[j], exp_j, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b[[i, j]], [_adam_ref(b0[i], 0.0, 0.0, -z, step)[0],
                                           _adam_ref(b0[j], 0.0, 0.0, z, step)[0]], rtol=1e-5)
    others = np.setdiff1d(np.arange(40), [i, j])
    np.testing.assert_array_equal(V[others], V0[others])
    np.testing.assert_array_equal(np.delete(U, u, axis=0), np.delete(U0, u, axis=0))
    assert state["user_t"][u] == 1 and state["item_t"][i] == 1 and state["item_t"][j] == 1


def test_epochs_lower_the_loss_and_repeat_for_a_seed_on_one_thread():
    m = _csr(n_users=200, n_items=50, density=0.2)
    users = np.repeat(np.arange(200), np.diff(m.indptr))
    items = m.indices.astype(np.int64)

    def run():
        rng = np.random.default_rng(0)
        U = (rng.standard_normal((200, 16)) * 0.1).astype(np.float32)
        V = (rng.standard_normal((50, 16)) * 0.1).astype(np.float32)
        b = np.zeros(50, np.float32)
        state = new_adam_state(200, 50, 16)
        with threads.limit(1):
            losses = [bpr_epoch(U, V, b, state, m.indptr, m.indices, users, items, rng.permutation(m.nnz),
                                int(rng.integers(1 << 62)), 0.01, 1e-4, n_negatives=2, block=64)
                      for _ in range(8)]
        return np.array(losses) / (2 * m.nnz), U

    losses, U = run()
    again, U2 = run()
    assert losses[-1] < 0.7 * losses[0]
    np.testing.assert_array_equal(U, U2)
    np.testing.assert_array_equal(losses, again)


def test_epoch_rejects_bad_arrays():
    m = _csr()
    U, V, b = np.zeros((60, 4), np.float32), np.zeros((40, 4), np.float32), np.zeros(40, np.float32)
    with pytest.raises(ValueError, match="float32"):
        bpr_epoch(U.astype(np.float64), V, b, new_adam_state(60, 40, 4), m.indptr, m.indices, [0], [0], [0], 0,
                  0.1, 0.0)
    with pytest.raises(ValueError, match="rows"):
        bpr_epoch(U[:10], V, b, new_adam_state(10, 40, 4), m.indptr, m.indices, [0], [0], [0], 0, 0.1, 0.0)
