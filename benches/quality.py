"""Ranking quality of the neural models against Popularity and ItemKNN: the issue-4 tables.

Protocols (full ranking over all items, each user's training items excluded, metrics from
``recsys_fast.evaluate``):

- ``holdout``: per-user random holdout, ``holdout(test_fraction=0.2, seed=42)``; Precision,
  Recall, NDCG, MAP, HitRate @10. Models: popularity, itemknn, userknn, bprmf, neumf, lightgcn,
  multvae, ease, als (and implicit's BPR/ALS as peers with ``--implicit``).
- ``loo``: leave-last-one-out by timestamp, ``leave_last_out(n=1)``; HR@10 and NDCG@10.
  Models: popularity, itemknn, gru4rec, caser, sasrec.

Each neural model runs with its default hyper-parameters once per ``--seeds`` value (the model's
``seed``; the split is fixed), and the table reports mean and spread (sample std) with the
epochs run, seconds per epoch and total fit seconds. ``--grid`` first tunes each model on a small
documented grid (``GRIDS``) scored by NDCG@10 on a validation split carved from the training
split (the same protocol applied to train: holdout 0.2 with seed 0, or each user's last
training item), then evaluates the best setting on the test split; the test split is never used
for choosing. Early stopping inside each fit uses the model's own validation carve (see
``NeuralRecommender``). Models train with ``--n-threads`` torch threads (default 2).

    python benches/quality.py --protocol holdout --datasets ml-100k --seeds 0 1 2
    python benches/quality.py --protocol loo --datasets ml-100k ml-latest-small --models sasrec gru4rec
    python benches/quality.py --protocol holdout --models ease --grid --json out.json
    python benches/quality.py --protocol loo --datasets ml-latest-small --models sasrec --param sasrec.loss=sampled_ce
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time

import numpy as np

from recsys_fast.cli import parse_params
from recsys_fast.datasets import find_dataset, load_movielens
from recsys_fast.split import holdout, leave_last_out
from recsys_fast.evaluation import evaluate
from recsys_fast.models.base import Recommender

HOLDOUT_MODELS = ["popularity", "itemknn", "userknn", "bprmf", "neumf", "lightgcn", "multvae", "ease", "als"]
LOO_MODELS = ["popularity", "itemknn", "gru4rec", "caser", "sasrec"]
NEURAL = {"bprmf": "BPRMF", "neumf": "NeuMF", "lightgcn": "LightGCN", "multvae": "MultVAE",
          "sasrec": "SASRec", "gru4rec": "GRU4Rec", "caser": "Caser"}
VERBOSE = False  # --verbose: progress bars (loss, validation NDCG@10) on stderr
SEEDED = set(NEURAL) | {"als", "implicit-bpr", "implicit-als"}

# Small grids (the tuning budget): every combination is fitted once on the validation carve.
GRIDS = {
    "bprmf": {"embedding_size": [64, 128], "weight_decay": [0.01, 0.02, 0.03], "learning_rate": [0.005]},
    "neumf": {"embedding_size": [32, 64], "learning_rate": [0.001, 0.002]},
    "lightgcn": {"n_layers": [2, 3], "weight_decay": [1e-4, 1e-3]},
    "multvae": {"dropout": [0.5], "anneal_cap": [0.2, 0.5], "hidden_size": [600]},
    "ease": {"weight_decay": [100.0, 250.0, 500.0, 1000.0, 2000.0]},
    "als": {"weight_decay": [10.0, 35.0, 50.0, 70.0, 100.0], "alpha": [1.0, 3.0]},
    "itemknn": {"k": [20, 50, 100, 200]},
    "userknn": {"k": [20, 50, 100, 200]},
    "sasrec": {"max_len": [50, 100], "dropout": [0.2, 0.5]},
    "gru4rec": {"hidden_size": [64, 128], "dropout": [0.1, 0.3]},
    "caser": {"max_len": [5, 10], "dropout": [0.3, 0.5]},
}


def make_model(name: str, seed: int, n_threads: int, **overrides) -> Recommender:
    """The model ``name`` with its default hyper-parameters (baselines: those of the issue)."""
    if name == "popularity":
        from recsys_fast.models.popularity import Popularity

        return Popularity(**overrides)
    if name in ("itemknn", "userknn"):
        from recsys_fast.models.knn import ItemKNN, UserKNN

        params = {"k": 50, "similarity": "cosine"} | overrides
        return (ItemKNN if name == "itemknn" else UserKNN)(**params)
    if name == "ease":
        from recsys_fast.models.ease import EASE

        return EASE(**overrides)
    if name == "als":
        from recsys_fast.models.als import ALS

        return ALS(seed=seed, n_threads=n_threads, **overrides)
    if name in ("implicit-bpr", "implicit-als"):
        return ImplicitFactors(name, seed, n_threads)
    from recsys_fast.models import neural

    return getattr(neural, NEURAL[name])(seed=seed, n_threads=n_threads, verbose=VERBOSE, **overrides)


class ImplicitFactors(Recommender):
    """implicit's BPR or ALS (default parameters) behind our protocol, evaluated by the same code."""

    kind = "implicit_factors"

    def __init__(self, name="implicit-bpr", seed=0, n_threads=2):
        self.name, self.seed, self.n_threads = name, seed, n_threads

    def _fit(self, train):
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        cls = BayesianPersonalizedRanking if self.name == "implicit-bpr" else AlternatingLeastSquares
        self.model_ = cls(random_state=self.seed, num_threads=self.n_threads)
        x = train.matrix.copy()
        x.data[:] = 1.0
        self.model_.fit(x, show_progress=False)

    def _score_rows(self, batch):
        return self.model_.user_factors[batch.user_index] @ self.model_.item_factors.T


def split(data, protocol: str):
    return holdout(data, test_fraction=0.2, seed=42) if protocol == "holdout" else leave_last_out(data, n=1)


def validation_split(train, protocol: str):
    return holdout(train, test_fraction=0.2, seed=0) if protocol == "holdout" else leave_last_out(train, n=1)


def metrics_for(protocol: str):
    return ["precision", "recall", "ndcg", "map", "hit_rate"] if protocol == "holdout" else ["hit_rate", "ndcg"]


def fit_and_score(model, train, test, protocol, n_threads):
    started = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - started
    result = evaluate(model, train, test, k=10, metrics=metrics_for(protocol), n_threads=n_threads)
    history = getattr(model, "training_log_", [])
    row = {f"{m}@10": float(result.means[f"{m}@10"]) for m in metrics_for(protocol)}
    row.update(fit_seconds=fit_s, epochs=len(history),
               seconds_per_epoch=float(np.mean([h["seconds"] for h in history])) if history else None)
    return row


def tune(name, train, protocol, n_threads, seed):
    grid = GRIDS.get(name)
    if not grid:
        return {}, []
    fit_part, val_part = validation_split(train, protocol)
    tried = []
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values))
        row = fit_and_score(make_model(name, seed, n_threads, **params), fit_part, val_part, protocol, n_threads)
        tried.append({"params": params, "val_ndcg@10": row["ndcg@10"], "fit_seconds": row["fit_seconds"]})
        print(f"    grid {name} {params}: val NDCG@10 {row['ndcg@10']:.4f} ({row['fit_seconds']:.1f}s)", flush=True)
    best = max(tried, key=lambda t: t["val_ndcg@10"])
    return best["params"], tried


def summarise(rows: list[dict]) -> dict:
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows if r[key] is not None]
        if not values:
            out[key] = None
            continue
        out[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return out


def markdown(results: dict, protocol: str) -> str:
    cols = [f"{m}@10" for m in metrics_for(protocol)]
    head = "| data | model | " + " | ".join(cols) + " | epochs | s/epoch | fit s | seeds |"
    lines = [head, "|" + "---|" * (len(cols) + 6)]
    for (dataset, name), entry in results.items():
        s = entry["summary"]
        cells = []
        for c in cols:
            cells.append(f"{s[c]['mean']:.4f}" + (f" ± {s[c]['std']:.4f}" if entry["n_seeds"] > 1 else ""))
        ep = s["epochs"]["mean"] if s["epochs"] else 0
        spe = f"{s['seconds_per_epoch']['mean']:.2f}" if s["seconds_per_epoch"] else "-"
        lines.append(f"| {dataset} | {name} | " + " | ".join(cells)
                     + f" | {ep:.0f} | {spe} | {s['fit_seconds']['mean']:.1f} | {entry['n_seeds']} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--protocol", choices=["holdout", "loo"], default="holdout")
    ap.add_argument("--datasets", nargs="+", default=["ml-100k"])
    ap.add_argument("--models", nargs="+", default=None, help="default: the protocol's list")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--grid", action="store_true", help="tune each model on GRIDS (validation carve of train)")
    ap.add_argument("--implicit", action="store_true", help="add implicit's BPR and ALS as peers (holdout)")
    ap.add_argument("--n-threads", type=int, default=2)
    ap.add_argument("--verbose", action="store_true", help="progress bars of the neural fits on stderr")
    ap.add_argument("--param", action="append", default=[], metavar="MODEL.KEY=VALUE",
                    help="override a hyper-parameter of one model (JSON value), e.g. sasrec.loss=sampled_ce; "
                         "applied on top of the grid's choice")
    ap.add_argument("--json", default=None, help="write all results (and the grids tried) here")
    args = ap.parse_args(argv)
    overrides = parse_params(args.param)
    global VERBOSE
    VERBOSE = args.verbose
    models = args.models or (HOLDOUT_MODELS if args.protocol == "holdout" else LOO_MODELS)
    if args.implicit:
        models = list(models) + ["implicit-bpr", "implicit-als"]

    results = {}
    for dataset in args.datasets:
        path = find_dataset(dataset)
        if path is None:
            print(f"skip {dataset}: not found (set RECSYS_FAST_DATA)")
            continue
        data, _ = load_movielens(path)
        train, test = split(data, args.protocol)
        print(f"{dataset}: {data}; protocol {args.protocol}: train {train.nnz}, test {test.nnz}", flush=True)
        for name in models:
            seeds = args.seeds if name in SEEDED else [args.seeds[0]]
            params, tried = tune(name, train, args.protocol, args.n_threads, seeds[0]) if args.grid else ({}, [])
            params = {**params, **overrides.get(name, {})}
            rows = []
            for seed in seeds:
                row = fit_and_score(make_model(name, seed, args.n_threads, **params), train, test, args.protocol,
                                    args.n_threads)
                rows.append(row)
                print(f"  {name} seed {seed} {params or 'defaults'}: "
                      + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.endswith("@10"))
                      + f"; {row['epochs']} epochs, fit {row['fit_seconds']:.1f}s", flush=True)
            results[(dataset, name)] = {"params": params or "defaults", "n_seeds": len(seeds), "seeds": seeds,
                                        "runs": rows, "summary": summarise(rows), "grid": tried}
    table = markdown(results, args.protocol)
    print()
    print(table)
    if args.json:
        payload = {"protocol": args.protocol, "argv": sys.argv[1:] if argv is None else argv,
                   "machine": platform.platform(),
                   "results": [{"dataset": d, "model": m, **v} for (d, m), v in results.items()]}
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
