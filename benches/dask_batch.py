"""batch.score on a 2-worker LocalCluster vs local, same bundle, same run: wall time and equality.

ItemKNN(k=100) on synthetic size M (100k users x 20k items x 1M interactions) saved as a bundle;
local ``batch.score(bundle, out=.parquet)`` (2 Numba threads) vs ``client=`` a LocalCluster of 2
worker processes with 1 thread each (workers load the bundle once; their startup is not timed,
the first job on a fresh cluster is, as a user would see it; then ``--repeats`` local and Dask
runs, interleaved, and their medians).

    python benches/dask_batch.py [--users 100000 --items 20000 --nnz 1000000] [--repeats 5] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--nnz", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved local/Dask runs after the first (median)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import pyarrow.parquet as pq
    from distributed import Client, LocalCluster

    from recsys_fast import batch, threads
    from recsys_fast.datasets import synthetic
    from recsys_fast.models.knn import ItemKNN

    data = synthetic(args.users, args.items, args.nnz, seed=0, with_timestamps=False)
    res = {"users": args.users, "items": args.items, "nnz": args.nnz, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = ItemKNN(k=100).fit(data).save(Path(tmp) / "bundle")
        def run_local(name):
            with threads.limit(2):
                t0 = time.perf_counter()
                result = batch.score(bundle, out=Path(tmp) / f"{name}.parquet", resume=False, progress=False)
                return time.perf_counter() - t0, result

        def run_dask(name, client):
            t0 = time.perf_counter()
            result = batch.score(bundle, out=Path(tmp) / f"{name}.parquet", client=client, resume=False,
                                 chunk_users=len(data.user_map) // 8, progress=False)
            return time.perf_counter() - t0, result

        run_local("warm")
        local_t, dask_t = [], []
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=40) as cluster, Client(cluster) as client:
            res["dask_first_s"], remote = run_dask("first", client)
            for r in range(args.repeats):  # interleaved, so both see the same load
                seconds, local = run_local(f"local{r}")
                local_t.append(seconds)
                seconds, remote = run_dask(f"dask{r}", client)
                dask_t.append(seconds)
        got = pq.read_table(remote.path).sort_by([("user", "ascending"), ("rank", "ascending")])
        res["equal"] = bool(got.equals(pq.read_table(local.path)))
    res.update(local_runs_s=local_t, dask_runs_s=dask_t, local_s=statistics.median(local_t),
               dask_s=statistics.median(dask_t))
    res["dask_vs_local"] = res["dask_s"] / res["local_s"]
    res["load_after"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
