"""Item-item cosine top-k build (and batch recommend) against implicit, sparse_dot_topn and scipy.

Same synthetic inputs for every method (``recsys_fast.datasets.synthetic``, seed 0, binary
weights, or integer ratings 1..5 as weights with ``--values ratings``; S = 10k users x 5k items x
100k, M = 100k x 20k x 1M, L = 300k x 50k x 10M; user activity skew ``--user-alpha``, default 0.5,
and 0.65 for heavier users: 6.5e9 scatter-adds at L instead of 1.06e9). Each
method runs in its own child process so its peak memory can be read from the kernel
(``VmHWM`` after a reset via ``/proc/self/clear_refs``; peak RSS counts C++ allocations that
tracemalloc cannot see). Methods run in ``--repeats`` rounds (each method once per round, in a
fresh process, so a change in machine load hits all of them alike). Reported per method: the
median wall time over the rounds of the second full-size run in each process (every method
first runs once on a 2000-user slice — ours compiles or loads its cached kernels, peers load
their libraries and thread pools; reported as setup — then once at full size, untimed), the
ratio to ours, peak extra memory over the loaded data, and top-k agreement with
the exact answer on a sample of items (float64 cosine from the same data; an entry counts as
correct when its exact score is at least the exact m-th best score of that item minus 1e-6, so
ties do not count against anyone). Each size also prints this machine's bare scatter-add
rate on that size's access pattern (``scatter_rate``) and our CPU time per scatter-add, all
work included, against it.

Methods (all start from the users x items float32 CSR and count their own preparation):

- ``ours``: item x user transpose + ``kernels.similarity.topk_similarity(k, "cosine")``,
  self excluded, k neighbours;
- ``implicit``: ``CosineRecommender(K=k, num_threads=threads).fit`` (its K counts the item
  itself, so k - 1 neighbours);
- ``sdtn_1`` / ``sdtn_<threads>``: L2-normalised items x users (scipy) then
  ``sp_matmul_topn(A, A.T, top_n=k, sort=True, n_threads=...)`` (self included too);
- ``scipy``: ``A @ A.T`` then per-row ``np.argpartition`` top-k (S and M only);
- ``--recommend``: top-10 for every user with seen items excluded, ``ItemKNN(k=k-1).recommend``
  vs implicit's batch ``recommend(..., filter_already_liked_items=True)``; fit not timed.

Both peers compute plain cosine on these inputs: implicit's ``CosineRecommender`` normalises
item vectors (``normalize(counts.T)``) and takes dot products, sparse_dot_topn multiplies the
normalised matrix by its transpose; ``score error`` in the output is their max absolute
difference from the exact float64 cosine on the sampled rows.

    python benches/compare_knn.py --sizes S,M,L --k 100 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES = {
    "S": (10_000, 5_000, 100_000),
    "M": (100_000, 20_000, 1_000_000),
    "L": (300_000, 50_000, 10_000_000),
}
SAMPLE = 500  # items whose neighbours are checked against the exact answer


def make_data(size: str, path: Path, values: str = "binary", user_alpha: float = 0.5) -> None:
    from recsys_fast.datasets import synthetic

    data = synthetic(*SIZES[size], seed=0, with_timestamps=False, ratings=values == "ratings",
                     user_alpha=user_alpha)
    sp.save_npz(path, data.matrix.tocsr(), compressed=False)


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return -1


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _l2_items(ui: sp.csr_matrix) -> sp.csr_matrix:
    x = ui.T.tocsr().astype(np.float32)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ x)


def _method_fn(method: str, ui: sp.csr_matrix, k: int, threads: int):
    """A no-argument function running one build; returns an items x items CSR of neighbours."""
    if method == "ours":
        from recsys_fast import threads as pools
        from recsys_fast.kernels._csr_checks import transpose
        from recsys_fast.kernels.similarity import topk_similarity

        def run():
            with pools.limit(threads):
                ip, ii, dd = transpose(np.asarray(ui.indptr, np.int64), np.asarray(ui.indices, np.int32),
                                       np.asarray(ui.data, np.float32), ui.shape[1])
                out = topk_similarity(ip, ii, dd, ui.shape[0], k, "cosine")
            return sp.csr_matrix((out[2], out[1], out[0]), shape=(ui.shape[1], ui.shape[1]))
        return run
    if method == "implicit":
        from implicit.nearest_neighbours import CosineRecommender

        def run():
            model = CosineRecommender(K=k, num_threads=threads)
            model.fit(ui, show_progress=False)
            return model.similarity.tocsr()
        return run
    if method.startswith("sdtn_"):
        import sparse_dot_topn as sdt

        n = int(method.split("_")[1])

        def run():
            a = _l2_items(ui)
            return sdt.sp_matmul_topn(a, a.T.tocsr(), top_n=k, sort=True, n_threads=n)
        return run
    if method == "scipy":
        def run():
            a = _l2_items(ui)
            full = (a @ a.T).tocsr()
            rows, cols, vals = [], [], []
            for r in range(full.shape[0]):
                lo, hi = full.indptr[r], full.indptr[r + 1]
                d, c = full.data[lo:hi], full.indices[lo:hi]
                if hi - lo > k:
                    sel = np.argpartition(-d, k - 1)[:k]
                    d, c = d[sel], c[sel]
                rows.append(np.full(len(c), r))
                cols.append(c)
                vals.append(d)
            return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                 shape=full.shape)
        return run
    raise ValueError(f"unknown method {method!r}")


def _recommend_fn(method: str, ui: sp.csr_matrix, k: int, threads: int, n: int = 10):
    """Fit outside the timed part; return a function recommending ``n`` items to every user."""
    if method == "ours_rec":
        from recsys_fast import threads as pools
        from recsys_fast.data.idmap import IdMap
        from recsys_fast.data.interactions import Interactions
        from recsys_fast.models.knn import ItemKNN

        data = Interactions(ui, IdMap(np.arange(ui.shape[0]), "user"), IdMap(np.arange(ui.shape[1]), "item"))
        with pools.limit(threads):
            model = ItemKNN(k=k - 1).fit(data)
        users = data.user_map.ids

        def run():
            with pools.limit(threads):
                recs = model.recommend(users, k=n)
            idx = data.item_map.to_index(recs.items.ravel(), on_unknown="pad").reshape(recs.items.shape)
            return data.user_map.to_index(users), idx
        return run
    if method == "implicit_rec":
        from implicit.nearest_neighbours import CosineRecommender

        ui64 = ui.astype(np.float64).tocsr()
        model = CosineRecommender(K=k, num_threads=threads)
        model.fit(ui64, show_progress=False)
        rows = np.arange(ui.shape[0])

        def run():
            ids, _ = model.recommend(rows, ui64, N=n, filter_already_liked_items=True)
            return rows, ids
        return run
    raise ValueError(f"unknown method {method!r}")


def worker(args) -> None:
    ui = sp.load_npz(args.data).tocsr()
    ui.sort_indices()
    args.method = args.worker
    recommend = args.method.endswith("_rec")
    make = _recommend_fn if recommend else _method_fn
    warm = time.perf_counter()
    # every method warms up once on a small input (ours: compiles or loads its cached kernels;
    # peers: load libraries, start thread pools); reported as setup, not timed
    make(args.method, ui[:2000].tocsr(), args.k, args.threads)()
    fn = make(args.method, ui, args.k, args.threads)
    warm = time.perf_counter() - warm
    base = _status("VmRSS")
    peak_ok = _reset_peak()
    fn()  # one untimed full-size run: the timed one sees warm allocators and caches, as in a service
    times = []
    out = None
    cpu = []
    for _ in range(args.repeats):
        c0 = time.process_time()  # all threads of this process: robust to other load on the machine
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak = _status("VmHWM") - base if peak_ok else -1
    result = {"method": args.method, "times": times, "median_s": statistics.median(times), "cpu": cpu,
              "peak_extra_bytes": peak, "setup_s": warm}
    if recommend:
        rows, ids = out
        short = int((ids < 0).any(axis=1).sum())
        seen = 0
        for r, row in zip(rows, ids):
            got = row[row >= 0]
            seen += bool(np.isin(got, ui.indices[ui.indptr[r]:ui.indptr[r + 1]]).any())
        result.update({"users": int(len(rows)), "users_short": short, "users_with_seen_item": seen})
    else:
        g = out.tocsr()
        sample = np.asarray(json.loads(args.sample))
        lists = {}
        for r in sample:
            lo, hi = g.indptr[r], g.indptr[r + 1]
            c, d = g.indices[lo:hi], g.data[lo:hi]
            keep = c != r
            order = np.lexsort((c[keep], -d[keep]))
            lists[int(r)] = [c[keep][order].tolist(), d[keep][order].astype(float).tolist()]
        result["neighbours"] = lists
    print("RESULT " + json.dumps(result), flush=True)


def run_method(method, data_path, args, sample) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--data", str(data_path),
           "--k", str(args.k), "--repeats", "1", "--threads", str(args.threads),
           "--sample", json.dumps([int(s) for s in sample])]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(f"  {method} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
    return None


def scatter_rate(ui: sp.csr_matrix, sample: int = 20_000_000, repeats: int = 3) -> float:
    """This machine's rate for this size's scatter-adds: nanoseconds per ``acc[j] += 1``.

    The column indices j that the item-item build visits (item row i, then each of its users'
    item lists), for the first item rows up to ``sample`` adds, are laid out in one array; one
    thread streams it into an n_items float32 accumulator (median of ``repeats``). No index
    chasing, tracking, scoring or selection: what the scatter alone costs once its indices
    are at hand, to read our CPU time per scatter-add against.
    """
    import numba

    @numba.njit(nogil=True)
    def pattern(indptr, indices, t_indptr, t_indices, limit):
        total = 0
        for i in range(indptr.shape[0] - 1):
            for p in range(indptr[i], indptr[i + 1]):
                u = indices[p]
                total += t_indptr[u + 1] - t_indptr[u]
            if total >= limit:
                break
        out = np.empty(total, dtype=np.int32)
        n = 0
        for i in range(indptr.shape[0] - 1):
            if n >= total:
                break
            for p in range(indptr[i], indptr[i + 1]):
                u = indices[p]
                for t in range(t_indptr[u], t_indptr[u + 1]):
                    out[n] = t_indices[t]
                    n += 1
        return out

    @numba.njit(nogil=True)
    def scatter(js, n_items):
        acc = np.zeros(n_items, dtype=np.float32)
        for t in range(js.shape[0]):
            acc[js[t]] += 1.0
        return acc.sum()

    items = ui.T.tocsr()
    js = pattern(items.indptr.astype(np.int64), items.indices, ui.indptr.astype(np.int64), ui.indices, sample)
    scatter(js[:10], ui.shape[1])  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scatter(js, ui.shape[1])
        times.append(time.perf_counter() - start)
    return statistics.median(times) / max(len(js), 1) * 1e9


def exact_neighbours(ui: sp.csr_matrix, sample: np.ndarray):
    """Exact float64 cosine of the sampled items against all items (self and zeros removed)."""
    x = ui.T.tocsr().astype(np.float64)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    a = sp.csr_matrix(sp.diags(inv) @ x)
    scores = (a[sample] @ a.T).toarray()
    for pos, r in enumerate(sample):
        scores[pos, r] = 0.0
    return scores


def agreement(lists: dict, exact: np.ndarray, sample: np.ndarray, k_method: int) -> tuple[float, float]:
    """(mean tie-aware recall, max |score - exact|) of a method's neighbour lists."""
    recalls, err = [], 0.0
    for pos, r in enumerate(sample):
        e = exact[pos]
        n_pos = int((e > 1e-9).sum())
        want = min(k_method, n_pos)
        if want == 0:
            continue
        cols, vals = lists[str(int(r))]
        cols = np.asarray(cols, dtype=np.int64)[:k_method]
        vals = np.asarray(vals)[:k_method]
        kth = np.sort(e)[::-1][want - 1]
        recalls.append(min(1.0, float(np.sum(e[cols] >= kth - 1e-6)) / want))
        if len(cols):
            err = max(err, float(np.max(np.abs(vals - e[cols]))))
    return float(np.mean(recalls)), err


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="S,M")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default="ours,implicit,sdtn_1,sdtn_T,scipy")
    parser.add_argument("--recommend", action="store_true", help="also time top-10 recommend for all users")
    parser.add_argument("--values", choices=("binary", "ratings"), default="binary",
                        help="binary weights (implicit feedback) or integer ratings 1..5 as weights")
    parser.add_argument("--user-alpha", type=float, default=0.5,
                        help="user-activity skew of the generator; 0.65 gives the issue's 6.5e9 "
                             "scatter-adds at L (0.5: 1.06e9)")
    parser.add_argument("--json", default=str(ROOT / "benches" / "results" / "compare_knn.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--sample", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return

    import recsys_fast.kernels  # noqa: F401  (picks the threading layer, as in the workers)
    from recsys_fast import threads as pools

    print(f"# compare_knn: k={args.k} threads={args.threads} repeats={args.repeats} values={args.values} "
          f"user_alpha={args.user_alpha}; "
          f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(f"# numba layer: {pools.report()['numba threading layer configured']}, cpus: {os.cpu_count()}")
    methods = [m.replace("_T", f"_{args.threads}") for m in args.methods.split(",")]
    methods = list(dict.fromkeys(methods))
    report = {"k": args.k, "threads": args.threads, "repeats": args.repeats, "values": args.values,
              "user_alpha": args.user_alpha,
              "load_before": os.getloadavg(), "sizes": {}}
    rows_md = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            path = Path(tmp) / f"{size}.npz"
            make_data(size, path, args.values, args.user_alpha)
            ui = sp.load_npz(path).tocsr()
            work = float(np.sum(np.diff(ui.indptr).astype(np.float64) ** 2))
            rng = np.random.default_rng(1)
            populated = np.flatnonzero(np.bincount(ui.indices, minlength=ui.shape[1]) > 0)
            sample = np.sort(rng.choice(populated, size=min(SAMPLE, len(populated)), replace=False))
            exact = exact_neighbours(ui, sample)
            rate = scatter_rate(ui)
            print(f"\n## {size}: {ui.shape[0]} users x {ui.shape[1]} items, {ui.nnz} nnz, "
                  f"sum of nnz(user)^2 = {work:.3g}; this machine's scatter-add, indices at hand: "
                  f"{rate:.2f} ns (1 thread)")
            results = {}
            todo = [m for m in methods if not (m == "scipy" and size == "L")]
            if args.recommend:
                todo += ["ours_rec", "implicit_rec"]
            # rounds: every method once per round, so a change in machine load hits all alike
            for _ in range(args.repeats):
                for method in todo:
                    res = run_method(method, path, args, sample)
                    if res is None:
                        continue
                    if "neighbours" in res:
                        k_method = args.k if method == "ours" else args.k - 1  # peers count the item itself
                        res["recall"], res["score_error"] = agreement(res.pop("neighbours"), exact, sample,
                                                                      k_method)
                    if method in results:
                        prev = results[method]
                        res["times"] = prev["times"] + res["times"]
                        res["cpu"] = prev["cpu"] + res["cpu"]
                        res["peak_extra_bytes"] = max(prev["peak_extra_bytes"], res["peak_extra_bytes"])
                    res["median_s"] = statistics.median(res["times"])
                    res["median_cpu_s"] = statistics.median(res["cpu"])
                    results[method] = res
            ours = results.get("ours", {}).get("median_s")
            rec_ours = results.get("ours_rec", {}).get("median_s")
            for method, res in results.items():
                base = rec_ours if method.endswith("_rec") else ours
                res["ratio_to_ours"] = res["median_s"] / base if base else None
                mem = res["peak_extra_bytes"] / 2**20 if res["peak_extra_bytes"] >= 0 else float("nan")
                extra = (f"recall {res['recall']:.4f}  score err {res['score_error']:.1e}" if "recall" in res
                         else f"{res['users'] / res['median_s']:,.0f} users/s, {res['users_short']} short, "
                              f"{res['users_with_seen_item']} with a seen item")
                base_cpu = results.get("ours_rec" if method.endswith("_rec") else "ours", {}).get("median_cpu_s")
                res["cpu_ratio_to_ours"] = res["median_cpu_s"] / base_cpu if base_cpu else None
                print(f"  {method:14s} {res['median_s']:8.3f} s  x{res['ratio_to_ours']:.2f} of ours  "
                      f"cpu {res['median_cpu_s']:7.3f} s (x{res['cpu_ratio_to_ours']:.2f})  "
                      f"peak +{mem:7.0f} MiB  {extra}", flush=True)
                rows_md.append((size, method, res, mem))
            if ours:
                per_add = results['ours']['median_cpu_s'] / work * 1e9
                print(f"  ours: {per_add:.2f} ns of CPU per scatter-add, all included "
                      f"({per_add / rate:.2f}x the bare scatter-add)")
            report["sizes"][size] = {"shape": list(ui.shape), "nnz": int(ui.nnz), "work": work,
                                     "scatter_add_ns": rate, "results": results}
    report["load_after"] = os.getloadavg()
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print("\n| size | method | median s | time / ours | CPU s (all threads) | CPU / ours | peak extra MiB "
          "| top-k recall |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for size, method, res, mem in rows_md:
        recall = f"{res['recall']:.4f}" if "recall" in res else (
            f"{res['users'] / res['median_s']:,.0f} users/s")
        print(f"| {size} | {method} | {res['median_s']:.3f} | {res['ratio_to_ours']:.2f} | "
              f"{res['median_cpu_s']:.3f} | {res['cpu_ratio_to_ours']:.2f} | {mem:.0f} | {recall} |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
