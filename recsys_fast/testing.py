"""The contract every recommender honours, as a reusable pytest suite.

Subclass ``RecommenderContract`` in a test module and implement ``make_model``::

    class TestPopularityContract(RecommenderContract):
        def make_model(self):
            return Popularity()

The suite fits the model on a small planted data set (string user ids, integer item ids) and
checks single and batch recommend, exclusions, the ``items=`` restriction, unknown users,
``k`` larger than the catalogue, new users from ``history=`` where supported, and that a
save/load round trip gives identical recommendations. Requires pytest.
"""

from __future__ import annotations

import numpy as np
import pytest

from .data.interactions import Interactions
from .errors import BundleError, NotFittedError, ParameterError, UnknownIdError


def contract_data(n_users: int = 40, n_items: int = 30, seed: int = 7) -> Interactions:
    """Two taste groups (users like the first or the second half of the items) plus noise."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        half = (u % 2) * (n_items // 2)
        picks = rng.choice(n_items // 2, size=rng.integers(3, 9), replace=False) + half
        noise = rng.choice(n_items, size=rng.integers(0, 2), replace=False)
        chosen = np.unique(np.concatenate([picks, noise]))
        users += [f"u{u:03d}"] * len(chosen)
        items += list(chosen + 100)
        times += list(rng.permutation(len(chosen)) + 1000 * u)
    # the last item is never interacted with, so the catalogue has a cold item
    return Interactions.from_arrays(np.array(users), np.array(items), np.ones(len(users), np.float32),
                                    np.array(times))


def contract_features(data: Interactions):
    """Item features for ``contract_data``'s items: the taste half as a category, plus labels."""
    import pandas as pd

    from .data.features import ItemFeatures

    ids = data.item_map.ids
    half = (ids - ids.min()) >= (ids.max() - ids.min() + 1) // 2
    frame = pd.DataFrame({"item": ids, "half": np.where(half, "second", "first"),
                          "labels": [f"l{i % 3}|l{3 + i % 5}" for i in ids]})
    return ItemFeatures.from_pandas(frame, categorical=["half"], multi_label={"labels": "|"})


class RecommenderContract:
    """Mixin of contract tests; subclasses implement ``make_model()`` returning an unfitted model."""

    def make_model(self):  # pragma: no cover - supplied by subclasses
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls):
        return contract_data()

    def fit_model(self, model, data):
        """Fit ``model`` on ``data``; override to pass more (``model.fit(data, features=...)``)."""
        return model.fit(data)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, data):
        suite = cls()
        return suite.fit_model(suite.make_model(), data)

    # -------------------------------------------------------------- helpers
    @staticmethod
    def _seen(data, user):
        row = data.user_map.to_index([user])[0]
        m = data.matrix
        return set(data.item_map.ids[m.indices[m.indptr[row]:m.indptr[row + 1]]].tolist())

    @staticmethod
    def _valid(items_row, scores_row):
        return [i for i, s in zip(items_row.tolist(), scores_row.tolist()) if s != -np.inf]

    # -------------------------------------------------------------- tests
    def test_not_fitted_raises(self):
        with pytest.raises(NotFittedError):
            self.make_model().recommend(["u000"], k=3)

    def test_single_user(self, fitted, data):
        recs = fitted.recommend("u001", k=5)
        assert recs.items.shape == (1, 5) and recs.scores.shape == (1, 5)
        valid = self._valid(recs.items[0], recs.scores[0])
        assert len(valid) == 5
        assert set(valid) <= set(data.item_map.ids.tolist())
        assert np.all(np.diff(recs.scores[0]) <= 0), "scores must be non-increasing"
        assert len(set(valid)) == len(valid), "no duplicate items in a list"

    def test_batch_equals_single(self, fitted, data):
        users = data.user_map.ids[:6]
        batch = fitted.recommend(users, k=7)
        for r, u in enumerate(users):
            one = fitted.recommend([u], k=7)
            np.testing.assert_array_equal(batch.items[r], one.items[0])
            np.testing.assert_allclose(batch.scores[r], one.scores[0], rtol=1e-5, atol=1e-6)

    def test_excludes_seen(self, fitted, data):
        users = data.user_map.ids
        recs = fitted.recommend(users, k=10)
        for r, u in enumerate(users):
            assert not (set(self._valid(recs.items[r], recs.scores[r])) & self._seen(data, u)), u

    def test_exactly_min_k_unseen(self, fitted, data):
        users = data.user_map.ids[:8]
        k = data.n_items + 5
        recs = fitted.recommend(users, k=k)
        assert recs.items.shape == (len(users), data.n_items), "k above the catalogue is clamped"
        for r, u in enumerate(users):
            valid = self._valid(recs.items[r], recs.scores[r])
            assert len(valid) == data.n_items - len(self._seen(data, u))
            assert np.all(recs.items[r][len(valid):] == -1), "padding is item -1 at the end"

    def test_include_seen(self, fitted, data):
        u = data.user_map.ids[0]
        recs = fitted.recommend([u], k=data.n_items, exclude_seen=False)
        assert len(self._valid(recs.items[0], recs.scores[0])) == data.n_items

    def test_items_restriction(self, fitted, data):
        allowed = data.item_map.ids[::3]
        users = data.user_map.ids[:5]
        recs = fitted.recommend(users, k=len(allowed) + 2, items=allowed)
        for r, u in enumerate(users):
            valid = self._valid(recs.items[r], recs.scores[r])
            assert set(valid) <= set(allowed.tolist())
            assert len(valid) == len(set(allowed.tolist()) - self._seen(data, u))

    def test_unknown_user(self, fitted, data):
        with pytest.raises(UnknownIdError, match="no-such-user"):
            fitted.recommend(["no-such-user"], k=3)
        padded = fitted.recommend(["no-such-user", data.user_map.ids[0]], k=3, on_unknown="pad")
        assert np.all(padded.items[0] == -1) and np.all(padded.scores[0] == -np.inf)
        assert len(self._valid(padded.items[1], padded.scores[1])) == 3

    def test_unknown_item_restriction(self, fitted):
        with pytest.raises(UnknownIdError):
            fitted.recommend(["u000"], k=3, items=[999_999])

    def test_history_for_new_user(self, fitted, data):
        history = list(self._seen(data, data.user_map.ids[2]))
        if not fitted.supports_history:
            with pytest.raises(ParameterError, match="cannot score users from a given history"):
                fitted.recommend(["brand-new"], k=5, history={"brand-new": history})
            return
        recs = fitted.recommend(["brand-new"], k=5, history={"brand-new": history})
        valid = self._valid(recs.items[0], recs.scores[0])
        assert len(valid) == 5 and not (set(valid) & set(history))

    def test_history_with_unknown_items(self, fitted, data):
        if not fitted.supports_history:
            return
        history = list(self._seen(data, data.user_map.ids[2]))
        given = {"brand-new": history + ["no-such-item"]}
        with pytest.raises(UnknownIdError, match="unknown item id: 'no-such-item'"):
            fitted.recommend(["brand-new"], k=5, history=given)
        ignored = fitted.recommend(["brand-new"], k=5, history=given, on_unknown_items="ignore")
        plain = fitted.recommend(["brand-new"], k=5, history={"brand-new": history})
        np.testing.assert_array_equal(ignored.items, plain.items)

    def test_history_of_known_user_keeps_its_training_items_excluded(self, fitted, data):
        if not fitted.supports_history:
            return
        u = data.user_map.ids[0]
        extra = next(i for i in data.item_map.ids.tolist() if i not in self._seen(data, u))
        recs = fitted.recommend([u], k=data.n_items, history={u: [extra]})
        valid = set(self._valid(recs.items[0], recs.scores[0]))
        assert valid and not (valid & (self._seen(data, u) | {extra}))

    def test_bad_arguments_are_parameter_errors(self, fitted, data):
        u = data.user_map.ids[:2]
        for k in (0, -5, 2.5, "3", None, True, float("nan")):
            with pytest.raises(ParameterError, match="k must be an integer >= 1"):
                fitted.recommend(u, k=k)
        for name, value in (("exclude_seen", "yes"), ("on_unknown", "skip"), ("on_unknown_items", "drop"),
                            ("history", [1, 2])):
            with pytest.raises(ParameterError, match=name):
                fitted.recommend(u, k=3, **{name: value})
        for users in ({"a": 1}, None, [[u[0]], [u[1]]]):
            with pytest.raises(ParameterError, match="users must be one id or"):
                fitted.recommend(users, k=3)
        assert fitted.recommend([], k=3).items.shape == (0, 3)

    def test_huge_k_is_clamped_and_large_results_are_refused(self, fitted, data, monkeypatch):
        from . import limits
        from .errors import LimitError

        recs = fitted.recommend(data.user_map.ids[:2], k=10**9)
        assert recs.items.shape == (2, data.n_items)
        monkeypatch.setattr(limits, "MAX_RESULT_ENTRIES", 2 * data.n_items - 1)
        with pytest.raises(LimitError, match="recommend: users x k = 2 x .* above the limit .*batch.score"):
            fitted.recommend(data.user_map.ids[:2], k=10**9)

    def test_save_load_round_trip(self, fitted, data, tmp_path):
        from .models.registry import load

        fitted.save(tmp_path / "bundle")
        loaded = load(tmp_path / "bundle")
        assert type(loaded) is type(fitted)
        assert loaded.get_params() == fitted.get_params()
        users = data.user_map.ids
        a, b = fitted.recommend(users, k=8), loaded.recommend(users, k=8)
        np.testing.assert_array_equal(a.items, b.items)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6, atol=1e-6)

    def test_tampered_bundle_rejected(self, fitted, tmp_path):
        from .models.registry import load

        path = fitted.save(tmp_path / "bundle")
        target = path / "item_ids.npy"
        raw = bytearray(target.read_bytes())
        raw[-1] ^= 0xFF
        target.write_bytes(bytes(raw))
        with pytest.raises(BundleError, match="sha256"):
            load(path)
