"""Scaling: four jobs at sizes S, M, L (XL on request) of the synthetic generator, with peers.

Sizes (users x items x interactions, ``recsys_fast.datasets.synthetic``, seed 0, binary):
S = 10k x 5k x 100k, M = 100k x 20k x 1M, L = 300k x 50k x 10M, XL = 1M x 100k x 50M (run only
when asked and when the machine has the memory: it says why not otherwise).

Jobs, each timed as the median of ``--repeats`` runs after one warm-up (data built outside):

- ``similarity``: item-item cosine top-100 graph, ours (``topk_similarity``) vs implicit's
  ``CosineRecommender.fit`` and sparse_dot_topn's ``sp_matmul_topn``; unit of work: one
  scatter-add (sum over users of their interactions squared);
- ``knn_scoring``: top-10 for every user, seen excluded, ``ItemKNN.recommend_indices`` vs
  implicit's batch ``recommend``; unit: one scoring scatter-add (a neighbour of an item in a
  user's history added to that user's scores: the sum over users of their items' neighbour
  counts), because a user's work grows with its history (10 items at S and M, 33 at L);
  users per second are recorded too;
- ``factor_scoring``: top-10 from 64-d random factors for ``--factor-users`` users (all items,
  seen excluded), ``factor_topk`` vs blocked torch matmul + mask + topk and faiss's exact inner
  product search (``IndexFlatIP``, no exclusion: it searches k + the user's seen count and
  filters after); unit: one FLOP of the score matrix (2 x users x items x 64);
- ``batch_parquet``: ``batch.score(ItemKNN, out=.parquet)`` for every user vs the same model's
  in-memory ``recommend_indices`` (the ratio is the cost of streaming to disk), with this
  process's peak RSS growth during the job (``VmHWM`` after a reset); unit: one scoring
  scatter-add, as for ``knn_scoring`` (users per second recorded too).

Writes ``--json`` (default benches/results/scaling.json) and two PNG plots beside it
(throughput against size; time per unit of work against size), peers on the same axes.
``recsys-fast bench`` prints the summary table from the JSON. The default run (S, M) takes a
few minutes on 2 cores; add ``--sizes S,M,L`` for L.

    python benches/scaling.py [--sizes S,M,L,XL] [--threads 2] [--repeats 3] [--xl-repeats 1]
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from compare_knn import _reset_peak, _status  # noqa: E402 - the benches' peak-memory probes

SIZES = {
    "S": (10_000, 5_000, 100_000),
    "M": (100_000, 20_000, 1_000_000),
    "L": (300_000, 50_000, 10_000_000),
    "XL": (1_000_000, 100_000, 50_000_000),
}
UNITS = {"similarity": "scatter-add", "knn_scoring": "scoring scatter-add", "factor_scoring": "FLOP",
         "batch_parquet": "scoring scatter-add"}


def timed(fn, repeats, warm_up=True):
    if warm_up:
        fn()  # compile or load kernels, start pools
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), runs


def xl_memory_note(n_users, n_items, nnz) -> str | None:
    """Why XL cannot run here, or None when the memory is there."""
    need = nnz * 8 * 4 + n_items * 100 * 8 * 2 + n_users * 10 * 16  # CSR + transposes + graph + output
    avail = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            avail = int(line.split()[1]) * 1024
    if avail < 1.5 * need:
        return (f"XL needs about {need / 2**30:.1f} GiB (x1.5 headroom) and {avail / 2**30:.1f} GiB are "
                "available here")
    return None


def job_similarity(data, k, threads, repeats, peers):
    import scipy.sparse as sp

    from recsys_fast import threads as pools
    from recsys_fast.kernels._csr_checks import transpose
    from recsys_fast.kernels.similarity import _row_work, topk_similarity

    ui = data.matrix
    ip, ii, dd = transpose(ui.indptr.astype(np.int64), ui.indices.astype(np.int32), ui.data.astype(np.float32),
                           ui.shape[1])
    work = float(_row_work(ip, ii, ui.indptr.astype(np.int64)).sum())

    def ours():
        with pools.limit(threads):
            topk_similarity(ip, ii, dd, ui.shape[0], k, "cosine")

    fns = {"ours": ours}
    if "implicit" in peers:
        from implicit.nearest_neighbours import CosineRecommender

        fns["implicit"] = lambda: CosineRecommender(K=k + 1, num_threads=threads).fit(ui, show_progress=False)
    if "sparse_dot_topn" in peers:
        from sparse_dot_topn import sp_matmul_topn

        x = sp.csr_matrix((dd, ii, ip), shape=(ui.shape[1], ui.shape[0]))
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        xn = sp.csr_matrix(sp.diags((1 / np.maximum(norms, 1e-12)).astype(np.float32)) @ x)
        xt = xn.T.tocsr()
        fns["sparse_dot_topn"] = lambda: sp_matmul_topn(xn, xt, top_n=k + 1, sort=True, n_threads=threads)
    return fns, work


def job_knn(model, data, threads, repeats, peers):
    from recsys_fast import threads as pools

    users = np.arange(data.n_users)

    def ours():
        with pools.limit(threads):
            model.recommend_indices(users, 10, exclude="seen")

    fns = {"ours": ours}
    if "implicit" in peers:
        from implicit.nearest_neighbours import CosineRecommender

        peer = CosineRecommender(K=model.k + 1, num_threads=threads)
        peer.fit(data.matrix, show_progress=False)
        fns["implicit"] = lambda: peer.recommend(users, data.matrix, N=10, filter_already_liked_items=True)
    return fns, scoring_work(model, data)


def scoring_work(model, data) -> float:
    """Scatter-adds of scoring every user from an item-item graph: each item in a user's history
    adds its neighbours to the user's scores, so the total is the item counts times the
    neighbour counts."""
    item_counts = np.bincount(data.matrix.indices, minlength=data.n_items).astype(np.float64)
    return float(item_counts @ np.diff(model.graph_.indptr).astype(np.float64))


def job_factor(data, n_users, threads, peers, dim=64):
    from recsys_fast.kernels.factors import factor_topk

    rng = np.random.default_rng(0)
    users = rng.standard_normal((n_users, dim), dtype=np.float32) * 0.1
    items = rng.standard_normal((data.n_items, dim), dtype=np.float32) * 0.1
    seen = data.matrix[:n_users]
    from recsys_fast import threads as pools

    def ours():
        with pools.limit(threads):
            factor_topk(users, items, 10, excl_indptr=seen.indptr, excl_indices=seen.indices, validate=False)

    fns = {"ours": ours}
    if "torch" in peers:
        import torch

        tu, ti = torch.from_numpy(users), torch.from_numpy(items)
        rows = torch.from_numpy(np.repeat(np.arange(n_users), np.diff(seen.indptr)))
        cols = torch.from_numpy(seen.indices.astype(np.int64))
        block = max(64, min(4096, (64 << 20) // (4 * data.n_items)))

        def torch_topk():
            torch.set_num_threads(threads)
            with torch.no_grad():
                for start in range(0, n_users, block):
                    stop = min(n_users, start + block)
                    s = tu[start:stop] @ ti.T
                    lo, hi = seen.indptr[start], seen.indptr[stop]
                    s.index_put_((rows[lo:hi] - start, cols[lo:hi]), torch.tensor(-np.inf))
                    torch.topk(s, 10, dim=1)

        fns["torch"] = torch_topk
    if "faiss" in peers:
        import faiss

        index = faiss.IndexFlatIP(dim)
        index.add(items)
        extra = int(np.diff(seen.indptr).max(initial=0))

        def faiss_search():
            faiss.omp_set_num_threads(threads)
            index.search(users, 10 + extra)  # then drop seen items (not timed: cheap next to the search)

        fns["faiss"] = faiss_search
    return fns, 2.0 * n_users * data.n_items * dim


def job_batch(model, data, threads, repeats, tmp):
    from recsys_fast import batch
    from recsys_fast import threads as pools

    out = Path(tmp) / "recs.parquet"
    users = np.arange(data.n_users)

    def to_parquet():
        with pools.limit(threads):
            batch.score(model, k=10, out=out, progress=False, resume=False)

    def in_memory():
        with pools.limit(threads):
            model.recommend_indices(users, 10, exclude="seen")

    return {"ours": to_parquet, "in_memory": in_memory}, scoring_work(model, data)


def run_size(name, threads, repeats, peers, factor_users, k=100, warm_up=True):
    from recsys_fast.datasets import synthetic
    from recsys_fast.models.knn import ItemKNN

    n_users, n_items, nnz = SIZES[name]
    t0 = time.perf_counter()
    data = synthetic(n_users, n_items, nnz, seed=0, with_timestamps=False)
    built = time.perf_counter() - t0
    out = {"size": name, "users": n_users, "items": n_items, "nnz": int(data.nnz), "data_seconds": built, "jobs": {}}
    model = ItemKNN(k=k, n_threads=threads).fit(data)
    with tempfile.TemporaryDirectory() as tmp:
        plans = {
            "similarity": job_similarity(data, k, threads, repeats, peers),
            "knn_scoring": job_knn(model, data, threads, repeats, peers),
            "factor_scoring": job_factor(data, min(factor_users, n_users), threads, peers),
            "batch_parquet": job_batch(model, data, threads, repeats, tmp),
        }
        for job, (fns, units) in plans.items():
            res = {"units": units, "unit": UNITS[job], "seconds": {}, "runs": {}}
            for method, fn in fns.items():
                peak = None
                if job == "batch_parquet" and method == "ours" and _reset_peak():
                    base = _status("VmRSS")
                    med, runs = timed(fn, repeats, warm_up)
                    peak = _status("VmHWM") - base
                else:
                    med, runs = timed(fn, repeats, warm_up)
                res["seconds"][method], res["runs"][method] = med, runs
                if peak is not None:
                    res["peak_rss_growth_bytes"] = peak
            res["throughput"] = {m: units / s for m, s in res["seconds"].items()}
            res["seconds_per_unit"] = {m: s / units for m, s in res["seconds"].items()}
            if job in ("knn_scoring", "batch_parquet"):
                res["users_per_second"] = {m: n_users / s for m, s in res["seconds"].items()}
            res["ours_vs"] = {m: s / res["seconds"]["ours"] for m, s in res["seconds"].items() if m != "ours"}
            out["jobs"][job] = res
            print(f"{name} {job}: " + ", ".join(f"{m} {res['seconds'][m]:.3f} s" for m in res["seconds"])
                  + " | ours vs " + ", ".join(f"{m} {x:.2f}x" for m, x in res["ours_vs"].items()), flush=True)
    return out


def plot(results, png_prefix: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r for r in results["sizes"] if "jobs" in r]
    jobs = list(UNITS)
    written = []
    for metric, ylabel, fname in (("throughput", "units per second", "throughput"),
                                  ("seconds_per_unit", "seconds per unit of work", "unit_time")):
        fig, axes = plt.subplots(1, len(jobs), figsize=(4.2 * len(jobs), 3.6))
        for ax, job in zip(axes, jobs):
            methods = sorted({m for r in sizes for m in r["jobs"][job][metric]}, key=lambda m: (m != "ours", m))
            for method in methods:
                xs = [r["nnz"] for r in sizes if method in r["jobs"][job][metric]]
                ys = [r["jobs"][job][metric][method] for r in sizes if method in r["jobs"][job][metric]]
                ax.plot(xs, ys, marker="o", label=method, linewidth=2.5 if method == "ours" else 1.2)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{job} (per {UNITS[job]})")
            ax.set_xlabel("interactions (" + ", ".join(r["size"] for r in sizes) + ")")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=8)
        fig.suptitle(f"recsys_fast scaling, {results['threads']} threads (shared machine; medians)")
        fig.tight_layout()
        path = f"{png_prefix}_{fname}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="S,M", help="comma-separated of S, M, L, XL (default: S,M)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--xl-repeats", type=int, default=1,
                        help="runs of each XL job, without a warm-up run (the smaller sizes warmed every "
                             "kernel and peer up; XL's peer builds take minutes each; default 1)")
    parser.add_argument("--peers", default="implicit,sparse_dot_topn,torch,faiss")
    parser.add_argument("--factor-users", type=int, default=20_000,
                        help="users scored in the factor job (all items; default 20000)")
    parser.add_argument("--json", default=str(ROOT / "benches" / "results" / "scaling.json"))
    args = parser.parse_args(argv)
    peers = {p for p in args.peers.split(",") if p}
    for p in list(peers):
        try:
            __import__({"sparse_dot_topn": "sparse_dot_topn"}.get(p, p))
        except ImportError:
            print(f"peer {p} is not installed: left out")
            peers.discard(p)
    results = {"threads": args.threads, "repeats": args.repeats, "load_before": os.getloadavg(),
               "started": time.strftime("%Y-%m-%d %H:%M:%S"), "sizes": []}
    for name in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        if name not in SIZES:
            raise SystemExit(f"unknown size {name!r}; sizes: {', '.join(SIZES)}")
        if name == "XL":
            note = xl_memory_note(*SIZES["XL"])
            if note:
                print(f"XL skipped: {note}")
                results["sizes"].append({"size": "XL", "skipped": note})
                continue
        xl = name == "XL"
        results["sizes"].append(run_size(name, args.threads, args.xl_repeats if xl else args.repeats, peers,
                                         args.factor_users, warm_up=not xl))
    results["load_after"] = os.getloadavg()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(results, fh, indent=1)
    pngs = plot(results, Path(args.json).with_suffix(""))
    print(f"wrote {args.json} and {', '.join(pngs)}; load average {results['load_before']} -> "
          f"{results['load_after']} (a shared machine)")
    from recsys_fast.cli import bench_table

    print(bench_table(results))


if __name__ == "__main__":
    main()
