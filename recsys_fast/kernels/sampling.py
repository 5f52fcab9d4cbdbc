"""Negative sampling with seen-item rejection, in Numba.

Randomness comes from a counter-based stream (SplitMix64) keyed by ``(seed, block)``: work is
cut into blocks of ``block`` rows, and block ``b`` draws from the stream of ``block_state(seed,
b)`` whatever thread runs it. Results therefore depend on the seed and the block size only, not
on the thread count or the schedule.

A negative for user ``u`` is an item drawn uniformly (or from ``cdf``, a cumulative distribution
over items) and redrawn while it is one of ``u``'s items (a binary search in the user's sorted CSR
row), at most ``max_tries`` draws; after that the last draw is kept (users who have seen almost
the whole catalogue).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._config import kernel

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2 ** -53


@njit(cache=True, nogil=True, inline="always")
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True, inline="always")
def block_state(seed, block):
    """The stream state of ``block`` under ``seed`` (both non-negative integers)."""
    return _mix(np.uint64(seed) * _GOLDEN + _mix(np.uint64(block) + _GOLDEN))


@njit(cache=True, nogil=True, inline="always")
def next_uniform(state):
    """``(new state, float64 uniform in [0, 1))``: one SplitMix64 step."""
    state = state + _GOLDEN
    return state, float(_mix(state) >> np.uint64(11)) * _TO_UNIT


@njit(cache=True, nogil=True, inline="always")
def next_index(state, n):
    """``(new state, int64 uniform in [0, n))``."""
    state, r = next_uniform(state)
    i = np.int64(r * n)
    return state, min(i, n - 1)


@njit(cache=True, nogil=True, inline="always")
def draw_negative(state, indptr, indices, user, n_items, cdf, max_tries):
    """``(new state, item)``: an item that is not in ``user``'s sorted CSR row (see module doc)."""
    lo, hi = indptr[user], indptr[user + 1]
    item = np.int64(0)
    for _ in range(max_tries):
        if len(cdf) == 0:
            state, item = next_index(state, n_items)
        else:
            state, r = next_uniform(state)
            item = min(np.int64(np.searchsorted(cdf, r, side="right")), n_items - 1)
        pos = lo + np.searchsorted(indices[lo:hi], item)
        if pos == hi or indices[pos] != item:
            return state, item
    return state, item


@kernel(parallel=True)
def _sample_negatives(indptr, indices, users, n_items, n_negatives, cdf, seed, block, max_tries):
    n = len(users)
    out = np.empty((n, n_negatives), dtype=np.int64)
    n_blocks = (n + block - 1) // block
    for b in prange(n_blocks):
        state = block_state(seed, b)
        for r in range(b * block, min(n, (b + 1) * block)):
            for c in range(n_negatives):
                state, out[r, c] = draw_negative(state, indptr, indices, users[r], n_items, cdf, max_tries)
    return out


def sample_negatives(indptr: np.ndarray, indices: np.ndarray, users: np.ndarray, n_items: int, n_negatives: int,
                     seed: int, cdf: np.ndarray | None = None, block: int = 1024, max_tries: int = 32) -> np.ndarray:
    """(len(users), n_negatives) int64 items, none of them (bar users with almost every item) one of
    the user's items in the CSR ``(indptr, indices)`` with sorted rows. ``cdf``: cumulative item
    distribution (float64, last entry 1) or None for uniform. Parallel and reproducible: the same
    ``seed`` and ``block`` give the same draws at any thread count."""
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    users = np.ascontiguousarray(users, dtype=np.int64)
    cdf = np.zeros(0, np.float64) if cdf is None else np.ascontiguousarray(cdf, dtype=np.float64)
    if n_items < 1 or n_negatives < 1 or block < 1 or max_tries < 1:
        raise ValueError(f"n_items, n_negatives, block and max_tries must be >= 1, got {n_items}, {n_negatives}, "
                         f"{block}, {max_tries}")
    if len(users) and (users.min() < 0 or users.max() >= len(indptr) - 1):
        raise ValueError(f"users must be row indices in [0, {len(indptr) - 1}), got {users.min()}..{users.max()}")
    return _sample_negatives(indptr, indices, users, np.int64(n_items), np.int64(n_negatives), cdf,
                             np.uint64(seed), np.int64(block), np.int64(max_tries))
