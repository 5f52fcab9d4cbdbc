"""Training speed: seconds per epoch and interactions per second of our models against implicit's
BPR and ALS, on the same data in the same run.

Data sets (``--sizes``): ml-100k (read in place from the shared data folder), ml-latest-small
(``data/``), and the synthetic generator's S (50k users x 10k items x 500k interactions) and M
(100k x 20k x 1M, ``recsys_fast.datasets.synthetic(seed=0)``). Each model trains
``--epochs`` + 1 epochs with ``validation_fraction=0`` (no early stopping) on ``--n-threads``
threads; the first epoch is a warm-up (Numba compiles, or loads from its cache, there; torch
allocates; ``--warmup 0`` times it too, for models whose epoch takes minutes) and the reported
figure is the median of the others. ``--param MODEL.KEY=VALUE`` overrides a hyper-parameter (e.g.
``sasrec.loss=sampled_ce``). implicit's models run with the
same number of factors (64) and threads, BLAS pinned to one thread as implicit asks, and their
epochs are timed by implicit's per-epoch callback. ALS also reports a whole fit of ``--als-epochs``
(15) epochs against implicit's ALS fit of as many iterations (best of 2, alternating). Ratios are
against implicit's BPR and ALS epochs on the same data (``x_implicit_bpr``, ``x_implicit_als``).
Every figure comes as wall seconds and as CPU seconds of the process (``time.process_time``, all
threads): on a shared, oversubscribed machine the wall time mostly measures the other jobs, and
the CPU time is the steadier measure of the work (it also counts OpenMP threads spinning at a
barrier, so prefer ``--n-threads 1`` for CPU-time comparisons).

    python benches/train_speed.py                                  # every model, every size
    python benches/train_speed.py --models bprmf als implicit-bpr implicit-als --sizes ml-100k M
    python benches/train_speed.py --sizes M --models bprmf implicit-bpr --epochs 3 --json out.json
    python benches/train_speed.py --sizes M --models sasrec --param sasrec.loss=sampled_ce --param sasrec.n_negatives=2048

Writes JSON (``--json``, default benches/results/train_speed.json) and a PNG plot of seconds per
epoch against the number of interactions (``--png``, default next to the JSON).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from recsys_fast import threads
from recsys_fast.datasets import load_movielens, synthetic

NEURAL = {"bprmf": "BPRMF", "neumf": "NeuMF", "lightgcn": "LightGCN", "multvae": "MultVAE",
          "sasrec": "SASRec", "gru4rec": "GRU4Rec", "caser": "Caser"}
MODELS = list(NEURAL) + ["als", "implicit-bpr", "implicit-als"]
SIZES = {"ml-100k": None, "ml-latest-small": None, "S": (50_000, 10_000, 500_000), "M": (100_000, 20_000, 1_000_000)}
FACTORS = 64


def load(size: str):
    if SIZES[size] is None:
        return load_movielens(size)[0]
    return synthetic(*SIZES[size], seed=0)


def _binary(data):
    x = data.matrix.copy().astype(np.float32)
    x.data[:] = 1.0
    return x


def time_ours(name: str, data, epochs: int, n_threads: int, params: dict | None = None, warmup: int = 1) -> dict:
    if name == "als":
        from recsys_fast.models.als import ALS

        model = ALS(embedding_size=FACTORS, epochs=epochs + warmup, n_threads=n_threads, **(params or {}))
    else:
        from recsys_fast.models import neural

        model = getattr(neural, NEURAL[name])(**{"epochs": epochs + warmup, "validation_fraction": 0.0,
                                                 "n_threads": n_threads, "early_stopping_patience": None,
                                                 "seed": 0, **(params or {})})
    started = time.perf_counter()
    model.fit(data)
    total = time.perf_counter() - started
    return {"epoch_seconds": [r["seconds"] for r in model.training_log_],
            "epoch_cpu_seconds": [r["cpu_seconds"] for r in model.training_log_], "fit_seconds": total}


def time_implicit(name: str, data, epochs: int, n_threads: int, warmup: int = 1) -> dict:
    from threadpoolctl import threadpool_limits

    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    stamps = []
    if name == "implicit-bpr":
        model = BayesianPersonalizedRanking(factors=FACTORS, iterations=epochs + warmup,
                                            num_threads=n_threads, random_state=0)
    else:
        model = AlternatingLeastSquares(factors=FACTORS, iterations=epochs + warmup, num_threads=n_threads,
                                        random_state=0)
    x = _binary(data)
    cpu = []

    def stamp(*_):
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())

    with threadpool_limits(1, "blas"):
        started = time.perf_counter()
        stamp()
        model.fit(x, show_progress=False, callback=stamp)
        total = time.perf_counter() - started
    return {"epoch_seconds": list(np.diff(stamps)), "epoch_cpu_seconds": list(np.diff(cpu)), "fit_seconds": total}


def als_fits(data, epochs: int, n_threads: int) -> dict:
    """A whole ALS fit of ``epochs`` epochs, ours against implicit's, alternating, best of 2."""
    from threadpoolctl import threadpool_limits

    from implicit.cpu.als import AlternatingLeastSquares
    from recsys_fast.models.als import ALS

    ours, theirs, ours_cpu, theirs_cpu = [], [], [], []
    x = _binary(data)
    for _ in range(2):
        started, cpu = time.perf_counter(), time.process_time()
        ALS(embedding_size=FACTORS, epochs=epochs, n_threads=n_threads).fit(data)
        ours.append(time.perf_counter() - started)
        ours_cpu.append(time.process_time() - cpu)
        with threadpool_limits(1, "blas"):
            started, cpu = time.perf_counter(), time.process_time()
            AlternatingLeastSquares(factors=FACTORS, iterations=epochs, num_threads=n_threads,
                                    random_state=0).fit(x, show_progress=False)
            theirs.append(time.perf_counter() - started)
            theirs_cpu.append(time.process_time() - cpu)
    return {"epochs": epochs, "ours_seconds": ours, "implicit_seconds": theirs, "ours_cpu_seconds": ours_cpu,
            "implicit_cpu_seconds": theirs_cpu, "ratio_best": min(ours) / min(theirs),
            "ratio_best_cpu": min(ours_cpu) / min(theirs_cpu)}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model in dict.fromkeys(r["model"] for r in rows):
        pts = sorted((r["nnz"], r["seconds_per_epoch"]) for r in rows if r["model"] == model)
        ax.plot(*zip(*pts), marker="o", label=model, linestyle="--" if model.startswith("implicit") else "-")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("interactions")
    ax.set_ylabel("seconds per epoch (median)")
    ax.set_title("training time per epoch against data size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    p.add_argument("--sizes", nargs="+", default=["ml-100k", "ml-latest-small", "M"], choices=list(SIZES))
    p.add_argument("--epochs", type=int, default=2, help="timed epochs after the warm-up epochs")
    p.add_argument("--warmup", type=int, default=1, choices=(0, 1),
                   help="untimed warm-up epochs (0: time the first epoch too, compilation and first allocations "
                        "included; for models whose epoch takes minutes)")
    p.add_argument("--als-epochs", type=int, default=15, help="epochs of the whole-fit ALS comparison (0: skip)")
    p.add_argument("--n-threads", type=int, default=2)
    p.add_argument("--json", default="benches/results/train_speed.json")
    p.add_argument("--png", default=None, help="default: the JSON path with .png")
    p.add_argument("--param", action="append", default=[], metavar="MODEL.KEY=VALUE",
                   help="override a hyper-parameter of one of our models (JSON value), e.g. sasrec.loss=sampled_ce; "
                        "its rows are labelled with the overrides")
    args = p.parse_args(argv)
    from recsys_fast.cli import parse_params

    overrides = parse_params(args.param)

    rows, fits = [], []
    for size in args.sizes:
        data = load(size)
        print(f"{size}: {data.n_users} users x {data.n_items} items, {data.nnz} interactions", flush=True)
        per_model = {}
        for name in args.models:
            params = overrides.get(name, {})
            with threads.limit(args.n_threads):
                if name.startswith("implicit"):
                    timed = time_implicit(name, data, args.epochs, args.n_threads, args.warmup)
                else:
                    timed = time_ours(name, data, args.epochs, args.n_threads, params, args.warmup)
            spe, cpu = (statistics.median(timed[key][args.warmup:] if len(timed[key]) > args.warmup else timed[key])
                        for key in ("epoch_seconds", "epoch_cpu_seconds"))
            per_model[name] = (spe, cpu)
            label = name + ("[" + ",".join(f"{k}={v}" for k, v in params.items()) + "]" if params else "")
            row = {"size": size, "model": label, "params": params, "n_users": data.n_users, "n_items": data.n_items, "nnz": data.nnz,
                   "seconds_per_epoch": spe, "cpu_seconds_per_epoch": cpu, "interactions_per_second": data.nnz / spe,
                   **timed}
            rows.append(row)
            print(f"  {label:13s} {spe:9.3f} s/epoch ({cpu:7.3f} s CPU)  {data.nnz / spe:12,.0f} interactions/s",
                  flush=True)
        for peer in ("implicit-bpr", "implicit-als"):
            if peer in per_model:
                for row in rows:
                    if row["size"] == size:
                        row[f"x_{peer.replace('-', '_')}"] = row["seconds_per_epoch"] / per_model[peer][0]
                        row[f"x_{peer.replace('-', '_')}_cpu"] = row["cpu_seconds_per_epoch"] / per_model[peer][1]
        if "als" in args.models and args.als_epochs > 0:
            with threads.limit(args.n_threads):
                fit = {"size": size, **als_fits(data, args.als_epochs, args.n_threads)}
            fits.append(fit)
            print(f"  ALS fit of {args.als_epochs} epochs: ours {min(fit['ours_seconds']):.2f} s, implicit "
                  f"{min(fit['implicit_seconds']):.2f} s (ratio {fit['ratio_best']:.2f}; CPU seconds "
                  f"{min(fit['ours_cpu_seconds']):.2f} and {min(fit['implicit_cpu_seconds']):.2f}, ratio "
                  f"{fit['ratio_best_cpu']:.2f})", flush=True)

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(["python", "benches/train_speed.py"] + (argv if argv is not None else sys.argv[1:])),
              "n_threads": args.n_threads, "epochs_timed": args.epochs, "warmup_epochs": args.warmup,
              "python": platform.python_version(),
              "threads": threads.report(), "rows": rows, "als_fits": fits}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=float))
    tmp.replace(out)
    png = Path(args.png) if args.png else out.with_suffix(".png")
    plot(rows, png)
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
