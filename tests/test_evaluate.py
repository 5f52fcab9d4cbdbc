"""evaluate(): the full-ranking protocol end to end, checked against plain-Python expectations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from recsys_fast.data.interactions import Interactions
from recsys_fast.errors import ParameterError, ParameterTypeError
from recsys_fast.evaluation import EvaluationResult, compare, evaluate
from recsys_fast.models.base import Recommender
from recsys_fast.models.popularity import Popularity
from tests.reference import METRIC_REFERENCES, coverage_reference, rating_errors_reference

NAMES = ("precision", "recall", "f1", "ndcg", "map", "mrr", "hit_rate")


def _random_pairs(rng, users, items, n):
    """n distinct (user, item) pairs."""
    pairs = set()
    while len(pairs) < n:
        pairs.add((users[rng.integers(len(users))], items[rng.integers(len(items))]))
    return sorted(pairs)


def _popularity_expectation(train_pairs, test_pairs, ks, exclude=True):
    """Expected per-user metrics and coverage for Popularity(count), from the raw pairs alone.

    The model knows the users and items of train; items rank by (-train count, item id) — ids are
    ints, so id order is the model's index order; a user's train items are excluded; test users and
    items the model does not know are skipped.
    """
    known_users = {u for u, _ in train_pairs}
    known_items = sorted({i for _, i in train_pairs})
    counts = {i: sum(1 for _, j in train_pairs if j == i) for i in known_items}
    ranking = sorted(known_items, key=lambda i: (-counts[i], i))
    kmax = max(ks)
    per_user, recs_rows = {}, []
    for u in sorted({u for u, _ in test_pairs}):
        if u not in known_users:
            continue
        test = {i for v, i in test_pairs if v == u and i in counts}
        if not test:
            continue
        seen = {i for v, i in train_pairs if v == u} if exclude else set()
        recs = [i for i in ranking if i not in seen][:kmax]
        recs += [-1] * (kmax - len(recs))
        recs_rows.append(recs)
        per_user[u] = {f"{m}@{k}": METRIC_REFERENCES[m](recs, test, k) for m in NAMES for k in ks}
    cov = {f"coverage@{k}": coverage_reference(recs_rows, len(known_items), k) for k in ks}
    return per_user, cov


@pytest.fixture
def split(rng):
    """A small data set with popularity ties, split into train and test sharing id maps."""
    pairs = _random_pairs(rng, list(range(100, 130)), list(range(0, 40)), 300)
    users, items = np.array(pairs).T
    data = Interactions.from_arrays(users, items)
    in_test = rng.random(data.nnz) < 0.25
    train, test = data.select(~in_test), data.select(in_test)
    return train, test


def _pairs(inter: Interactions):
    df = inter.to_pandas()
    return list(zip(df["user"].tolist(), df["item"].tolist()))


def _check(result: EvaluationResult, per_user, cov, ks):
    assert list(result.per_user["user"]) == sorted(per_user)
    for key in [f"{m}@{k}" for m in NAMES for k in ks]:
        want = [per_user[u][key] for u in sorted(per_user)]
        np.testing.assert_allclose(result.per_user[key].to_numpy(), want, rtol=1e-12, atol=1e-15, err_msg=key)
        assert result.means[key] == pytest.approx(np.mean(want), rel=1e-12), key
    for key, value in cov.items():
        assert result.means[key] == pytest.approx(value), key


def test_popularity_end_to_end_matches_reference(split):
    train, test = split
    model = Popularity().fit(train)
    ks = (1, 5, 10, 50)  # 50 > the 40-item catalogue: padded lists
    result = evaluate(model, train, test, k=ks)
    per_user, cov = _popularity_expectation(_pairs(train), _pairs(test), ks)
    _check(result, per_user, cov, ks)
    assert result.protocol["n_users_evaluated"] == len(per_user)
    assert result.protocol["ranking"] == f"full ranking over {model.n_items} items, train items excluded"
    assert "rmse" not in result.means  # Popularity ranks, it does not predict ratings


def test_hand_computed_case():
    """Two users, four items: every number here follows from the formulas by hand."""
    train = Interactions.from_arrays([1, 1, 2, 3, 3, 3], [10, 11, 10, 10, 11, 12])
    # counts: 10 -> 3, 11 -> 2, 12 -> 1, 13 -> 0 (13 only in test)
    test = Interactions.from_arrays([1, 2, 2], [12, 12, 13])
    model = Popularity().fit(train)
    result = evaluate(model, train, test, k=2)
    # user 1 (seen 10, 11): recs [12, -1]; T = {12} -> all metrics 1 except precision 1/2
    # user 2 (seen 10): recs [11, 12]; T = {12} (13 unknown, dropped) -> hit at rank 2
    per_user, cov = _popularity_expectation([(1, 10), (1, 11), (2, 10), (3, 10), (3, 11), (3, 12)],
                                            [(1, 12), (2, 12), (2, 13)], (2,))
    _check(result, per_user, cov, (2,))
    assert result.means["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert result.means["mrr@2"] == pytest.approx((1 + 1 / 2) / 2)
    assert result.means["ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 2)
    assert result.means["coverage@2"] == pytest.approx(2 / 3)
    assert result.protocol["n_test_items_dropped_unknown"] == 1


def test_protocol_counts_with_different_id_maps(rng, split):
    train, _ = split
    model = Popularity().fit(train)
    known_users = train.user_map.ids[np.diff(train.matrix.indptr) > 0].tolist()
    known_items = train.item_map.ids.tolist()
    test_pairs = _random_pairs(rng, known_users[:20] + [900, 901, 902], known_items[:30] + [500, 501], 120)
    # one known user whose only test items are unknown to the model
    lonely = known_users[25]
    test_pairs = [p for p in test_pairs if p[0] != lonely] + [(lonely, 500), (lonely, 777)]
    test = Interactions.from_arrays(*np.array(test_pairs).T)
    assert test.user_map != model.user_map_  # built on its own: different maps

    result = evaluate(model, train, test, k=(5, 10))
    per_user, cov = _popularity_expectation(_pairs(train), test_pairs, (5, 10))
    _check(result, per_user, cov, (5, 10))

    test_users = {u for u, _ in test_pairs}
    unknown_users = test_users - set(known_users)
    known_test = [(u, i) for u, i in test_pairs if u not in unknown_users]
    dropped = [(u, i) for u, i in known_test if i not in set(known_items)]
    p = result.protocol
    assert p["n_test_users"] == len(test_users)
    assert p["n_users_unknown"] == len(unknown_users) > 0
    assert p["n_test_items_dropped_unknown"] == len(dropped) > 0
    assert p["n_unknown_items"] == len({i for _, i in dropped})
    assert p["n_users_no_test_items"] == 1
    assert p["n_users_evaluated"] == len(test_users) - len(unknown_users) - 1 == len(per_user)
    text = str(result)
    assert f"users skipped, unknown to the model: {len(unknown_users)}" in text
    assert f"test interactions dropped, item unknown to the model: {len(dropped)}" in text


def test_train_none_excludes_nothing_and_overlap_is_counted(split):
    train, test = split
    model = Popularity().fit(train)
    result = evaluate(model, None, test, k=10)
    per_user, cov = _popularity_expectation(_pairs(train), _pairs(test), (10,), exclude=False)
    _check(result, per_user, cov, (10,))
    assert result.protocol["ranking"].endswith("nothing excluded")
    # test == train: every test interaction is excluded, so nothing can be hit, and it is reported
    same = evaluate(model, train, train, k=10)
    assert same.means["hit_rate@10"] == 0.0
    assert same.protocol["n_test_items_in_train"] == train.nnz


def test_batches_and_threads_do_not_change_results(split):
    train, test = split
    model = Popularity().fit(train)
    ref = evaluate(model, train, test, k=(3, 10))
    for kwargs in ({"batch_size": 1}, {"batch_size": 7, "n_threads": 1}, {"n_threads": 2}):
        other = evaluate(model, train, test, k=(3, 10), **kwargs)
        assert other.means == ref.means
        assert other.per_user.equals(ref.per_user)


def test_batch_path_matches_recommend(split):
    """The internal batch evaluate uses gives the same lists as the public recommend()."""
    train, _ = split
    model = Popularity().fit(train)
    users = model.user_map_.ids[::3]
    idx, scores = model.recommend_indices(model.user_map_.to_index(users), 12, exclude=train.matrix)
    recs = model.recommend(users, k=12)
    np.testing.assert_array_equal(model.item_map_.to_external(idx), recs.items)
    np.testing.assert_array_equal(scores, recs.scores)


def test_metric_selection_and_errors(split):
    train, test = split
    model = Popularity().fit(train)
    result = evaluate(model, train, test, k=(5, 10), metrics=["ndcg", "coverage"])
    assert list(result.means) == ["ndcg@5", "ndcg@10", "coverage@5", "coverage@10"]
    assert list(result.per_user.columns) == ["user", "n_test", "ndcg@5", "ndcg@10"]
    with pytest.raises(ParameterError, match=r"metrics must be some of 'precision', 'recall', .*got \['auc'\] \(unknown: 'auc'\)"):
        evaluate(model, train, test, metrics=["auc"])
    with pytest.raises(ParameterError, match="rmse and mae cannot be computed: Popularity does not predict ratings"):
        evaluate(model, train, test, metrics=["rmse"])
    with pytest.raises(ParameterError, match=r"k must be an integer >= 1 or a non-empty list of them, got \[0\]"):
        evaluate(model, train, test, k=[0])
    with pytest.raises(ParameterTypeError, match="test must be recsys_fast.Interactions, got a DataFrame"):
        evaluate(model, train, test.to_pandas())
    with pytest.raises(ParameterError, match="batch_size must be an integer >= 1, got 0"):
        evaluate(model, train, test, batch_size=0)
    with pytest.raises(ParameterTypeError, match="model must be a recsys_fast Recommender, got a str"):
        evaluate("popularity", train, test)
    with pytest.raises(ParameterError, match=re.escape(f"exclude must be None, 'seen' or a CSR matrix of the model's shape {model.seen_.shape}")):
        model.recommend_indices(np.array([0]), 10, exclude=test.matrix[:, :5])
    with pytest.raises(RuntimeError, match="Popularity is not fitted"):
        evaluate(Popularity(), train, test)


def test_result_prints_serialises_and_compares(split):
    train, test = split
    a = evaluate(Popularity().fit(train), train, test, k=(10, 20))
    b = evaluate(Popularity(weighting="sum").fit(train), train, test, k=(10, 20))
    text = str(a)
    assert "metric" in text and "@10" in text and "@20" in text and "ndcg" in text
    assert f"users evaluated: {a.protocol['n_users_evaluated']} of" in text
    assert text.count("\n") >= 12
    back = json.loads(json.dumps(a.to_dict(per_user=True)))
    assert back["means"]["ndcg@10"] == a.means["ndcg@10"] and len(back["per_user"]) == len(a.per_user)
    table = compare({"count": a, "sum": b})
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["model", "precision@10", "precision@20"]
    assert lines[2].split()[0] == "count" and lines[3].split()[0] == "sum"
    assert lines[2].split()[1] == f"{a.means['precision@10']:.4f}"
    with pytest.raises(ParameterTypeError, match=r"results\['x'\] must be an EvaluationResult, got a dict"):
        compare({"x": a.to_dict()})
    with pytest.raises(ParameterError, match="results must be a non-empty"):
        compare({})


class _ItemMean(Recommender):
    """A test-only rating model: predicts each item's mean training rating."""

    kind = "test-item-mean"
    predicts_ratings = True

    def __init__(self):
        pass

    def _fit(self, train):
        m = train.matrix
        sums = np.bincount(m.indices, weights=m.data, minlength=train.n_items)
        counts = np.bincount(m.indices, minlength=train.n_items)
        self.item_mean_ = (sums / np.maximum(counts, 1)).astype(np.float32)

    def _score_rows(self, batch):
        return np.broadcast_to(self.item_mean_, (len(batch.user_index), len(self.item_mean_)))

    def _predict_pairs(self, user_index, item_index):
        return self.item_mean_[item_index]


def test_rmse_and_mae_for_rating_models(rng):
    pairs = _random_pairs(rng, list(range(20)), list(range(15)), 150)
    ratings = rng.integers(1, 6, len(pairs)).astype(float)
    in_test = rng.random(len(pairs)) < 0.3
    train_rows = [(u, i, r) for (u, i), r, t in zip(pairs, ratings, in_test) if not t]
    test_rows = [(u, i, r) for (u, i), r, t in zip(pairs, ratings, in_test) if t] + [(99, 0, 3.0), (0, 99, 1.0)]
    train = Interactions.from_arrays(*np.array(train_rows).T)
    test = Interactions.from_arrays(*np.array(test_rows).T)
    model = _ItemMean().fit(train)
    result = evaluate(model, train, test, k=5)
    item_ratings = {}
    for _, i, r in train_rows:
        item_ratings.setdefault(i, []).append(r)
    known_users = {u for u, _, _ in train_rows}
    scored = [(sum(item_ratings[i]) / len(item_ratings[i]), r) for u, i, r in test_rows
              if u in known_users and i in item_ratings]
    want = rating_errors_reference([p for p, _ in scored], [a for _, a in scored])
    assert result.means["rmse"] == pytest.approx(want["rmse"], rel=1e-6)
    assert result.means["mae"] == pytest.approx(want["mae"], rel=1e-6)
    assert result.protocol["n_rating_pairs"] == len(scored)
    assert "rating pairs (rmse, mae)" in str(result)
    with pytest.raises(ValueError, match="test has no ratings"):
        evaluate(model, train, Interactions.from_arrays([0], [0]), metrics=["mae"])


@pytest.fixture
def ml_small():
    try:
        from recsys_fast.datasets import find_dataset
    except ImportError:  # before the data layer lands: the copy shipped in the repo
        path = Path(__file__).resolve().parents[1] / "data" / "ml-latest-small"
        path = path if (path / "ratings.csv").is_file() else None
    else:
        path = find_dataset("ml-latest-small")
    if path is None:
        pytest.skip("ml-latest-small not found (set RECSYS_FAST_DATA or keep data/ml-latest-small)")
    return path


def test_real_data_matches_public_recommend(ml_small):
    """On ml-latest-small, evaluate() agrees with the reference applied to recommend() lists."""
    data = Interactions.from_csv(ml_small / "ratings.csv", user="userId", item="movieId",
                                 weight="rating", timestamp="timestamp")
    in_test = np.random.default_rng(7).random(data.nnz) < 0.2
    train, test = data.select(~in_test), data.select(in_test)
    model = Popularity().fit(train)
    result = evaluate(model, train, test, k=(10, 20))
    users = result.per_user["user"].to_numpy()
    recs = model.recommend(users, k=20).items
    test_idx = test.matrix
    for row, u in enumerate(users[::7]):
        r = test.user_map.to_index([u])[0]
        t = set(test.item_map.ids[test_idx.indices[test_idx.indptr[r]:test_idx.indptr[r + 1]]].tolist())
        for name in NAMES:
            want = METRIC_REFERENCES[name](recs[row * 7].tolist(), t, 10)
            assert result.per_user[f"{name}@10"].iloc[row * 7] == pytest.approx(want, rel=1e-12)
    assert result.protocol["n_users_evaluated"] == int((np.diff(test.matrix.indptr) > 0).sum())


def test_nothing_to_evaluate_gives_nan_and_says_why():
    train = Interactions.from_arrays([1, 2, 3], [1, 2, 3])
    model = Popularity().fit(train)
    test = Interactions.from_arrays([5, 1], [1, 9])  # user 5 unknown; user 1's only item unknown
    result = evaluate(model, train, test, k=2)
    # item 9 has no train interaction: a cold item the model cannot rank, a miss for cold_recall
    assert result.means.pop("cold_recall@2") == 0.0 and result.protocol["n_cold_items_unknown"] == 1
    assert all(np.isnan(v) for v in result.means.values())
    assert len(result.per_user) == 0
    p = result.protocol
    assert (p["n_users_evaluated"], p["n_users_unknown"], p["n_users_no_test_items"]) == (0, 1, 1)
    assert "users evaluated: 0 of 2 test users" in str(result)


def test_id_type_mismatch_is_named():
    train = Interactions.from_arrays([1, 2, 3], [1, 2, 3])
    model = Popularity().fit(train)
    with pytest.raises(ValueError, match="test user ids are strings but the model's are integers"):
        evaluate(model, train, Interactions.from_arrays(["a"], [1]))


def test_cold_recall_matches_a_direct_count():
    import pandas as pd

    from recsys_fast.data.features import ItemFeatures
    from recsys_fast.split import cold_items, holdout
    from recsys_fast.models.content import ContentKNN
    from recsys_fast.models.knn import ItemKNN

    rng = np.random.default_rng(5)
    n_items = 60
    genre = np.arange(n_items) % 3
    users, items = [], []
    for u in range(40):
        liked = np.flatnonzero(genre == u % 3)
        for i in rng.choice(liked, size=8, replace=False):
            users.append(u)
            items.append(int(i))
    data = Interactions.from_arrays(np.array(users), np.array(items))
    train, test = cold_items(data, fraction=0.2, seed=1)
    feats = ItemFeatures.from_pandas(pd.DataFrame({"item": np.arange(n_items), "g": genre.astype(str)}),
                                     categorical=["g"])
    content = ContentKNN(k=20).fit(train, features=feats)
    res = evaluate(content, train, test, k=[5, 10])
    cold = set(np.unique(test.matrix.indices).tolist())
    assert res.protocol["n_cold_items"] == len(cold)
    recs = content.recommend(data.user_map.ids, k=10)
    for kk in (5, 10):
        vals = []
        for r, u in enumerate(data.user_map.ids):
            row = data.user_map.to_index([u])[0]
            t = set(data.item_map.ids[test.matrix.indices[test.matrix.indptr[row]:test.matrix.indptr[row + 1]]])
            if t:
                vals.append(len(t & set(recs.items[r][:kk].tolist())) / len(t))
        np.testing.assert_allclose(res.means[f"cold_recall@{kk}"], np.mean(vals), rtol=1e-12)
    assert res.means["cold_recall@10"] > 0.3
    cf = evaluate(ItemKNN(k=20).fit(train), train, test, k=[10])
    assert cf.means["cold_recall@10"] == 0.0  # cold items have no neighbours and come last in the fill
    # a warm holdout has no cold items: no cold metric, no cold protocol entry
    tr, te = holdout(data, test_fraction=0.2, seed=0)
    warm = evaluate(ItemKNN(k=20).fit(tr), tr, te, k=[10])
    assert "cold_recall@10" not in warm.means and "n_cold_items" not in warm.protocol
