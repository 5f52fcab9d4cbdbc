"""Batch recommend throughput: ItemKNN vs implicit's CosineRecommender, same data, same process.

Synthetic data (``recsys_fast.datasets.synthetic``; default size M: 100k users x 20k items x 1M
interactions), both models fitted with the same neighbour count (ItemKNN ``k = K - 1``: implicit
counts the item itself). Timed: top-``n`` for every user with seen items excluded —
``ItemKNN.recommend(all user ids)`` (public API, id mapping included) and its scoring step alone
(``recommend_indices``: the index-level protocol, no id mapping),
vs implicit's batch ``recommend(userids, user_items, N=n, filter_already_liked_items=True)``.
Data build and fit are outside the timed part; one warm-up call each compiles/loads first, then
the contenders run interleaved. Reports the median of ``--repeats`` runs, the load average, the ratio, and how many users implicit returned fewer than ``n``
items for (ours always returns ``min(n, unseen)``), and the top-n agreement between the two.

    python benches/knn_throughput.py [--users 100000 --items 20000 --nnz 1000000] [--K 100] [--n 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from recsys_fast import threads
from recsys_fast.datasets import synthetic
from recsys_fast.models.knn import ItemKNN


def interleaved(fns: dict, repeats: int):
    """Median wall time of each callable, runs interleaved (a, b, c, a, b, c, ...) so that load
    from other processes hits every contender alike; one warm-up call each first."""
    outs = {name: fn() for name, fn in fns.items()}
    times = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return ({name: statistics.median(v) for name, v in times.items()},
            {name: statistics.median(v) for name, v in cpu.items()}, times, outs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--nnz", type=int, default=1_000_000)
    parser.add_argument("--K", type=int, default=100, help="implicit's K (ItemKNN gets k = K - 1)")
    parser.add_argument("--n", type=int, default=10, help="items per user")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from implicit.nearest_neighbours import CosineRecommender

    data = synthetic(args.users, args.items, args.nnz, seed=0)
    m = data.matrix
    print(f"data: {data}")
    report = {"size": [args.users, args.items, int(data.nnz)], "K": args.K, "n": args.n, "threads": args.threads}
    with threads.limit(args.threads):
        ours = ItemKNN(k=args.K - 1).fit(data)
        imp = CosineRecommender(K=args.K, num_threads=args.threads)
        imp.fit(m.astype(np.float64).tocsr(), show_progress=False)
        user_ids = data.user_map.ids
        rows = np.arange(data.n_users)

        medians, cpu, runs, outs = interleaved({
            "api": lambda: ours.recommend(user_ids, k=args.n),
            "kernel": lambda: ours.recommend_indices(rows, args.n, exclude="seen"),
            "implicit": lambda: imp.recommend(rows, m, N=args.n, filter_already_liked_items=True),
        }, args.repeats)
    t_api, t_kernel, t_imp = medians["api"], medians["kernel"], medians["implicit"]
    recs = outs["api"]
    imp_ids = np.asarray(outs["implicit"][0])

    short = int((imp_ids < 0).any(axis=1).sum())
    seen_returned = 0
    for r in range(data.n_users):
        got = imp_ids[r][imp_ids[r] >= 0]
        seen_returned += bool(np.isin(got, m.indices[m.indptr[r]:m.indptr[r + 1]]).any())
    our_idx = data.item_map.to_index(recs.items.ravel(), on_unknown="pad").reshape(recs.items.shape)
    ours_short = int((our_idx < 0).any(axis=1).sum())
    agree = np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, min(args.n, (b >= 0).sum()))
                     for a, b in zip(our_idx, imp_ids)])
    n_users = data.n_users
    report.update({
        "recsys_fast_api_s": t_api, "recsys_fast_kernel_s": t_kernel, "implicit_s": t_imp,
        "recsys_fast_api_users_per_s": n_users / t_api, "recsys_fast_kernel_users_per_s": n_users / t_kernel,
        "implicit_users_per_s": n_users / t_imp, "ratio_api": t_imp / t_api, "ratio_kernel": t_imp / t_kernel,
        "implicit_users_short": short, "implicit_users_with_seen_item": seen_returned,
        "recsys_fast_users_short": ours_short, "topn_agreement_with_implicit": float(agree),
        "cpu_s": cpu, "runs": runs, "load_average": os.getloadavg(),
    })
    print(f"recsys_fast recommend (API):   {t_api:.3f} s  {n_users / t_api:,.0f} users/s")
    print(f"recsys_fast scoring (kernel):   {t_kernel:.3f} s  {n_users / t_kernel:,.0f} users/s")
    print(f"implicit recommend:            {t_imp:.3f} s  {n_users / t_imp:,.0f} users/s")
    print(f"speed-up vs implicit: API {t_imp / t_api:.1f}x, kernel {t_imp / t_kernel:.1f}x (medians of {args.repeats})")
    print(f"implicit: {short} of {n_users} users ({100 * short / n_users:.1f}%) got fewer than {args.n} items, "
          f"{seen_returned} got a seen item; recsys_fast: {ours_short} users short (fill=popularity)")
    print(f"CPU seconds (all threads, medians): API {cpu['api']:.3f}, kernel {cpu['kernel']:.3f}, "
          f"implicit {cpu['implicit']:.3f} -> implicit/kernel {cpu['implicit'] / cpu['kernel']:.1f}x per CPU-second")
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    print(f"top-{args.n} agreement with implicit (over implicit's non-padding items): {agree:.4f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
