"""TEMPORARY synthetic interaction generator for the kNN benches.

To be replaced by ``recsys_fast.data.datasets.synthetic`` once the data branch lands. Users'
activity is log-normal and item popularity Zipf-like, so work per row is skewed as in real
logs. Deterministic for a seed.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

SIZES = {
    "S": (10_000, 5_000, 100_000),
    "M": (100_000, 20_000, 1_000_000),
    "L": (300_000, 50_000, 10_000_000),
}


def synthetic_csr(n_users: int, n_items: int, nnz: int, seed: int = 0, zipf: float = 0.8,
                  sigma: float = 1.9) -> sp.csr_matrix:
    """users x items CSR (float32 counts 1..5) with about ``nnz`` distinct entries."""
    rng = np.random.default_rng(seed)
    user_w = rng.lognormal(0.0, sigma, n_users)
    item_w = 1.0 / np.arange(1, n_items + 1) ** zipf
    item_w = item_w[rng.permutation(n_items)]
    keys = np.empty(0, dtype=np.int64)
    while keys.shape[0] < nnz:
        m = int((nnz - keys.shape[0]) * 1.2) + 1000
        u = rng.choice(n_users, size=m, p=user_w / user_w.sum())
        i = rng.choice(n_items, size=m, p=item_w / item_w.sum())
        keys = np.unique(np.concatenate([keys, u.astype(np.int64) * n_items + i]))
    keys = rng.permutation(keys)[:nnz]
    rows, cols = keys // n_items, keys % n_items
    vals = rng.integers(1, 6, size=nnz).astype(np.float32)
    m = sp.csr_matrix((vals, (rows, cols)), shape=(n_users, n_items), dtype=np.float32)
    m.sort_indices()
    return m


def dataset(size: str, seed: int = 0) -> sp.csr_matrix:
    return synthetic_csr(*SIZES[size], seed=seed)


def cached_dataset(size: str, seed: int = 0, cache_dir: str | None = None) -> sp.csr_matrix:
    """``dataset`` cached as .npz (L takes ~30 s to generate); cache in $RECSYS_FAST_BENCH_CACHE or /tmp."""
    import os
    from pathlib import Path

    root = Path(cache_dir or os.environ.get("RECSYS_FAST_BENCH_CACHE", "/tmp/recsys_fast_bench_cache"))
    path = root / f"synthetic_{size}_{seed}.npz"
    if path.exists():
        m = sp.load_npz(path).tocsr()
        m.sort_indices()
        return m
    m = dataset(size, seed)
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    sp.save_npz(tmp, m, compressed=False)
    tmp.replace(path)
    return m
