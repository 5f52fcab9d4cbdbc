"""model.update(new): kNN equal to a refit bit for bit (random splits with new users and new
items, several similarities and weightings), Popularity and EASE exact, ContentKNN and Hybrid,
bundles and the serving runtime after an update, duplicates policies, refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_fast.data.interactions import Interactions
from recsys_fast.datasets import load_movielens, synthetic
from recsys_fast.errors import DataError, ParameterError
from recsys_fast.models.content import ContentKNN
from recsys_fast.models.ease import EASE
from recsys_fast.models.hybrid import Hybrid
from recsys_fast.models.knn import ItemKNN, UserKNN
from recsys_fast.models.popularity import Popularity
from recsys_fast.models.registry import load
from recsys_fast.testing import contract_data, contract_features


def _events(data: Interactions) -> pd.DataFrame:
    return data.to_pandas().drop(columns="timestamp")


def _split_events(df: pd.DataFrame, fraction: float, seed: int):
    """(old, new) events: a random ``fraction`` of the events, plus every event of a few users
    and of a few items, so that the new events bring new users and new items."""
    rng = np.random.default_rng(seed)
    new = rng.random(len(df)) < fraction
    users = df["user"].unique()
    items = df["item"].unique()
    new |= df["user"].isin(rng.choice(users, size=max(1, len(users) // 50), replace=False)).to_numpy()
    new |= df["item"].isin(rng.choice(items, size=max(1, len(items) // 50), replace=False)).to_numpy()
    return df[~new], df[new]


def _interactions(df: pd.DataFrame) -> Interactions:
    return Interactions.from_pandas(df, weight="weight")


def assert_same_knn(updated, refit):
    assert updated.item_map_ == refit.item_map_ and updated.user_map_ == refit.user_map_
    for a, b in ((updated.graph_, refit.graph_), (updated.seen_, refit.seen_)):
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.data, b.data)  # bit for bit, not approximately
    np.testing.assert_array_equal(updated.popularity_, refit.popularity_)
    users = refit.user_map_.ids
    r1, r2 = updated.recommend(users, k=20), refit.recommend(users, k=20)
    np.testing.assert_array_equal(r1.ids, r2.ids)
    np.testing.assert_array_equal(r1.scores, r2.scores)


@pytest.fixture(scope="module")
def ml_small_events(ml_latest_small_path):
    data, _ = load_movielens(ml_latest_small_path)
    return _events(data)


MODELS = {
    "item": lambda: ItemKNN(k=50), "user": lambda: UserKNN(k=30),
    "jaccard": lambda: ItemKNN(k=20, similarity="jaccard", shrink=3.0),
    "asym": lambda: ItemKNN(k=20, similarity="asymmetric_cosine", alpha=0.3, min_support=2),
    "pearson": lambda: UserKNN(k=20, similarity="pearson"),
    "adjusted": lambda: ItemKNN(k=20, similarity="adjusted_cosine"),
    "bm25": lambda: ItemKNN(k=20, weighting="bm25"), "tfidf": lambda: UserKNN(k=20, weighting="tfidf"),
    "dot": lambda: ItemKNN(k=20, similarity="dot"),
}
CASES = [("item", s) for s in range(3)] + [("user", s) for s in range(3)] + [
    (name, i % 3) for i, name in enumerate(["jaccard", "asym", "pearson", "adjusted", "bm25", "tfidf", "dot"])]


@pytest.mark.parametrize("name, seed", CASES)
def test_knn_update_equals_refit_on_ml_small(ml_small_events, name, seed):
    model = MODELS[name]
    old, new = _split_events(ml_small_events, fraction=[0.002, 0.01, 0.05][seed], seed=seed)
    updated = model().fit(_interactions(old)).update(_interactions(new))
    refit = model().fit(_interactions(pd.concat([old, new])))
    assert_same_knn(updated, refit)
    info = updated.update_info_
    assert info["rows"] == refit.graph_.shape[0] and info["changed"] <= info["recomputed"] <= info["rows"]


@pytest.mark.parametrize("seed", [3, 4])
def test_knn_update_binary_data_recomputes_a_part(seed):
    """Implicit data (the counting path): exact, and only a part of the rows is recomputed."""
    data = synthetic(3000, 800, 30_000, seed=seed, with_timestamps=False)
    df = _events(data)
    rng = np.random.default_rng(seed)
    new = rng.random(len(df)) < 0.002
    for model in (ItemKNN(k=30), UserKNN(k=30)):
        updated = model.fit(_interactions(df[~new])).update(_interactions(df[new]))
        assert_same_knn(updated, type(model)(k=30).fit(_interactions(df)))
        assert updated.update_info_["recomputed"] < updated.update_info_["rows"] // 2


def test_update_twice_and_duplicates_policies(ml_small_events):
    old, new = _split_events(ml_small_events, 0.01, seed=5)
    first, second = new.iloc[: len(new) // 2], new.iloc[len(new) // 2:]
    twice = ItemKNN(k=20).fit(_interactions(old)).update(_interactions(first)).update(_interactions(second))
    assert_same_knn(twice, ItemKNN(k=20).fit(_interactions(pd.concat([old, new]))))
    # the same pairs again with other weights: "last" replaces, "sum" adds (as Interactions does)
    again = old.sample(200, random_state=0).assign(weight=5.0)
    for policy in ("last", "sum"):
        updated = ItemKNN(k=20).fit(_interactions(old)).update(_interactions(again), duplicates=policy)
        both = pd.concat([old, again])
        refit = ItemKNN(k=20).fit(Interactions.from_pandas(both, weight="weight", duplicates=policy))
        assert_same_knn(updated, refit)


def test_popularity_and_ease_update_exactly(ml_small_events):
    old, new = _split_events(ml_small_events, 0.02, seed=6)
    both = _interactions(pd.concat([old, new]))
    for make in (lambda: Popularity(), lambda: Popularity(weighting="sum"), lambda: EASE(weight_decay=50.0)):
        updated = make().fit(_interactions(old)).update(_interactions(new))
        refit = make().fit(both)
        assert updated.item_map_ == refit.item_map_
        users = refit.user_map_.ids[:100]
        r1, r2 = updated.recommend(users, k=10), refit.recommend(users, k=10)
        np.testing.assert_array_equal(r1.ids, r2.ids)
        np.testing.assert_array_equal(r1.scores, r2.scores)


def test_content_knn_and_hybrid_update():
    data = contract_data(n_users=60, n_items=30, seed=2)
    features = contract_features(data)
    df = _events(data)
    rng = np.random.default_rng(0)
    new = rng.random(len(df)) < 0.15
    new |= (df["user"] == df["user"].iloc[0]).to_numpy()  # a user that only the new events know
    old, both = _interactions(df[~new]), _interactions(df)
    updated = ContentKNN(k=10).fit(old, features=features).update(_interactions(df[new]))
    refit = ContentKNN(k=10).fit(both, features=features)
    assert_same_knn(updated, refit)
    make = lambda: Hybrid([ItemKNN(k=10), ContentKNN(k=10)], weights=[0.6, 0.4], candidates=20)  # noqa: E731
    updated = make().fit(old, features=features).update(_interactions(df[new]))
    refit = make().fit(both, features=features)
    users = refit.user_map_.ids
    r1, r2 = updated.recommend(users, k=10), refit.recommend(users, k=10)
    np.testing.assert_array_equal(r1.ids, r2.ids)
    np.testing.assert_array_equal(r1.scores, r2.scores)
    np.testing.assert_array_equal(updated.item_counts_, refit.item_counts_)


def test_saving_again_ships_the_update(tmp_path, ml_small_events):
    from recsys_fast import serving

    old, new = _split_events(ml_small_events, 0.01, seed=7)
    model = ItemKNN(k=20).fit(_interactions(old))
    model.save(tmp_path / "v1")
    model.update(_interactions(new))
    model.save(tmp_path / "v2")
    fresh_user = sorted(set(new["user"]) - set(old["user"]))[0]
    runtime = serving.load(tmp_path / "v2")
    expected = model.recommend([fresh_user], k=10)
    np.testing.assert_array_equal(runtime.recommend([fresh_user], k=10).ids, expected.ids)
    np.testing.assert_array_equal(load(tmp_path / "v2").recommend([fresh_user], k=10).ids, expected.ids)
    with pytest.raises(Exception, match=str(fresh_user)):
        serving.load(tmp_path / "v1").recommend([fresh_user], k=10)


def test_update_refusals():
    data = contract_data()
    model = ItemKNN(k=5)
    with pytest.raises(Exception, match="not fitted"):
        model.update(data)
    model.fit(data)
    with pytest.raises(TypeError, match="Interactions"):
        model.update(pd.DataFrame({"user": ["u1"], "item": [100]}))
    with pytest.raises(ParameterError, match="duplicates"):
        model.update(data, duplicates="error")
    ints = Interactions.from_arrays(np.array([1]), np.array([100]))
    with pytest.raises(DataError, match="user ids are integers"):
        model.update(ints)


@pytest.mark.parametrize("make", [lambda: ItemKNN(k=25), lambda: ItemKNN(k=10, similarity="jaccard", shrink=2.0),
                                  lambda: ItemKNN(k=15, similarity="asymmetric_cosine", alpha=0.3, min_support=2)])
def test_item_knn_reserve_updates_in_a_row_and_after_loading(tmp_path, monkeypatch, make):
    """Implicit data: several updates in a row (new users, new items, popular and long-tail items)
    take the reserve path and equal a refit bit for bit; the reserve travels in the bundle, so the
    first update after loading takes it too. (The pair budget is lifted: at this size the pairs of
    a batch are a large share of a build, and the update would rebuild instead.)"""
    from recsys_fast.kernels import similarity_update

    monkeypatch.setattr(similarity_update, "_PAIR_SHARE", 0)
    data = synthetic(2000, 600, 20_000, seed=11, with_timestamps=False)
    df = _events(data)
    rng = np.random.default_rng(11)
    batch = rng.integers(0, 5, len(df))  # 0: the first fit; 1..4: four updates
    batch[df["item"].isin(df["item"].unique()[:3]).to_numpy()] = 3  # items that only update 3 brings
    batch[df["user"].isin(df["user"].unique()[:4]).to_numpy()] = 2  # users that only update 2 brings
    batch[(batch > 0) & (rng.random(len(df)) < 0.97)] = 0  # updates are small
    model = make().fit(_interactions(df[batch == 0]))
    paths = []
    for b in range(1, 5):
        if b == 3:
            model.save(tmp_path / "bundle")
            model = load(tmp_path / "bundle")
        model.update(_interactions(df[batch == b]))
        paths.append(model.update_info_["path"])
        assert_same_knn(model, make().fit(_interactions(df[batch <= b])))
    assert paths.count("reserve") >= 3, paths


def test_bundle_without_reserve_rebuilds_it_on_update(tmp_path, monkeypatch):
    from recsys_fast.kernels import similarity_update

    monkeypatch.setattr(similarity_update, "_PAIR_SHARE", 0)
    data = synthetic(500, 200, 5000, seed=12, with_timestamps=False)
    df = _events(data)
    new = np.random.default_rng(12).random(len(df)) < 0.01
    model = ItemKNN(k=10).fit(_interactions(df[~new]))
    model._reserve = None  # as a bundle written before the reserve existed
    model.save(tmp_path / "old")
    loaded = load(tmp_path / "old")
    loaded.update(_interactions(df[new]))
    assert loaded.update_info_["path"] == "full"
    assert_same_knn(loaded, ItemKNN(k=10).fit(_interactions(df)))
    loaded.update(_interactions(df[new].assign(weight=1.0)))  # the same events again: nothing changes
    assert loaded.update_info_["path"] == "reserve"
    assert_same_knn(loaded, ItemKNN(k=10).fit(_interactions(df)))
