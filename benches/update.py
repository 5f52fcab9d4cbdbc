"""The feedback loop: ``ItemKNN.update(new)`` against a refit, and ContentKNN's graph build per
scatter-add against ItemKNN's, in one process.

1. Size M of ``recsys_fast.datasets.synthetic`` (100k users x 20k items x 1M interactions,
   implicit). For each fraction f of new interactions (0.01% .. 10%): a random f of the events is
   held back, ItemKNN(k=100) is fitted on the rest (untimed), then ``update(new)`` is timed
   against a refit on everything (``fit``), interleaved, median of ``--repeats``. The updated
   graph is asserted equal to the refit's, bit for bit, at every fraction. Held-back events are
   drawn like the data (popular items more often); ``uniform`` repeats 0.1% with new events on
   uniformly drawn items. At 0.1% the update is also timed right after loading the fitted model
   from a bundle, as the second of two updates in a row, and after loading a bundle without the
   update reserve (the first update then rebuilds it); the graph kernel is timed with and without
   the reserve (what keeping it adds to a fit). The plot (PNG) shows update time against f with the refit time and the
   crossover fraction (where updating stops being cheaper: interpolated on log f).
2. Graph build per scatter-add (``kernels.similarity.topk_similarity``, k=100, cosine, what
   ``fit`` runs): ContentKNN over 100k items x 50k features (synthetic rows as items, columns as
   features, zipf 0.5 feature popularity, 10 features per item, float weights as TF-IDF gives),
   ItemKNN over size M's items x users (binary: the counting path) and over the same with 1..5
   ratings (float path, the like-for-like peer of the content build). Scatter-adds = sum over
   columns of nnz(column)^2. Also the content build over its first 20k items (to separate the cost
   per row from the cost per scatter-add, by two-point fit) and each matrix's shape: distinct
   neighbours per scatter-add (sampled rows) and the share of scatter-adds in densely accumulated rows.

    python benches/update.py [--repeats 3] [--json benches/results/update.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from recsys_fast import threads
from recsys_fast.data.interactions import Interactions
from recsys_fast.datasets import synthetic
from recsys_fast.kernels.similarity import topk_similarity
from recsys_fast.models.knn import ItemKNN

FRACTIONS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
K = 100


def same_graph(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in ((a.indptr, b.indptr), (a.indices, b.indices), (a.data, b.data)))


def timed_update(data: Interactions, old: Interactions, new: Interactions, repeats: int):
    refit_t, update_t, info = [], [], None
    reference = ItemKNN(k=K).fit(data)
    for _ in range(repeats):
        t0 = time.perf_counter()
        reference = ItemKNN(k=K).fit(data)
        refit_t.append(time.perf_counter() - t0)
        model = ItemKNN(k=K).fit(old)
        t0 = time.perf_counter()
        model.update(new)
        update_t.append(time.perf_counter() - t0)
        info = model.update_info_
    if not same_graph(model.graph_, reference.graph_):
        raise AssertionError("update differs from the refit")
    return statistics.median(refit_t), statistics.median(update_t), info


def update_variants(data: Interactions, old: Interactions, new: Interactions, repeats: int) -> dict:
    """The 0.1% update timed three more ways, each checked against the refit: right after loading
    the fitted model from a bundle (the reserve travels in it), on a model whose previous update
    built its reserve (two updates in a row, half the events each: the second is timed), and after
    loading a bundle without a reserve (as written before it existed: the first update rebuilds)."""
    import tempfile

    reference = ItemKNN(k=K).fit(data)
    half = np.arange(new.nnz) < new.nnz // 2
    users, items = new.user_map.ids[new.row_of_nnz()], new.item_map.ids[new.matrix.indices]
    first = Interactions.from_arrays(users[half], items[half])
    second = Interactions.from_arrays(users[~half], items[~half])
    times = {"after_load": [], "second_in_a_row": [], "after_load_without_reserve": []}
    with tempfile.TemporaryDirectory() as tmp:
        fitted = ItemKNN(k=K).fit(old)
        fitted.save(Path(tmp) / "with")
        fitted._reserve = None
        fitted.save(Path(tmp) / "without")
        from recsys_fast.models.registry import load

        for _ in range(repeats):
            for name, bundle in (("after_load", "with"), ("after_load_without_reserve", "without")):
                model = load(Path(tmp) / bundle)
                t0 = time.perf_counter()
                model.update(new)
                times[name].append(time.perf_counter() - t0)
                if not same_graph(model.graph_, reference.graph_):
                    raise AssertionError(f"update ({name}) differs from the refit")
            model = ItemKNN(k=K).fit(old).update(first)
            t0 = time.perf_counter()
            model.update(second)
            times["second_in_a_row"].append(time.perf_counter() - t0)
            if not same_graph(model.graph_, reference.graph_):
                raise AssertionError("two updates in a row differ from the refit")
    return {name: statistics.median(t) for name, t in times.items()}


def reserve_build_cost(data: Interactions, repeats: int) -> dict:
    """What keeping the reserve adds to a fit: the graph kernel with and without it (k=100)."""
    from recsys_fast.kernels.similarity_update import topk_similarity_reserve

    x = data.matrix.T.tocsr()
    args = (x.indptr, x.indices, x.data, x.shape[1], K)
    plain, kept = [], []
    topk_similarity_reserve(*args, ItemKNN._RESERVE_EXTRA)
    for _ in range(repeats):
        t0 = time.perf_counter()
        topk_similarity(*args)
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        topk_similarity_reserve(*args, ItemKNN._RESERVE_EXTRA)
        kept.append(time.perf_counter() - t0)
    return {"extra": ItemKNN._RESERVE_EXTRA, "without_s": statistics.median(plain),
            "with_s": statistics.median(kept)}


def touched_work_share(data: Interactions, new: Interactions) -> float:
    """Share of a refit's scatter-adds that belong to items with new events: an exact update has
    to rescan those rows (every score of a touched item moves with its norm), so it bounds the
    speedup of any exact update from above by 1 / share."""
    m = data.matrix
    user_nnz = np.diff(m.indptr).astype(np.float64)
    work = np.bincount(m.indices, weights=user_nnz[np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))],
                       minlength=m.shape[1])
    touched = np.unique(data.item_map.to_index(new.item_map.ids[new.matrix.indices]))
    return float(work[touched].sum() / work.sum())


def uniform_new(data: Interactions, fraction: float, rng) -> Interactions:
    """``fraction * nnz`` new (user, item) pairs on uniformly drawn items, absent from ``data``."""
    n = int(round(fraction * data.nnz))
    users = rng.integers(0, data.n_users, size=2 * n)
    items = rng.integers(0, data.n_items, size=2 * n)
    present = np.asarray(data.matrix[users, items]).ravel() > 0
    users, items = users[~present][:n], items[~present][:n]
    return Interactions.from_arrays(data.user_map.ids[users], data.item_map.ids[items])


def crossover(fractions, update_s, refit_s):
    """Smallest fraction where update time reaches the refit time, interpolated on log fraction."""
    ratio = np.asarray(update_s) / np.asarray(refit_s)
    for i in range(1, len(fractions)):
        if ratio[i - 1] < 1.0 <= ratio[i]:
            lo, hi = np.log10(fractions[i - 1]), np.log10(fractions[i])
            t = (1.0 - ratio[i - 1]) / (ratio[i] - ratio[i - 1])
            return float(10 ** (lo + t * (hi - lo)))
    return None if ratio[-1] < 1.0 else float(fractions[0]) if ratio[0] >= 1.0 else None


def build_rate(indptr, indices, data, n_cols, repeats):
    topk_similarity(indptr, indices, data, n_cols, K, "cosine")  # compile / warm
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        topk_similarity(indptr, indices, data, n_cols, K, "cosine")
        times.append(time.perf_counter() - t0)
    adds = int(np.sum(np.bincount(indices, minlength=n_cols).astype(np.int64) ** 2))
    t = statistics.median(times)
    return {"seconds": t, "scatter_adds": adds, "ns_per_scatter_add": 1e9 * t / adds}


def build_shape(indptr, indices, n_cols, sample: int = 2000) -> dict:
    """What the graph kernel does per scatter-add on these rows: the share of scatter-adds in rows
    that accumulate densely (work >= n_rows / 8: a vectorised pass selects there) and, on the first
    ``sample`` rows, the distinct neighbours per scatter-add (each is scored and goes through the
    selection: the per-candidate work)."""
    import scipy.sparse as sp

    n_rows = len(indptr) - 1
    x = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(n_rows, n_cols))
    col = np.bincount(indices, minlength=n_cols).astype(np.int64)
    work = np.add.reduceat(np.r_[col[indices], 0], indptr[:-1]) * (np.diff(indptr) > 0)
    co = (x[:sample] @ x.T).tocsr()
    return {"rows": n_rows, "scatter_adds_per_row": float(work.mean()),
            "dense_share": float(work[work >= n_rows // 8].sum() / work.sum()),
            "neighbours_per_scatter_add": float(co.nnz / co.data.sum())}


def plot(rows, refit_s, cross, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = [r["fraction"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(f, [r["update_s"] for r in rows], "o-", label="ItemKNN.update(new)")
    ax.plot(f, [r["refit_s"] for r in rows], "s--", label="refit (fit on old + new)")
    if cross is not None:
        ax.axvline(cross, color="grey", lw=0.8)
        ax.annotate(f"crossover {100 * cross:.3g}%", (cross, refit_s), textcoords="offset points", xytext=(5, 8))
    ax.set_xscale("log")
    ax.set_xlabel("new interactions (fraction of 1M)")
    ax.set_ylabel("seconds (median)")
    ax.set_title("ItemKNN(k=100) update vs refit, synthetic M (100k x 20k x 1M)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="shrink every size by this factor (smoke runs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="benches/results/update.json")
    parser.add_argument("--png", default="benches/results/update.png")
    args = parser.parse_args(argv)
    out = {"load_average_start": os.getloadavg(), "threads": args.threads, "k": K}
    with threads.limit(args.threads):
        s = args.scale
        size = (int(100_000 * s), int(20_000 * s), int(1_000_000 * s))
        data = synthetic(*size, seed=0, with_timestamps=False)
        ItemKNN(k=K).fit(data).prepare()  # compile outside the timed part
        rng = np.random.default_rng(1)
        rows = []
        for f in FRACTIONS:
            held = rng.random(data.nnz) < f
            refit_s, update_s, info = timed_update(data, data.select(~held), data.select(held), args.repeats)
            share = touched_work_share(data, data.select(held))
            rows.append({"fraction": f, "new": int(held.sum()), "refit_s": refit_s, "update_s": update_s,
                         "speedup": refit_s / update_s, "equal": True, "touched_work_share": share, **info})
            print(f"{100 * f:7.3f}% new ({int(held.sum()):6d}): update {update_s:.3f} s, refit {refit_s:.3f} s, "
                  f"x{refit_s / update_s:.2f}; rows changed/merged/recomputed {info['changed']}/{info['merged']}/"
                  f"{info['recomputed']}; touched items hold {100 * share:.1f}% of the refit's scatter-adds",
                  flush=True)
        new = uniform_new(data, 0.001, rng)
        aligned, _ = new.remap(data.user_map, data.item_map)  # disjoint pairs: the sum is old + new
        combined = Interactions(data.matrix + aligned.matrix, data.user_map, data.item_map)
        refit_s, update_s, info = timed_update(combined, data, new, args.repeats)
        out["uniform_0.1%"] = {"new": new.nnz, "refit_s": refit_s, "update_s": update_s,
                               "speedup": refit_s / update_s, "equal": True,
                               "touched_work_share": touched_work_share(combined, new), **info}
        print(f"uniform items 0.1% new: update {update_s:.3f} s, refit {refit_s:.3f} s, x{refit_s / update_s:.2f}; "
              f"recomputed {info['recomputed']}", flush=True)
        held = np.random.default_rng(7).random(data.nnz) < 0.001
        variants = update_variants(data, data.select(~held), data.select(held), args.repeats)
        out["update_0.1%_variants"] = variants
        print("0.1% update, other ways: " + ", ".join(f"{k} {v:.3f} s" for k, v in variants.items()), flush=True)
        out["reserve_build"] = reserve_build_cost(data, args.repeats)
        rb = out["reserve_build"]
        print(f"graph kernel without / with the reserve of {rb['extra']}: {rb['without_s']:.3f} / {rb['with_s']:.3f} s",
              flush=True)
        refit_all = statistics.median(r["refit_s"] for r in rows)
        cross = crossover([r["fraction"] for r in rows], [r["update_s"] for r in rows],
                          [r["refit_s"] for r in rows])
        out.update({"fractions": rows, "refit_s_median": refit_all, "crossover_fraction": cross})

        x = data.matrix.T.tocsr()
        out["build_item_knn_binary"] = build_rate(x.indptr, x.indices, x.data, x.shape[1], args.repeats)
        rated = synthetic(*size, seed=0, with_timestamps=False, ratings=True).matrix.T.tocsr()
        out["build_item_knn_ratings"] = build_rate(rated.indptr, rated.indices, rated.data, rated.shape[1],
                                                   args.repeats)
        feats = synthetic(int(100_000 * s), int(50_000 * s), int(1_000_000 * s), seed=2, with_timestamps=False,
                          item_alpha=0.5).matrix
        values = np.random.default_rng(3).uniform(0.05, 1.0, feats.nnz).astype(np.float32)
        out["build_content_knn"] = build_rate(feats.indptr, feats.indices, values, feats.shape[1], args.repeats)
        # the same features over a fifth of the items (20k, ItemKNN's row count): a fifth of the rows and
        # about a twenty-fifth of the scatter-adds, so the per-row and the per-scatter-add costs separate
        sub = feats[:int(20_000 * s)]
        out["build_content_knn_20k_rows"] = build_rate(sub.indptr, sub.indices, values[:sub.nnz], feats.shape[1],
                                                       args.repeats)
        out["shape"] = {"content_knn": build_shape(feats.indptr, feats.indices, feats.shape[1]),
                        "item_knn": build_shape(x.indptr, x.indices, x.shape[1])}
        a, b = out["build_content_knn"], out["build_content_knn_20k_rows"]
        n_a, n_b = len(feats.indptr) - 1, len(sub.indptr) - 1
        per_add = (a["seconds"] - b["seconds"] * n_a / n_b) / (a["scatter_adds"] - b["scatter_adds"] * n_a / n_b)
        out["content_knn_cost_model"] = {"ns_per_scatter_add": 1e9 * per_add,
                                         "us_per_row": 1e6 * (a["seconds"] - per_add * a["scatter_adds"]) / n_a}
        for name in ("build_content_knn", "build_content_knn_20k_rows", "build_item_knn_ratings",
                     "build_item_knn_binary"):
            b = out[name]
            print(f"{name:24s} {b['seconds']:.3f} s, {b['scatter_adds']:.3e} scatter-adds, "
                  f"{b['ns_per_scatter_add']:.2f} ns each", flush=True)
        cm = out["content_knn_cost_model"]
        print(f"content build = {cm['us_per_row']:.2f} us per row + {cm['ns_per_scatter_add']:.2f} ns per scatter-add; "
              + "; ".join(f"{n}: {v['neighbours_per_scatter_add']:.2f} neighbours per scatter-add, "
                          f"{100 * v['dense_share']:.0f}% of scatter-adds in dense rows" for n, v in out["shape"].items()),
              flush=True)
        out["content_vs_item_knn_ratings_ns_ratio"] = (out["build_content_knn"]["ns_per_scatter_add"]
                                                       / out["build_item_knn_ratings"]["ns_per_scatter_add"])
    out["load_average_end"] = os.getloadavg()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    plot(rows, refit_all, cross, Path(args.png))
    tmp = Path(args.json + ".tmp")
    tmp.write_text(json.dumps(out, indent=2))
    tmp.replace(args.json)
    print(f"crossover fraction: {cross}; wrote {args.json} and {args.png}")


if __name__ == "__main__":
    main()
