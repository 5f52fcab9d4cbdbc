"""ContentKNN: the contract suite, cold items ranked and answered, the graph is the kernel's over
feature rows, the union item map, reports of items without features, persistence."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from recsys_fast.data.features import ItemFeatures
from recsys_fast.data.interactions import Interactions
from recsys_fast.errors import DataWarning, ParameterError
from recsys_fast.kernels.similarity import topk_similarity
from recsys_fast.models.content import ContentKNN
from recsys_fast.models.registry import load
from recsys_fast.testing import RecommenderContract


class TestContentKNNContract(RecommenderContract):
    def make_model(self):
        return ContentKNN(k=10)

    def fit_model(self, model, data):
        return model.fit(data, features=self.features(data))


def _world(seed=0, n_users=30, n_items=40, n_cold=6):
    """Items in 4 genres; users like one genre; the last ``n_cold`` items have no interactions."""
    rng = np.random.default_rng(seed)
    genre = np.arange(n_items) % 4
    users, items = [], []
    warm = n_items - n_cold
    for u in range(n_users):
        liked = np.flatnonzero(genre[:warm] == u % 4)
        for i in rng.choice(liked, size=4, replace=False):
            users.append(f"u{u}")
            items.append(int(i))
    data = Interactions.from_arrays(np.array(users), np.array(items))
    frame = pd.DataFrame({"item": np.arange(n_items), "genre": [f"g{g}" for g in genre],
                          "title": [f"movie {'alpha' if g % 2 else 'beta'} {i}" for i, g in enumerate(genre)]})
    return data, ItemFeatures.from_pandas(frame, text=["title"], categorical=["genre"]), genre


def test_item_map_is_union_and_cold_items_are_recommended():
    data, features, genre = _world()
    model = ContentKNN(k=10).fit(data, features=features)
    assert model.n_items == 40 and data.n_items < 40
    assert model.seen_.shape == (data.n_users, 40)
    assert model.fit_report_["cold_items"] == 40 - data.n_items
    recs = model.recommend(data.user_map.ids, k=12)
    cold = set(range(34, 40))
    hits = 0
    for r, u in enumerate(data.user_map.ids):
        g = int(u[1:]) % 4
        top = [i for i, s in zip(recs.items[r], recs.scores[r]) if s > 0]
        assert all(genre[i] == g for i in top[:4]), "the user's own genre ranks first"
        hits += len(cold & set(top))
    assert hits > 0
    sim = model.similar_items([39], k=3)
    assert np.all(genre[sim.ids[0]] == genre[39])


def test_graph_is_the_kernel_over_feature_rows():
    data, features, _ = _world(1)
    model = ContentKNN(k=5, shrink=2.0).fit(data, features=features)
    f = features.matrix
    ref = topk_similarity(f.indptr, f.indices, f.data, f.shape[1], 5, shrink=2.0)
    np.testing.assert_array_equal(model.graph_.indptr, ref[0])
    np.testing.assert_array_equal(model.graph_.indices, ref[1])
    np.testing.assert_array_equal(model.graph_.data, ref[2])


def test_items_without_features_are_reported_and_kept():
    data, features, _ = _world(2)
    extra = Interactions.from_arrays(["u0", "u1", "u2"], [0, 1, 500])
    with pytest.warns(DataWarning, match=r"1 item\(s\) with 1 interactions have no features \(e.g. \[500\]\)"):
        model = ContentKNN(k=5).fit(extra, features=features)
    assert 500 in model.item_map_.ids.tolist()
    assert model.fit_report_["items_without_features"] == 1
    assert len(model.similar_items([500], k=3).to_pandas()) == 0
    with pytest.raises(ParameterError, match="features must be a recsys_fast.ItemFeatures"):
        ContentKNN().fit(data)


def test_history_with_cold_items_and_round_trip(tmp_path):
    data, features, genre = _world(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = ContentKNN(k=8).fit(data, features=features)
    recs = model.recommend(["new"], k=5, history={"new": [38, 39]})
    assert np.all(genre[recs.items[0][recs.scores[0] > 0]] == genre[39]) or genre[38] != genre[39]
    model.save(tmp_path / "b")
    loaded = load(tmp_path / "b")
    a, b = model.recommend(data.user_map.ids, k=7), loaded.recommend(data.user_map.ids, k=7)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert loaded.fit_report_ == model.fit_report_
    frame = loaded.item_features([39])
    assert set(frame["feature"]) >= {f"genre=g{genre[39]}"}
