"""The contract every recommender honours, as a reusable pytest suite.

Subclass ``RecommenderContract`` in a test module and implement ``make_model``::

    class TestPopularityContract(RecommenderContract):
        def make_model(self):
            return Popularity()

The suite fits the model on planted taste groups (``contract_data``: string user ids, integer
item ids, three groups) and checks single and batch recommend, exclusions, the ``items=``
restriction, unknown users, ``k`` larger than the catalogue, new users from ``history=`` (and an
empty history) where supported, ``similar_items``/``similar_users`` where the model has them,
string item ids, and that a save/load round trip gives identical recommendations. Its known
answer (``test_planted_groups``): most of a user's top-3 come from the user's own group, which a
recommender that ignores its training data does not achieve (``tests/test_testing.py`` shows
random and constant scores failing). Requires pytest.
"""

from __future__ import annotations

import numpy as np
import pytest

from .data.interactions import Interactions
from .errors import BundleError, NotFittedError, ParameterError, UnknownIdError


def contract_data(n_users: int = 40, n_items: int = 30, seed: int = 7, n_groups: int = 2,
                  string_items: bool = False) -> Interactions:
    """Planted taste groups: user ``u`` belongs to group ``u % n_groups`` and interacts with 3-8 of
    its group's ``n_items // n_groups`` items (group ``g`` owns items ``100 + g * size`` to
    ``100 + (g + 1) * size - 1``) plus at most one item anywhere (noise). String user ids
    (``"u000"``), integer item ids (``"i100"`` strings with ``string_items=True``)."""
    rng = np.random.default_rng(seed)
    size = n_items // n_groups
    users, items, times = [], [], []
    for u in range(n_users):
        picks = rng.choice(size, size=rng.integers(3, 9), replace=False) + (u % n_groups) * size
        noise = rng.choice(n_items, size=rng.integers(0, 2), replace=False)
        chosen = np.unique(np.concatenate([picks, noise]))
        users += [f"u{u:03d}"] * len(chosen)
        items += list(chosen + 100)
        times += list(rng.permutation(len(chosen)) + 1000 * u)
    item_ids = np.array([f"i{i}" for i in items]) if string_items else np.array(items)
    return Interactions.from_arrays(np.array(users), item_ids, np.ones(len(users), np.float32), np.array(times))


def planted_group(ids, n_items: int = 30, n_groups: int = 2) -> np.ndarray:
    """The planted group of each of ``contract_data``'s user ids (``"u007"``) or item ids
    (``107`` or ``"i107"``); -1 for an item outside every group."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "US":
        if len(ids) and str(ids.flat[0]).startswith("u"):
            return np.array([int(str(u)[1:]) % n_groups for u in ids.ravel()]).reshape(ids.shape)
        ids = np.array([int(str(i)[1:]) if str(i) else -1 for i in ids.ravel()]).reshape(ids.shape)
    size = n_items // n_groups
    group = (ids.astype(np.int64) - 100) // size
    return np.where((ids >= 100) & (group < n_groups), group, -1)


def contract_features(data: Interactions, n_groups: int = 2):
    """Item features for ``contract_data``'s items: the planted group as a category (``half``:
    "first" / "second" when there are two groups, else "g0", "g1", ...), plus labels."""
    import pandas as pd

    from .data.features import ItemFeatures

    ids = data.item_map.ids
    numbers = np.array([int(str(i).lstrip("i")) for i in ids])
    group = planted_group(numbers, numbers.max() - 99, n_groups)
    names = np.array(["first", "second"] if n_groups == 2 else [f"g{g}" for g in range(n_groups)])
    frame = pd.DataFrame({"item": ids, "half": np.where(group >= 0, names[np.maximum(group, 0)], "none"),
                          "labels": [f"l{i % 3}|l{3 + i % 5}" for i in numbers]})
    return ItemFeatures.from_pandas(frame, categorical=["half"], multi_label={"labels": "|"})


def planted_group_share(model, data: Interactions, k: int = 3, n_items: int = 30, n_groups: int = 3) -> np.ndarray:
    """Per user of ``data``: the share of the top-``k`` recommendations (seen items excluded)
    that come from the user's planted group, out of the most it could be (``min(k, unseen items
    of its group)``). A model that learnt the groups scores close to 1 for every user; one that
    ignores the data scores about ``1 / n_groups``."""
    users = data.user_map.ids
    recs = model.recommend(users, k=k)
    own = planted_group(users, n_items, n_groups)
    item_group = planted_group(data.item_map.ids, n_items, n_groups)
    m = data.matrix
    share = np.empty(len(users))
    for r in range(len(users)):
        seen = m.indices[m.indptr[r]:m.indptr[r + 1]]
        unseen_own = int(np.sum(item_group == own[r])) - int(np.sum(item_group[seen] == own[r]))
        hits = np.sum((planted_group(recs.items[r], n_items, n_groups) == own[r]) & (recs.scores[r] > -np.inf))
        share[r] = hits / max(1, min(k, unseen_own))
    return share


class RecommenderContract:
    """Mixin of contract tests; subclasses implement ``make_model()`` returning an unfitted model.

    The data (``contract_data(n_users=48, n_items=30, n_groups=3)``) plants three taste groups;
    ``test_planted_groups`` needs the mean ``planted_group_share`` at ``k=3`` to be at least
    ``PLANTED_GROUP_MIN`` (0.75), so a model that ignores its training data fails the contract.
    A model that is not personalised by design (Popularity) sets ``planted_groups_exempt`` to
    the reason, and the test is skipped with that reason.
    """

    N_USERS, N_ITEMS, N_GROUPS = 48, 30, 3
    PLANTED_GROUP_MIN = 0.75
    planted_groups_exempt: str | None = None

    def make_model(self):  # pragma: no cover - supplied by subclasses
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def data(cls):
        return contract_data(n_users=cls.N_USERS, n_items=cls.N_ITEMS, n_groups=cls.N_GROUPS)

    def features(self, data: Interactions):
        """Item features of the contract data (for content models' ``fit_model``)."""
        return contract_features(data, self.N_GROUPS)

    def fit_model(self, model, data):
        """Fit ``model`` on ``data``; override to pass more (``model.fit(data, features=...)``)."""
        return model.fit(data)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, data):
        suite = cls()
        return suite.fit_model(suite.make_model(), data)

    @pytest.fixture(scope="class")
    @classmethod
    def string_data(cls):
        return contract_data(n_users=cls.N_USERS, n_items=cls.N_ITEMS, n_groups=cls.N_GROUPS, string_items=True)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted_strings(cls, string_data):
        suite = cls()
        return suite.fit_model(suite.make_model(), string_data)

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

    # -------------------------------------------------------------- known answer
    def test_planted_groups(self, fitted, data):
        if self.planted_groups_exempt:
            pytest.skip(self.planted_groups_exempt)
        share = planted_group_share(fitted, data, k=3, n_items=self.N_ITEMS, n_groups=self.N_GROUPS)
        assert share.mean() >= self.PLANTED_GROUP_MIN, (
            f"{type(fitted).__name__}: on average {share.mean():.2f} of a user's top-3 come from its own "
            f"taste group, expected >= {self.PLANTED_GROUP_MIN} (a model that ignores the data gets about "
            f"{1 / self.N_GROUPS:.2f})")

    def test_similar_items(self, fitted, data):
        self._check_similar(fitted, "similar_items", data.item_map.ids)

    def test_similar_users(self, fitted, data):
        self._check_similar(fitted, "similar_users", data.user_map.ids)

    def _check_similar(self, fitted, method: str, ids):
        if not hasattr(fitted, method):
            pytest.skip(f"{type(fitted).__name__} has no {method}")
        near = getattr(fitted, method)(ids, k=4)
        assert near.ids.shape == near.scores.shape == (len(ids), 4)
        assert near.query.tolist() == ids.tolist()
        groups = planted_group(ids, self.N_ITEMS, self.N_GROUPS)
        same = []
        for r, q in enumerate(ids.tolist()):
            valid = self._valid(near.ids[r], near.scores[r])
            assert q not in valid, f"{method}: {q!r} is listed as its own neighbour"
            assert len(set(valid)) == len(valid) and set(valid) <= set(ids.tolist())
            assert np.all(np.diff(near.scores[r]) <= 0), "scores must be non-increasing"
            assert np.all(near.ids[r][len(valid):] == (-1 if ids.dtype.kind in "iu" else "")), "padding at the end"
            if valid and groups[r] >= 0:
                same.append(np.mean(planted_group(np.array(valid), self.N_ITEMS, self.N_GROUPS) == groups[r]))
        assert np.mean(same) >= self.PLANTED_GROUP_MIN, (
            f"{method}: on average {np.mean(same):.2f} of the neighbours share the planted group")
        with pytest.raises(UnknownIdError):
            getattr(fitted, method)(np.array([ids[0], "no-such-id" if ids.dtype.kind in "US" else 999_999]), k=2)

    def test_empty_history(self, fitted, data):
        if not fitted.supports_history:
            pytest.skip(f"{type(fitted).__name__} does not score users from a history")
        known = data.user_map.ids[0]
        recs = fitted.recommend(["brand-new", known], k=5, history={"brand-new": [], known: []})
        assert recs.items.shape == (2, 5)
        for r in range(2):
            valid = self._valid(recs.items[r], recs.scores[r])
            assert len(set(valid)) == len(valid) and set(valid) <= set(data.item_map.ids.tolist())
            assert np.all(recs.items[r][len(valid):] == -1), "padding is item -1 at the end"
        # a known user's training items stay excluded, whatever history is given
        assert not set(self._valid(recs.items[1], recs.scores[1])) & self._seen(data, known)

    def test_string_ids(self, fitted_strings, string_data):
        model, data = fitted_strings, string_data
        users = data.user_map.ids[:4]
        recs = model.recommend(users, k=data.n_items)
        assert recs.items.dtype.kind in "UO" and recs.users.tolist() == users.tolist()
        for r, u in enumerate(users):
            valid = self._valid(recs.items[r], recs.scores[r])
            assert set(valid) <= set(data.item_map.ids.tolist()) and not set(valid) & self._seen(data, u)
            assert all(i == "" for i in recs.items[r][len(valid):].tolist()), "string padding is ''"
        restricted = model.recommend(users[:1], k=2, items=data.item_map.ids[:3])
        assert set(self._valid(restricted.items[0], restricted.scores[0])) <= set(data.item_map.ids[:3].tolist())
        with pytest.raises(UnknownIdError, match="i999"):
            model.recommend(users[:1], k=2, items=["i999"])
        if model.supports_history:
            new = model.recommend(["brand-new"], k=3, history={"brand-new": list(data.item_map.ids[:2])})
            assert not set(self._valid(new.items[0], new.scores[0])) & set(data.item_map.ids[:2].tolist())
