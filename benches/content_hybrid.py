"""Content and hybrid quality on MovieLens: cold-item recall and the hybrid against its components.

1. Cold start, ml-latest-small, ``split.cold_items(fraction=0.1, seed=42)``: Recall@20 of the
   cold test items (``cold_recall@20`` of ``evaluate``: items without a train interaction, full
   ranking) for Popularity and ItemKNN (0 by construction: they cannot rank an item nobody
   interacted with above the rest), ContentKNN (titles TF-IDF, genres, tags) and the Hybrid of
   ItemKNN + ContentKNN (weights tuned on a validation carve of train).
   The weighted Hybrid's weights are tuned for warm validation users, so it ranks cold items
   only as far as the content share lets it; ``strategy="switching"`` ranks items with fewer
   than ``min_interactions`` (5) interactions by the content model.
2. Warm users, ``split.holdout(test_fraction=0.2, seed=42)`` on ml-latest-small (titles, genres,
   tags) and ml-100k (titles, genres; read in place, never copied): NDCG@10 and Recall@20 of
   ItemKNN, ContentKNN and the Hybrid, weights chosen on the validation carve of train only
   (``Hybrid.fit``: ``validation_fraction`` 0.2, seed 0), never on test.

    python benches/content_hybrid.py [--json benches/results/content_hybrid.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_fast import evaluate, split
from recsys_fast.data.features import TAG_SEPARATOR, ItemFeatures, item_tags
from recsys_fast.datasets import find_dataset, load_movielens
from recsys_fast.models.content import ContentKNN
from recsys_fast.models.hybrid import Hybrid
from recsys_fast.models.knn import ItemKNN
from recsys_fast.models.popularity import Popularity

K_ITEM, K_CONTENT = 100, 100


def features_for(path: Path, items: pd.DataFrame) -> ItemFeatures:
    """Titles (TF-IDF), genres and, where the folder has tags.csv, tags (multi-label)."""
    frame = items[["item", "title", "genres"]].copy()
    multi = {"genres": "|"}
    tags_file = path / "tags.csv"
    if tags_file.is_file():
        per_item = item_tags(pd.read_csv(tags_file), item="movieId", tag="tag", source=str(tags_file))
        frame = frame.merge(per_item, on="item", how="left")
        frame["tags"] = frame["tags"].fillna("")
        multi["tags"] = TAG_SEPARATOR
    return ItemFeatures.from_pandas(frame, text=["title"], multi_label=multi)


def models(cold: bool):
    out = {
        "popularity": Popularity(),
        "item_knn": ItemKNN(k=K_ITEM),
        "content_knn": ContentKNN(k=K_CONTENT),
        "hybrid": Hybrid([ItemKNN(k=K_ITEM), ContentKNN(k=K_CONTENT)]),
    }
    if cold:  # items with fewer than 5 interactions (cold ones: none) ranked by the content model
        out["hybrid_switching"] = Hybrid([ItemKNN(k=K_ITEM), ContentKNN(k=K_CONTENT)], strategy="switching")
    else:
        del out["popularity"]
    return out


def fit(model, train, features):
    if isinstance(model, (ContentKNN, Hybrid)):
        return model.fit(train, features=features)
    return model.fit(train)


def run(name: str, path: Path, cold: bool) -> dict:
    data, items = load_movielens(path)
    features = features_for(path, items)
    out = {"data": str(data), "features": str(features)}
    if cold:
        train, test = split.cold_items(data, fraction=0.1, seed=42)
        rows = {}
        for kind, model in models(cold=True).items():
            t0 = time.perf_counter()
            fit(model, train, features)
            r = evaluate(model, train, test, k=[20])
            rows[kind] = {"cold_recall@20": float(r.means["cold_recall@20"]), "fit_s": time.perf_counter() - t0}
            if kind == "hybrid":
                rows[kind]["weights"] = list(model.weights_)
            print(f"{name} cold_items(0.1, 42) {kind:12s} cold Recall@20 {rows[kind]['cold_recall@20']:.4f}",
                  flush=True)
        out["cold_items"] = rows
    train, test = split.holdout(data, test_fraction=0.2, seed=42)
    rows = {}
    for kind, model in models(cold=False).items():
        fit(model, train, features)
        r = evaluate(model, train, test, k=[10, 20])
        rows[kind] = {"ndcg@10": float(r.means["ndcg@10"]), "recall@20": float(r.means["recall@20"])}
        if kind == "hybrid":
            rows[kind]["weights"] = list(model.weights_)
            rows[kind]["validation_ndcg@10"] = max(v for _, v in model.tuning_)
        print(f"{name} holdout(0.2, 42) {kind:12s} NDCG@10 {rows[kind]['ndcg@10']:.4f} "
              f"Recall@20 {rows[kind]['recall@20']:.4f}", flush=True)
    best = max(v["ndcg@10"] for k, v in rows.items() if k != "hybrid")
    rows["hybrid_minus_best_component_ndcg@10"] = rows["hybrid"]["ndcg@10"] - best
    out["holdout"] = rows
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default="benches/results/content_hybrid.json")
    args = parser.parse_args(argv)
    results = {"load_average": os.getloadavg()}
    small = find_dataset("ml-latest-small")
    if small is None:
        raise SystemExit("ml-latest-small not found (data/ml-latest-small)")
    results["ml-latest-small"] = run("ml-latest-small", small, cold=True)
    ml100k = find_dataset("ml-100k")
    if ml100k is not None:
        results["ml-100k"] = run("ml-100k", ml100k, cold=False)
    else:
        print("ml-100k not found: skipped (set RECSYS_FAST_DATA or ../shared/data/ml-100k)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.json + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=float))
    tmp.replace(args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
