"""pytest-benchmark: item-item similarity build and batch recommend at synthetic sizes S/M/L.

Skipped unless ``RECSYS_FAST_BENCH=1`` (the normal ``pytest`` run collects ``tests/`` only and
would skip these anyway). ``RECSYS_FAST_BENCH_SIZES`` picks sizes (default ``S,M``; L takes
minutes). Data are generated and models fitted outside the timed part; the first call on a tiny
input compiles (or loads the cached) kernels and its time is stored as ``compile_s`` in the
benchmark's ``extra_info`` rather than timed.

    RECSYS_FAST_BENCH=1 RECSYS_FAST_BENCH_SIZES=S,M,L python -m pytest benches/bench_knn.py \\
        --benchmark-columns=median,min,max,rounds --benchmark-json benches/results/bench_knn.json
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(os.environ.get("RECSYS_FAST_BENCH") != "1",
                                reason="benchmarks run only with RECSYS_FAST_BENCH=1")

SIZES = {
    "S": (10_000, 5_000, 100_000),
    "M": (100_000, 20_000, 1_000_000),
    "L": (300_000, 50_000, 10_000_000),
}
SELECTED = [s for s in os.environ.get("RECSYS_FAST_BENCH_SIZES", "S,M").split(",") if s in SIZES]
THREADS = int(os.environ.get("RECSYS_FAST_BENCH_THREADS", "2"))
K = 100


@pytest.fixture(scope="module", params=SELECTED)
def data(request):
    from recsys_fast.datasets import synthetic

    return request.param, synthetic(*SIZES[request.param], seed=0, with_timestamps=False)


def _compile_seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def test_similarity_build(benchmark, data):
    """Item-item cosine top-100 from the item x user CSR (transpose included, as in fit)."""
    from recsys_fast import threads
    from recsys_fast.kernels._csr_checks import transpose
    from recsys_fast.kernels.similarity import topk_similarity

    size, inter = data
    m = inter.matrix

    def build(mat):
        ip, ii, dd = transpose(np.asarray(mat.indptr, np.int64), np.asarray(mat.indices, np.int32),
                               np.asarray(mat.data, np.float32), mat.shape[1])
        return topk_similarity(ip, ii, dd, mat.shape[0], K, "cosine")

    with threads.limit(THREADS):
        benchmark.extra_info["compile_s"] = _compile_seconds(lambda: build(m[:50].tocsr()))
        benchmark.extra_info.update(size=size, threads=THREADS, k=K, nnz=int(m.nnz),
                                    work=float(np.sum(np.diff(m.indptr).astype(np.float64) ** 2)))
        out = benchmark.pedantic(build, args=(m,), rounds=3, iterations=1, warmup_rounds=1)
    assert out[0].shape[0] == m.shape[1] + 1


def test_recommend_all_users(benchmark, data):
    """Top-10 for every user with seen items excluded (public API, id mapping included)."""
    from recsys_fast import threads
    from recsys_fast.models.knn import ItemKNN

    size, inter = data
    with threads.limit(THREADS):
        model = ItemKNN(k=K - 1).fit(inter)
        users = inter.user_map.ids
        benchmark.extra_info["compile_s"] = _compile_seconds(lambda: model.recommend(users[:10], k=10))
        benchmark.extra_info.update(size=size, threads=THREADS, users=int(len(users)))
        recs = benchmark.pedantic(model.recommend, args=(users,), kwargs={"k": 10}, rounds=3,
                                  iterations=1, warmup_rounds=1)
    benchmark.extra_info["users_per_s"] = len(users) / benchmark.stats.stats.median
    assert recs.items.shape == (len(users), 10)
