"""Memory of ``batch.score`` per chunk as the data grows: sizes M and L, each in its own process.

For each size a process builds ItemKNN(k=100) on ``recsys_fast.datasets.synthetic`` (binary,
seed 0), scores every user once to warm up, then scores every user again to Parquet with
``tracemalloc`` on and reports the traced peak: the arrays that numpy and Python allocate
during the job (the chunk's history, exclusions, top-k and output columns; not Numba's or
Arrow's own pools, which hold per-thread accumulators and the Parquet writer's buffers). The
process's VmHWM growth is printed beside it, but the allocator reuses memory freed by the fit,
so that figure varies by tens of MiB from run to run.

    python benches/batch_memory.py [--sizes M L]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"S": (10_000, 5_000, 100_000), "M": (100_000, 20_000, 1_000_000), "L": (300_000, 50_000, 10_000_000)}


def measure(size: str) -> dict:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).parent))
    from compare_knn import _reset_peak, _status

    from recsys_fast import batch
    from recsys_fast.datasets import synthetic
    from recsys_fast.models.knn import ItemKNN

    data = synthetic(*SIZES[size], seed=0, with_timestamps=False)
    model = ItemKNN(k=100).fit(data)
    with tempfile.TemporaryDirectory() as tmp:
        batch.score(model, out=Path(tmp) / "warm.parquet", progress=False)
        _reset_peak()
        rss = _status("VmRSS")
        tracemalloc.start()
        result = batch.score(model, out=Path(tmp) / "recs.parquet", progress=False)
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return {"size": size, "users": data.n_users, "chunks": result.n_chunks,
                "traced_peak_mib": traced_peak / 2**20, "vmhwm_growth_mib": (_status("VmHWM") - rss) / 2**20}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["M", "L"], choices=sorted(SIZES))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    rows = []
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", size], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{size}: {r['users']:,} users in {r['chunks']} chunks, traced peak {r['traced_peak_mib']:.1f} MiB, "
              f"VmHWM growth {r['vmhwm_growth_mib']:.1f} MiB")
    if len(rows) > 1:
        print(f"traced peak {rows[-1]['size']} / {rows[0]['size']}: {rows[-1]['traced_peak_mib'] / rows[0]['traced_peak_mib']:.2f}")


if __name__ == "__main__":
    main()
