"""Single-request latency of ItemKNN / UserKNN: one user per ``recommend`` call, as a service makes.

Synthetic data (default size M: 100k users x 20k items x 1M interactions), ``prepare()`` first so
compilation is excluded. Times ``recommend([user], k)`` for ``--calls`` training users, and for a
new user scored from a ``history=`` of ``--history`` items (fold-in). Prints p50 / p99 in
microseconds (wall clock, this process, one Python thread).

    python benches/knn_latency.py [--users 100000 --items 20000 --nnz 1000000] [--k 10] [--calls 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from recsys_fast.datasets import synthetic
from recsys_fast.models.knn import ItemKNN, UserKNN


def percentiles(fn, calls: int) -> tuple[float, float]:
    lat = np.empty(calls)
    for c in range(calls):
        t0 = time.perf_counter()
        fn(c)
        lat[c] = time.perf_counter() - t0
    return float(np.percentile(lat, 50) * 1e6), float(np.percentile(lat, 99) * 1e6)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--nnz", type=int, default=1_000_000)
    parser.add_argument("--neighbours", type=int, default=99)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--history", type=int, default=20)
    args = parser.parse_args(argv)

    data = synthetic(args.users, args.items, args.nnz, seed=0)
    ids = data.user_map.ids
    new_user = int(ids.max()) + 1
    history = {new_user: data.item_map.ids[: args.history].tolist()}
    print(f"data: {data}")
    for model in (ItemKNN(k=args.neighbours), UserKNN(k=args.neighbours)):
        model.fit(data).prepare()
        name = type(model).__name__
        p50, p99 = percentiles(lambda c: model.recommend([ids[c % len(ids)]], k=args.k), args.calls)
        print(f"{name:8s} training user   p50 {p50:8.0f} us   p99 {p99:8.0f} us")
        p50, p99 = percentiles(lambda c: model.recommend([new_user], k=args.k, history=history), args.calls)
        print(f"{name:8s} fold-in ({args.history} items) p50 {p50:8.0f} us   p99 {p99:8.0f} us")


if __name__ == "__main__":
    main()
