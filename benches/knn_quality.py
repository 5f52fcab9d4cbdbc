"""Ranking quality of ItemKNN / UserKNN against implicit's item-item models, same split, same evaluation.

Loads ml-100k (ratings as weights, as ``load_movielens`` gives them), splits it with
``holdout(test_fraction=0.2, seed=42)`` and evaluates every model with ``recsys_fast.evaluate``
(full ranking, train items excluded). implicit's models are wrapped in a Recommender whose
``_recommend_rows`` calls implicit's batch ``recommend(..., filter_already_liked_items=True)``, so
both sides go through the same metric code; the padding implicit returns (id -1) is kept as
padding. implicit's K counts the item itself as a neighbour, so implicit K=n equals ItemKNN
k=n-1 (both rows are printed). Also counts the users for whom implicit returned fewer than k items or a seen item.

    python benches/knn_quality.py [--data ml-100k] [--k 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

from recsys_fast import threads
from recsys_fast.datasets import find_dataset, load_movielens
from recsys_fast.split import holdout
from recsys_fast.evaluation import evaluate
from recsys_fast.models.base import Recommender
from recsys_fast.models.knn import ItemKNN, UserKNN


class ImplicitItemItem(Recommender):
    """An implicit ItemItemRecommender behind our protocol (bench-only adapter)."""

    kind = "implicit_item_item"

    def __init__(self, factory=None):
        self.factory = factory
        self.short_rows = 0
        self.seen_rows = 0

    def _fit(self, train):
        self.model_ = self.factory()
        self.model_.fit(train.matrix.tocsr().astype(np.float64), show_progress=False)

    def _recommend_rows(self, batch, k):
        import scipy.sparse as sp

        rows = batch.user_index
        user_items = sp.csr_matrix((batch.hist_data, batch.hist_indices, batch.hist_indptr),
                                   shape=(len(rows), self.n_items))
        ids, scores = self.model_.recommend(rows, user_items, N=k, filter_already_liked_items=True)
        ids = np.asarray(ids, dtype=np.int32)
        scores = np.asarray(scores, dtype=np.float32)
        pad = ids < 0
        scores[pad] = -np.inf
        self.short_rows += int(pad.any(axis=1).sum())
        for r in range(len(rows)):
            seen = batch.hist_indices[batch.hist_indptr[r]:batch.hist_indptr[r + 1]]
            self.seen_rows += bool(np.isin(ids[r][~pad[r]], seen).any())
        return ids, scores


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="ml-100k")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender, TFIDFRecommender

    warnings.filterwarnings("ignore", message="Method expects CSR input")  # implicit's own coo round trip

    path = find_dataset(args.data) if "/" not in args.data else args.data
    data, _ = load_movielens(path)
    train, test = holdout(data, test_fraction=0.2, seed=42)
    print(f"{args.data}: train {train.nnz}, test {test.nnz} interactions; holdout 0.2, seed 42")

    models = {
        "ItemKNN cosine k=50": ItemKNN(k=50),
        "implicit CosineRecommender K=50": ImplicitItemItem(lambda: CosineRecommender(K=50)),
        "ItemKNN bm25 cosine k=100 (k1=1.2, b=0.75)": ItemKNN(k=100, weighting="bm25", k1=1.2, b=0.75),
        "ItemKNN bm25 dot k=100 (k1=1.2, b=0.75)": ItemKNN(k=100, similarity="dot", weighting="bm25", k1=1.2,
                                                           b=0.75),
        "ItemKNN bm25 dot k=99 (k1=1.2, b=0.75)": ItemKNN(k=99, similarity="dot", weighting="bm25", k1=1.2,
                                                          b=0.75),
        "ItemKNN bm25 cosine k=100 (k1=100, b=0.8)": ItemKNN(k=100, weighting="bm25"),
        "implicit BM25Recommender K=100 (k1=1.2, b=0.75)": ImplicitItemItem(lambda: BM25Recommender(K=100)),
        "ItemKNN cosine k=49": ItemKNN(k=49),
        "ItemKNN tfidf k=50": ItemKNN(k=50, weighting="tfidf"),
        "ItemKNN tfidf k=49": ItemKNN(k=49, weighting="tfidf"),
        "implicit TFIDFRecommender K=50": ImplicitItemItem(lambda: TFIDFRecommender(K=50)),
        "UserKNN cosine k=50": UserKNN(k=50),
        "UserKNN cosine k=100": UserKNN(k=100),
        "UserKNN bm25 cosine k=50": UserKNN(k=50, weighting="bm25", k1=1.2, b=0.75),
        "UserKNN tfidf k=50": UserKNN(k=50, weighting="tfidf"),
    }
    results = {}
    with threads.limit(args.threads):
        for name, model in models.items():
            t0 = time.perf_counter()
            model.fit(train)
            fit_s = time.perf_counter() - t0
            res = evaluate(model, train, test, k=args.k, metrics=["ndcg", "precision", "recall", "rmse", "mae"]
                           if model.predicts_ratings else ["ndcg", "precision", "recall"])
            row = {**res.means, "fit_s": fit_s}
            if isinstance(model, ImplicitItemItem):
                row["users_short"] = model.short_rows
                row["users_with_seen_item"] = model.seen_rows
            results[name] = row
            print(f"{name:48s} ndcg@{args.k}={res.means[f'ndcg@{args.k}']:.4f} "
                  f"precision@{args.k}={res.means[f'precision@{args.k}']:.4f} "
                  f"recall@{args.k}={res.means[f'recall@{args.k}']:.4f}"
                  + (f" rmse={res.means['rmse']:.4f}" if "rmse" in res.means else "") + f" fit {fit_s:.2f}s"
                  + (f"  (implicit: {row['users_short']} users < {args.k} items, "
                     f"{row['users_with_seen_item']} with a seen item)" if "users_short" in row else ""))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"data": args.data, "split": "holdout 0.2 seed 42", "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
