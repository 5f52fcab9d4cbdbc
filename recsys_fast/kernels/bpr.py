"""One fused BPR epoch (Rendle et al. 2009) in Numba: sampling, scoring and the update per sample.

For each positive ``(u, i)`` (in the order given) and each of ``n_negatives`` sampled negatives
``j`` (``sampling.draw_negative``: never one of ``u``'s items), with ``x = b_i - b_j + p_u . (q_i
- q_j)`` the loss is ``softplus(-x)`` plus ``reg / 2 * (|p_u|^2 + |q_i|^2 + |q_j|^2)``, and the
three rows and two biases touched are updated at once (Hogwild: the threads of ``prange`` share
the tables without locks, as implicit's BPR does). The optimiser is Adam applied lazily per row:
each row keeps its own moments and step count and moves only when a sample touches it, so an
epoch costs O(samples x dim), not O((users + items) x dim) per batch.

Blocks of ``block`` positives are the unit of work; block ``b`` draws its negatives from the
stream ``sampling.block_state(seed, b)``. With one thread an epoch is a pure function of its
inputs; with more, the order in which threads write a shared row varies from run to run.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._config import kernel
from ._intrinsics import prefetch
from .sampling import block_state, draw_negative

BETA1 = np.float32(0.9)
BETA2 = np.float32(0.999)
EPS = np.float32(1e-8)
_ONE = np.float32(1.0)
_CORRECTION_STEPS = 1 << 14  # past this many steps Adam's bias correction is 1 to float32 precision


def _bias_correction() -> np.ndarray:
    """Adam's step-size factor sqrt(1 - beta2^t) / (1 - beta1^t) for t = 0 .. steps - 1 (t = 0 unused)."""
    t = np.arange(_CORRECTION_STEPS, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.sqrt(1.0 - float(BETA2) ** t) / (1.0 - float(BETA1) ** t)
    c[0] = 0.0
    return c.astype(np.float32)


@kernel
def _adam(w, m, v, g, step, b1c, b2c):
    m = BETA1 * m + b1c * g
    v = BETA2 * v + b2c * g * g
    return w - step * m / (np.sqrt(v) + EPS), m, v


@kernel
def _prefetch_row(w, m, v, row):
    """Ask for every cache line of ``row`` of the three tables (16 float32 a line)."""
    dim = w.shape[1]
    for c in range(0, dim, 16):
        prefetch(w, row * dim + c)
        prefetch(m, row * dim + c)
        prefetch(v, row * dim + c)


@kernel(parallel=True)
def _bpr_epoch(user_f, item_f, item_b, user_m, user_v, item_m, item_v, bias_m, bias_v, user_t, item_t,
               indptr, indices, pos_users, pos_items, order, cdf, seed, block, n_negatives, lr, reg, max_tries,
               correction):
    n = len(order)
    n_items = item_f.shape[0]
    dim = user_f.shape[1]
    n_blocks = (n + block - 1) // block
    last = len(correction) - 1
    b1c = _ONE - BETA1
    b2c = _ONE - BETA2
    total = 0.0
    for blk in prange(n_blocks):
        state = block_state(seed, blk)
        stop = min(n, (blk + 1) * block)
        part = 0.0
        for s in range(blk * block, stop):
            p = order[s]
            u = pos_users[p]
            i = pos_items[p]
            if s + 1 < stop:  # the next sample's rows come from DRAM while this one computes
                q = order[s + 1]
                _prefetch_row(user_f, user_m, user_v, pos_users[q])
                _prefetch_row(item_f, item_m, item_v, np.int64(pos_items[q]))
            for _ in range(n_negatives):
                state, j = draw_negative(state, indptr, indices, u, n_items, cdf, max_tries)
                x = item_b[i] - item_b[j]
                for k in range(dim):
                    x += user_f[u, k] * (item_f[i, k] - item_f[j, k])
                xd = np.float64(x)
                if xd > 0:
                    e = math.exp(-xd)
                    part += math.log1p(e)
                    z = np.float32(e / (1.0 + e))  # sigmoid(-x) = -dloss/dx
                else:
                    e = math.exp(xd)
                    part += -xd + math.log1p(e)
                    z = np.float32(1.0 / (1.0 + e))
                # per-row Adam step sizes, bias-corrected by each row's own step count
                tu = user_t[u] + 1
                ti = item_t[i] + 1
                tj = item_t[j] + 1
                user_t[u] = tu
                item_t[i] = ti
                item_t[j] = tj
                au = lr * correction[min(tu, last)]
                ai = lr * correction[min(ti, last)]
                aj = lr * correction[min(tj, last)]
                for k in range(dim):
                    pu = user_f[u, k]
                    qi = item_f[i, k]
                    qj = item_f[j, k]
                    user_f[u, k], user_m[u, k], user_v[u, k] = _adam(pu, user_m[u, k], user_v[u, k],
                                                                     reg * pu - z * (qi - qj), au, b1c, b2c)
                    item_f[i, k], item_m[i, k], item_v[i, k] = _adam(qi, item_m[i, k], item_v[i, k],
                                                                     reg * qi - z * pu, ai, b1c, b2c)
                    item_f[j, k], item_m[j, k], item_v[j, k] = _adam(qj, item_m[j, k], item_v[j, k],
                                                                     reg * qj + z * pu, aj, b1c, b2c)
                item_b[i], bias_m[i], bias_v[i] = _adam(item_b[i], bias_m[i], bias_v[i], -z, ai, b1c, b2c)
                item_b[j], bias_m[j], bias_v[j] = _adam(item_b[j], bias_m[j], bias_v[j], z, aj, b1c, b2c)
        total += part
    return total


_CORRECTION = _bias_correction()


def new_adam_state(n_users: int, n_items: int, dim: int) -> dict[str, np.ndarray]:
    """Zeroed per-row Adam moments and step counts for ``bpr_epoch``."""
    z = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
    return {"user_m": z(n_users, dim), "user_v": z(n_users, dim), "item_m": z(n_items, dim),
            "item_v": z(n_items, dim), "bias_m": z(n_items), "bias_v": z(n_items),
            "user_t": np.zeros(n_users, np.int64), "item_t": np.zeros(n_items, np.int64)}


def bpr_epoch(user_f: np.ndarray, item_f: np.ndarray, item_b: np.ndarray, adam: dict[str, np.ndarray],
              indptr: np.ndarray, indices: np.ndarray, pos_users: np.ndarray, pos_items: np.ndarray,
              order: np.ndarray, seed: int, learning_rate: float, reg: float, n_negatives: int = 1,
              cdf: np.ndarray | None = None, block: int = 1024, max_tries: int = 32) -> float:
    """One epoch over the positives ``(pos_users[p], pos_items[p])`` for ``p`` in ``order``; updates
    ``user_f`` (n_users, d), ``item_f`` (n_items, d), ``item_b`` (n_items,) (float32, C order) and
    the ``adam`` state (``new_adam_state``) in place. ``indptr, indices``: every user's items (CSR,
    sorted rows) for the rejection of negatives; ``cdf``: cumulative negative distribution or None
    (uniform). Returns the summed BPR loss (without the L2 term) over the samples."""
    for name, a in (("user_f", user_f), ("item_f", item_f), ("item_b", item_b)):
        if a.dtype != np.float32 or not a.flags.c_contiguous:
            raise ValueError(f"{name} must be a C-contiguous float32 array, got {a.dtype}")
    if user_f.shape[1] != item_f.shape[1] or item_b.shape != (item_f.shape[0],):
        raise ValueError(f"shapes disagree: user_f {user_f.shape}, item_f {item_f.shape}, item_b {item_b.shape}")
    if len(indptr) != user_f.shape[0] + 1:
        raise ValueError(f"indptr has {len(indptr) - 1} rows for {user_f.shape[0]} users")
    cdf = np.zeros(0, np.float64) if cdf is None else np.ascontiguousarray(cdf, dtype=np.float64)
    return float(_bpr_epoch(user_f, item_f, item_b, adam["user_m"], adam["user_v"], adam["item_m"], adam["item_v"],
                            adam["bias_m"], adam["bias_v"], adam["user_t"], adam["item_t"],
                            np.ascontiguousarray(indptr, dtype=np.int64), np.ascontiguousarray(indices, np.int32),
                            np.ascontiguousarray(pos_users, np.int64), np.ascontiguousarray(pos_items, np.int32),
                            np.ascontiguousarray(order, np.int64), cdf, np.uint64(seed), np.int64(block),
                            np.int64(n_negatives), np.float32(learning_rate), np.float32(reg), np.int64(max_tries),
                            _CORRECTION))
