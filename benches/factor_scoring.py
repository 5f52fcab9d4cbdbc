"""All-user top-k from dot-product factors: ``kernels.factors.factor_topk`` vs peers, same run.

Random float32 factors (``--dim``, default 64) for ``--users`` x ``--items`` and seen items from
``recsys_fast.datasets.synthetic`` (``--nnz``), excluded from every list. Timed, interleaved,
median of ``--repeats`` after one warm-up each:

- ``ours``: ``factor_topk`` (blocked BLAS sgemm + parallel Numba top-k with exclusions);
- ``gemm``: NumPy's blocked sgemm (BLAS threads) into a reused buffer and nothing else;
- ``gemm_tiles``: our kernel's tiles (one single-threaded sgemm per Numba thread) without the
  selection: the ceiling of our structure;
- ``torch``: blocked ``torch.mm`` + seen mask (``index_put_`` of -inf) + ``torch.topk``;
- ``implicit``: ``implicit.cpu.topk.topk`` with the seen matrix as ``filter_query_items``
  (when implicit is installed).

Results must agree: ours vs torch top-k compared item by item (ties aside) and recorded.

    python benches/factor_scoring.py [--users 100000 --items 20000 --items 50000] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from knn_throughput import interleaved  # noqa: E402 - the benches' shared timing loop

from recsys_fast import threads  # noqa: E402
from recsys_fast.datasets import synthetic  # noqa: E402
from recsys_fast.kernels._blas import gemm_into  # noqa: E402
from recsys_fast.kernels.factors import ITEM_BLOCK, TILE_ROWS, factor_topk  # noqa: E402


@numba.njit(parallel=True, nogil=True)
def _gemm_tiles(users, items_t, tile, item_block, n_buffers):
    """Our kernel's structure without the selection: per-thread single-threaded sgemm of tiles of
    users, one item block at a time."""
    n, m = users.shape[0], items_t.shape[1]
    width = min(item_block, m)
    buffers = np.empty((n_buffers, tile, width), dtype=np.float32)
    n_tiles = (n + tile - 1) // tile
    for w in numba.prange(n_buffers):
        for t in range(w, n_tiles, n_buffers):
            start = t * tile
            stop = min(n, start + tile)
            for j0 in range(0, m, width):
                j1 = min(m, j0 + width)
                gemm_into(users[start:stop], items_t[:, j0:j1], buffers[w, :stop - start, :j1 - j0])


def contenders(users, items, seen, k, block_rows, peers=("torch", "implicit")):
    """name -> callable returning (items, scores) or None (the GEMM alone)."""
    n, m = users.shape[0], items.shape[0]
    fns = {
        "ours": lambda: factor_topk(users, items, k, excl_indptr=seen.indptr, excl_indices=seen.indices,
                                    validate=False),
    }

    def gemm():
        buf = np.empty((block_rows, m), dtype=np.float32)
        items_t = items.T
        for start in range(0, n, block_rows):
            stop = min(n, start + block_rows)
            np.matmul(users[start:stop], items_t, out=buf[:stop - start])

    fns["gemm"] = gemm
    items_t = np.ascontiguousarray(items.T)
    def gemm_tiles():
        with threads.blas_limit(1):
            _gemm_tiles(users, items_t, min(TILE_ROWS, n), ITEM_BLOCK, numba.get_num_threads())

    fns["gemm_tiles"] = gemm_tiles
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and "torch" in peers:
        tu, ti = torch.from_numpy(users), torch.from_numpy(items)
        rows = torch.from_numpy(np.repeat(np.arange(n), np.diff(seen.indptr)))
        cols = torch.from_numpy(seen.indices.astype(np.int64))
        indptr = seen.indptr

        def torch_topk():
            out_s = torch.empty((n, k))
            out_i = torch.empty((n, k), dtype=torch.int64)
            with torch.no_grad():
                for start in range(0, n, block_rows):
                    stop = min(n, start + block_rows)
                    s = tu[start:stop] @ ti.T
                    lo, hi = indptr[start], indptr[stop]
                    s.index_put_((rows[lo:hi] - start, cols[lo:hi]), torch.tensor(-np.inf))
                    v, i = torch.topk(s, k, dim=1)
                    out_s[start:stop], out_i[start:stop] = v, i
            return out_i.numpy(), out_s.numpy()

        fns["torch"] = torch_topk
    try:
        from implicit.cpu.topk import topk as implicit_topk
    except ImportError:
        implicit_topk = None
    if implicit_topk is not None and "implicit" in peers:
        fns["implicit"] = lambda: implicit_topk(items, users, k, filter_query_items=seen, num_threads=0)
    return fns


def agreement(a, b) -> float:
    """Share of (row, rank) entries where two top-k results name the same item or tie in score."""
    ai, as_ = a
    bi, bs = b
    same = ai == bi
    tie = np.isclose(as_, bs, rtol=1e-5, atol=1e-6)
    return float(np.mean(same | tie))


def run(n_users, n_items, nnz, dim, k, n_threads, repeats, seed=0, peers=("torch", "implicit")):
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((n_users, dim), dtype=np.float32) * 0.1
    items = rng.standard_normal((n_items, dim), dtype=np.float32) * 0.1
    seen = synthetic(n_users, n_items, nnz, seed=seed, with_timestamps=False).matrix
    block_rows = max(64, min(4096, (64 << 20) // (4 * n_items)))  # peers: 64 MiB blocks of scores
    with threads.limit(n_threads):
        fns = contenders(users, items, seen, k, block_rows, peers)
        med, cpu, raw, outs = interleaved(fns, repeats)
    flops = 2.0 * n_users * n_items * dim
    res = {"users": n_users, "items": n_items, "nnz": int(seen.nnz), "dim": dim, "k": k, "threads": n_threads,
           "block_rows": block_rows, "seconds": med, "cpu_seconds": cpu, "runs": raw,
           "users_per_s": {name: n_users / t for name, t in med.items()},
           "gflops": {name: flops / t / 1e9 for name, t in med.items()},
           "ours_vs": {name: t / med["ours"] for name, t in med.items() if name != "ours"},
           "ours_share_of_gemm_throughput": min(med["gemm"], med["gemm_tiles"]) / med["ours"]}
    if "torch" in outs:
        res["agreement_with_torch"] = agreement(outs["ours"], outs["torch"])
    if "implicit" in outs:
        res["agreement_with_implicit"] = agreement(outs["ours"], outs["implicit"])
    return res


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, action="append", default=None,
                        help="catalogue size, repeatable (default: 20000 and 50000)")
    parser.add_argument("--interactions-per-user", type=float, default=20.0)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peers", default="torch,implicit", help="comma-separated peers (default: torch,implicit)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results = {"load_before": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": []}
    for n_items in args.items or [20_000, 50_000]:
        r = run(args.users, n_items, int(args.users * args.interactions_per_user), args.dim, args.k, args.threads,
                args.repeats, peers=tuple(args.peers.split(",")))
        results["runs"].append(r)
        line = ", ".join(f"{name} {u:,.0f} users/s ({r['gflops'][name]:.0f} GFLOP/s)"
                         for name, u in r["users_per_s"].items())
        print(f"{args.users} x {n_items}, d={args.dim}, k={args.k}: {line}")
        print("  ours vs: " + ", ".join(f"{name} {x:.2f}x" for name, x in r["ours_vs"].items())
              + f"; ours = {100 * r['ours_share_of_gemm_throughput']:.0f}% of the faster GEMM's throughput"
              + (f"; agreement with torch {r['agreement_with_torch']:.4f}" if "agreement_with_torch" in r else ""))
    results["load_after"] = os.getloadavg()
    print(f"load average before {results['load_before']}, after {results['load_after']} (a shared machine)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return results


if __name__ == "__main__":
    main()
