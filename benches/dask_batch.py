"""batch.score on a 2-worker LocalCluster vs local, same bundle, same run: wall time and equality.

ItemKNN(k=100) on synthetic size M (100k users x 20k items x 1M interactions) saved as a bundle;
local ``batch.score(bundle, out=.parquet)`` (2 Numba threads) vs ``client=`` a LocalCluster of 2
worker processes with 1 thread each (workers load the bundle once; their startup is not timed,
the first job on a fresh cluster is, as a user would see it, and a second run is reported too).

    python benches/dask_batch.py [--users 100000 --items 20000 --nnz 1000000] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
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
        with threads.limit(2):
            batch.score(bundle, out=Path(tmp) / "warm.parquet", progress=False)
            t0 = time.perf_counter()
            local = batch.score(bundle, out=Path(tmp) / "local.parquet", progress=False)
            res["local_s"] = time.perf_counter() - t0
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=40) as cluster, Client(cluster) as client:
            for name in ("dask_first_s", "dask_second_s"):
                t0 = time.perf_counter()
                remote = batch.score(bundle, out=Path(tmp) / f"{name}.parquet", client=client, resume=False,
                                     chunk_users=len(data.user_map) // 8, progress=False)
                res[name] = time.perf_counter() - t0
        got = pq.read_table(remote.path).sort_by([("user", "ascending"), ("rank", "ascending")])
        res["equal"] = bool(got.equals(pq.read_table(local.path)))
    res["dask_vs_local"] = res["dask_second_s"] / res["local_s"]
    res["load_after"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
