"""Hybrid: the contract suite (weighted and switching), blending by normalised scores, weights
tuned on validation only, switching for cold users and items, explanations, bundles of bundles."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_fast.errors import ParameterError
from recsys_fast.models.content import ContentKNN
from recsys_fast.models.hybrid import Hybrid, _blend, _normalised
from recsys_fast.models.knn import ItemKNN, UserKNN
from recsys_fast.models.popularity import Popularity
from recsys_fast.models.registry import load
from recsys_fast.split import cold_items, holdout
from recsys_fast.testing import RecommenderContract, contract_data, contract_features


class TestHybridWeightedContract(RecommenderContract):
    def make_model(self):
        return Hybrid([ItemKNN(k=10), UserKNN(k=8)], candidates=20)


class TestHybridContentContract(RecommenderContract):
    def make_model(self):
        return Hybrid([ItemKNN(k=10), ContentKNN(k=10)], weights=[0.7, 0.3], candidates=20)

    def fit_model(self, model, data):
        return model.fit(data, features=self.features(data))


class TestHybridSwitchingContract(RecommenderContract):
    def make_model(self):
        return Hybrid([ItemKNN(k=10), ContentKNN(k=10)], strategy="switching", min_interactions=6)

    def fit_model(self, model, data):
        return model.fit(data, features=self.features(data))


def test_normalise_and_blend_reference():
    items = np.array([[3, 1, -1], [0, 2, 1]], dtype=np.int32)
    scores = np.array([[4.0, 2.0, -np.inf], [5.0, 5.0, 5.0]], dtype=np.float32)
    _, norm = _normalised(items, scores)
    np.testing.assert_allclose(norm[0, :2], [1.0, 0.0])
    assert norm[0, 2] == -np.inf and np.all(norm[1] == 1.0)
    other = (np.array([[1, 0, 2], [2, 3, 0]], np.int32), np.array([[1.0, 0.5, 0.0], [1.0, 0.5, 0.0]]))
    out_i, out_s = _blend([(items, norm), other], (0.5, 0.5), 3, 4)
    # row 0: 3 -> 0.5, 1 -> 0 + 0.5, 0 -> 0.25, 2 -> 0: ties by lower index
    np.testing.assert_array_equal(out_i[0], [1, 3, 0])
    np.testing.assert_allclose(out_s[0], [0.5, 0.5, 0.25])
    np.testing.assert_array_equal(out_i[1], [2, 0, 1])
    np.testing.assert_allclose(out_s[1], [1.0, 0.5, 0.5])  # 2: .5+.5, 0: .5+0, 1: .5 (3: .25 is cut)


def test_weights_are_tuned_on_validation_and_recommendations_blend():
    data = contract_data(n_users=80, n_items=40, seed=3)
    model = Hybrid([ItemKNN(k=10), Popularity()], candidates=40).fit(data)
    assert len(model.tuning_) == 11 and model.weights_ in [w for w, _ in model.tuning_]
    best = max(v for _, v in model.tuning_)
    assert dict(model.tuning_)[model.weights_] == best
    # fitted components see all of train; the blend equals a direct blend of their lists
    fixed = Hybrid([ItemKNN(k=10), Popularity()], weights=[0.3, 0.7], candidates=40).fit(data)
    users = data.user_map.ids[:10]
    rec = fixed.recommend(users, k=6)
    a = ItemKNN(k=10).fit(data).recommend(users, k=40)
    b = Popularity().fit(data).recommend(users, k=40)
    for r in range(len(users)):
        total = {}
        for recs, w in ((a, 0.3), (b, 0.7)):
            s = recs.scores[r].astype(np.float64)
            ok = s > -np.inf
            hi, lo = s[ok].max(), s[ok].min()
            for i, v in zip(recs.items[r][ok], s[ok]):
                total[i] = total.get(i, 0.0) + w * ((v - lo) / (hi - lo) if hi > lo else 1.0)
        expect = sorted(total, key=lambda i: (-total[i], i))[:6]
        assert rec.items[r].tolist() == expect
    with pytest.raises(ParameterError, match="weights must be None or 2 numbers"):
        Hybrid([ItemKNN(), Popularity()], weights=[1.0])
    with pytest.raises(ParameterError, match="components must be a non-empty list"):
        Hybrid([])
    with pytest.raises(ParameterError, match=r"component\(s\) \[1\] are content models"):
        Hybrid([ItemKNN(), ContentKNN()]).fit(data)


def test_switching_uses_content_for_cold_items_and_cold_users():
    data = contract_data(n_users=60, n_items=30, seed=5)
    features = contract_features(data)
    train, test = cold_items(data, fraction=0.2, seed=1)
    model = Hybrid([ItemKNN(k=10), ContentKNN(k=10)], strategy="switching", min_interactions=1).fit(
        train, features=features)
    cold = set(data.item_map.ids[np.unique(test.matrix.indices)].tolist())
    recs = model.recommend(train.user_map.ids, k=10)
    assert any(cold & set(row.tolist()) for row in recs.items), "cold items reach the lists"
    content = model.components_[1]
    new = model.recommend(["new"], k=5, history={"new": [100]})  # a cold user (1 item < 2)
    model2 = Hybrid([ItemKNN(k=10), ContentKNN(k=10)], strategy="switching", min_interactions=2).fit(
        train, features=features)
    new = model2.recommend(["new"], k=5, history={"new": [100]})
    ref = content.recommend(["new"], k=5, history={"new": [100]})
    np.testing.assert_array_equal(new.items, ref.items)
    frame = model2.explain(None, new.items[0][0], history=[100])
    assert frame.groupby("component")["component_weight"].first().to_dict() == {"content_knn": 1.0, "item_knn": 0.0}


def test_explain_names_components_and_round_trip(tmp_path):
    data = contract_data(n_users=50, n_items=30, seed=9)
    model = Hybrid([ItemKNN(k=10), UserKNN(k=8), Popularity()], weights=[0.5, 0.3, 0.2], candidates=30).fit(data)
    u = data.user_map.ids[4]
    recs = model.recommend([u], k=5)
    for item, score in zip(recs.items[0], recs.scores[0]):
        frame = model.explain(u, item)
        assert set(frame["component"]) == {"item_knn", "user_knn", "popularity"}
        per = frame.groupby("component").first()
        np.testing.assert_allclose((per["component_weight"] * per["component_score"]).sum(), score, rtol=1e-5)
    path = model.save(tmp_path / "hybrid")
    assert (path / "components" / "0" / "manifest.json").is_file()
    loaded = load(path)
    assert loaded.weights_ == model.weights_ and [c.kind for c in loaded.components_] == ["item_knn", "user_knn",
                                                                                          "popularity"]
    users = data.user_map.ids
    np.testing.assert_array_equal(loaded.recommend(users, k=7).items, model.recommend(users, k=7).items)
