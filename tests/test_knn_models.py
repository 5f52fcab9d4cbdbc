"""ItemKNN and UserKNN: the contract suite, exact agreement with the kernels' reference, fold-in,
rating prediction, explanations, persistence and parameter validation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_fast.data.interactions import Interactions
from recsys_fast.errors import ParameterError, UnknownIdError
from recsys_fast.models import registry
from recsys_fast.models.knn import ItemKNN, UserKNN
from recsys_fast.testing import RecommenderContract
from tests.concurrency import run_in_threads
from tests.reference import csr_rows, knn_topk_reference



class TestItemKNNContract(RecommenderContract):
    def make_model(self):
        return ItemKNN(k=10)


class TestItemKNNBM25Contract(RecommenderContract):
    def make_model(self):
        return ItemKNN(k=5, weighting="bm25", k1=1.2, b=0.75, fill="popularity")


class TestUserKNNContract(RecommenderContract):
    def make_model(self):
        return UserKNN(k=8, weighting="tfidf")


def random_interactions(seed=0, n_users=60, n_items=45, density=0.12, ratings=False) -> Interactions:
    rng = np.random.default_rng(seed)
    m = sp.random(n_users, n_items, density=density, format="coo", random_state=rng)
    values = rng.integers(1, 6, size=m.nnz).astype(np.float32) if ratings else np.ones(m.nnz, np.float32)
    users = np.array([f"u{r}" for r in m.row])
    return Interactions.from_arrays(users, m.col + 1000, values)


@pytest.fixture(scope="module")
def data():
    return random_interactions()


def _excluded(matrix, rows):
    return [set(matrix.indices[matrix.indptr[r]:matrix.indptr[r + 1]].tolist()) for r in rows]


@pytest.mark.parametrize("fill", ["popularity", None])
def test_item_knn_equals_reference_scoring(data, fill):
    model = ItemKNN(k=6, fill=fill).fit(data)
    g = model.graph_
    k = 12
    recs = model.recommend(data.user_map.ids, k=k)
    fill_order = np.argsort(-np.bincount(data.matrix.indices, minlength=data.n_items), kind="stable")
    ref_i, ref_s = knn_topk_reference(csr_rows(data.matrix), csr_rows(g), data.n_items, k,
                                      _excluded(data.matrix, range(data.n_users)), None,
                                      fill_order if fill else None)
    np.testing.assert_array_equal(recs.items, data.item_map.to_external(ref_i))
    np.testing.assert_allclose(recs.scores, ref_s, rtol=1e-5)


def test_user_knn_equals_reference_scoring(data):
    model = UserKNN(k=7).fit(data)
    k = 9
    recs = model.recommend(data.user_map.ids, k=k)
    fill_order = np.argsort(-np.bincount(data.matrix.indices, minlength=data.n_items), kind="stable")
    ref_i, ref_s = knn_topk_reference(csr_rows(model.graph_), csr_rows(data.matrix), data.n_items, k,
                                      _excluded(data.matrix, range(data.n_users)), None, fill_order)
    np.testing.assert_array_equal(recs.items, data.item_map.to_external(ref_i))
    np.testing.assert_allclose(recs.scores, ref_s, rtol=1e-5)


@pytest.mark.parametrize("model", [ItemKNN(k=3), UserKNN(k=3), ItemKNN(k=3, fill=None)], ids=repr)
@pytest.mark.parametrize("k", [1, 5, 50])
def test_exactly_min_k_unseen_never_seen(data, model, k):
    model.fit(data)
    allowed = data.item_map.ids[::2]
    for items in (None, allowed):
        recs = model.recommend(data.user_map.ids, k=k, items=items)
        cand = set((data.item_map.ids if items is None else allowed).tolist())
        for r, seen in enumerate(_excluded(data.matrix, range(data.n_users))):
            seen_ids = set(data.item_map.ids[list(seen)].tolist())
            valid = recs.items[r][recs.scores[r] > -np.inf].tolist()
            assert not set(valid) & seen_ids
            assert set(valid) <= cand and len(set(valid)) == len(valid)
            if model.fill is not None:
                assert len(valid) == min(k, len(cand - seen_ids))


def test_fold_in_equals_fitted_user(data):
    model = ItemKNN(k=10).fit(data)
    users = data.user_map.ids[:5]
    history = {f"new-{u}": data.item_map.ids[list(s)].tolist()
               for u, s in zip(users, _excluded(data.matrix, range(5)))}
    fitted = model.recommend(users, k=15)
    folded = model.recommend(list(history), k=15, history=history)
    np.testing.assert_array_equal(fitted.items, folded.items)
    np.testing.assert_array_equal(fitted.scores, folded.scores)


def test_user_knn_unknown_users_documented_behaviour(data):
    model = UserKNN(k=5).fit(data)
    with pytest.raises(UnknownIdError, match="'stranger'.*pass history"):
        model.recommend(["stranger"], k=3)
    padded = model.recommend(["stranger"], k=3, on_unknown="pad")
    assert np.all(padded.items == -1) and np.all(padded.scores == -np.inf)
    with pytest.raises(UnknownIdError, match="stranger"):
        model.predict(["stranger"], [1000])


def test_similar_items_and_users_are_graph_rows(data):
    item_model = ItemKNN(k=4).fit(data)
    query = data.item_map.ids[[0, 3, 7]]
    nb = item_model.similar_items(query, k=6)
    assert nb.ids.shape == (3, 6)
    for r, q in enumerate(data.item_map.to_index(query)):
        g = item_model.graph_
        lo, hi = g.indptr[q], g.indptr[q + 1]
        n = hi - lo
        np.testing.assert_array_equal(nb.ids[r, :n], data.item_map.to_external(g.indices[lo:hi]))
        np.testing.assert_array_equal(nb.scores[r, :n], g.data[lo:hi])
        assert np.all(nb.ids[r, n:] == -1) and np.all(nb.scores[r, n:] == -np.inf)
        assert q not in g.indices[lo:hi], "an item is not its own neighbour"
    assert len(nb.to_pandas()) == int((nb.scores > -np.inf).sum())
    users = data.user_map.ids[:3]
    nu = UserKNN(k=4).fit(data).similar_users(users, k=2)
    assert nu.ids.shape == (3, 2) and nu.ids.dtype.kind == "U"
    with pytest.raises(UnknownIdError):
        item_model.similar_items([-5], k=2)


def test_explain_sums_to_score():
    data = random_interactions(3, ratings=True)
    model = ItemKNN(k=8).fit(data)
    users = data.user_map.ids[:10]
    recs = model.recommend(users, k=5)
    checked = 0
    for r, u in enumerate(users):
        for item, score in zip(recs.items[r], recs.scores[r]):
            frame = model.explain(u, item)
            if score <= 0:  # a filled item: no neighbour contributed
                assert frame.empty
                continue
            assert not frame.empty and np.all(np.diff(frame["contribution"]) <= 0)
            np.testing.assert_allclose(frame["contribution"].sum(), score, rtol=1e-5)
            seen = set(data.item_map.ids[list(_excluded(data.matrix, [data.user_map.to_index([u])[0]])[0])])
            assert set(frame["id"]) <= seen and set(frame["via"]) == {"item"}
            checked += 1
    assert checked > 10


def _dense_predict_reference(model, data, users, items, item_based):
    """Straight from the module docstring's formulas, with dicts."""
    g = model.graph_
    seen = data.matrix
    r = {(u, i): v for u in range(seen.shape[0])
         for i, v in zip(seen.indices[seen.indptr[u]:seen.indptr[u + 1]], seen.data[seen.indptr[u]:seen.indptr[u + 1]])}
    umean = {u: np.mean([v for (uu, _), v in r.items() if uu == u]) for u in range(seen.shape[0])}
    imean = {i: np.mean([v for (_, ii), v in r.items() if ii == i]) for i in set(i for _, i in r)}
    gmean = np.mean(list(r.values()))
    out = []
    for u, j in zip(users, items):
        target = j if item_based else u
        num = den = 0.0
        lo, hi = g.indptr[target], g.indptr[target + 1]
        for n, s in zip(g.indices[lo:hi], g.data[lo:hi]):
            key = (u, n) if item_based else (n, j)
            if key in r:
                mean_n = imean[n] if item_based else umean[n]
                num += s * (r[key] - mean_n)
                den += abs(s)
        base = (imean.get(j) if item_based else umean.get(u))
        alt = (umean.get(u) if item_based else imean.get(j))
        if den > 0:
            p = base + num / den
        else:
            p = base if base is not None else (alt if alt is not None else gmean)
        out.append(np.clip(p, min(r.values()), max(r.values())))
    return np.array(out)


@pytest.mark.parametrize("cls", [ItemKNN, UserKNN])
def test_predict_matches_formula(cls):
    data = random_interactions(4, n_users=30, n_items=25, density=0.3, ratings=True)
    model = cls(k=6, similarity="adjusted_cosine" if cls is ItemKNN else "pearson").fit(data)
    rng = np.random.default_rng(0)
    uu = rng.integers(0, data.n_users, 200)
    ii = rng.integers(0, data.n_items, 200)
    got = model.predict(data.user_map.ids[uu], data.item_map.ids[ii])
    ref = _dense_predict_reference(model, data, uu, ii, cls is ItemKNN)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def ml100k_split(ml_100k_path):
    from recsys_fast.datasets import load_movielens
    from recsys_fast.split import holdout

    data, _ = load_movielens(ml_100k_path)
    return holdout(data, test_fraction=0.2, seed=42)


@pytest.mark.parametrize("cls, similarity", [(ItemKNN, "adjusted_cosine"), (UserKNN, "pearson"),
                                             (ItemKNN, "cosine")])
def test_predict_beats_global_mean_on_ml100k(ml100k_split, cls, similarity):
    from recsys_fast.evaluation import evaluate

    train, test = ml100k_split
    model = cls(k=50, similarity=similarity).fit(train)
    result = evaluate(model, train, test, k=10, metrics=["rmse", "mae", "ndcg"])
    baseline = float(np.sqrt(np.mean((train.ratings.mean() - test.ratings) ** 2)))
    assert result.means["rmse"] < 0.9 * baseline, (result.means, baseline)
    assert result.means["ndcg@10"] > 0.05  # far above random ranking (~0.01) on this split


def test_save_load_keeps_predict_and_graph(tmp_path):
    data = random_interactions(5, ratings=True)
    for model in (ItemKNN(k=5, similarity="pearson", shrink=2.0), UserKNN(k=4, weighting="bm25", fill=None)):
        model.fit(data)
        loaded = registry.load(model.save(tmp_path / model.kind))
        assert loaded.get_params() == model.get_params()
        users, items = data.user_map.ids[:20], data.item_map.ids[:20]
        np.testing.assert_array_equal(loaded.predict(users, items), model.predict(users, items))
        for name in ("indptr", "indices", "data"):
            np.testing.assert_array_equal(getattr(loaded.graph_, name), getattr(model.graph_, name))
        a, b = model.recommend(data.user_map.ids, k=7), loaded.recommend(data.user_map.ids, k=7)
        np.testing.assert_array_equal(a.items, b.items)
        np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k must be an integer >= 1, got 0"),
    ({"k": 2.5}, "k must be an integer >= 1, got 2.5"),
    ({"similarity": "euclid"}, "similarity must be one of 'cosine', 'jaccard', 'asymmetric_cosine', .*'dot', "
                               "got 'euclid'"),
    ({"shrink": -1}, "shrink must be a finite number >= 0.0, got -1"),
    ({"shrink": float("inf")}, "shrink must be a finite number >= 0.0, got inf"),
    ({"min_support": 0}, "min_support must be an integer >= 1"),
    ({"weighting": "idf"}, "weighting must be one of None, 'tfidf', 'bm25', got 'idf'"),
    ({"alpha": 1.5}, r"alpha must be a finite number >= 0.0 and <= 1.0, got 1.5"),
    ({"fill": "random"}, "fill must be one of 'popularity', None, got 'random'"),
    ({"k1": -1.0}, "k1 must be a finite number >= 0.0, got -1.0"),
    ({"b": 2.0}, r"b must be a finite number >= 0.0 and <= 1.0, got 2.0"),
    ({"n_threads": 0}, "n_threads must be an integer >= 1 or None, got 0"),
])
@pytest.mark.parametrize("cls", [ItemKNN, UserKNN])
def test_bad_parameters(cls, kwargs, match):
    with pytest.raises(ParameterError, match=match):
        cls(**kwargs)
    with pytest.raises(ParameterError, match=match):  # set_params validates the same way
        cls().set_params(**kwargs)


@pytest.mark.parametrize("old, new", [("K1", "k1"), ("B", "b")])
@pytest.mark.parametrize("cls", [ItemKNN, UserKNN])
def test_old_parameter_names_name_the_new_ones(cls, old, new):
    with pytest.raises(TypeError, match=f"'{old}' was renamed to '{new}'"):
        cls(**{old: 1.0})
    with pytest.raises(TypeError, match=f"'{old}' was renamed to '{new}'"):
        cls().set_params(**{old: 1.0})


@pytest.mark.parametrize("weighting", [None, "bm25"])
def test_dot_similarity_is_the_plain_dot_product(weighting):
    data = random_interactions(6, ratings=True)
    model = ItemKNN(k=5, similarity="dot", weighting=weighting).fit(data)
    x = data.matrix.T.tocsr()
    if weighting == "bm25":
        from recsys_fast.kernels.weighting import bm25_weight

        x.data = bm25_weight(x.indptr, x.indices, x.data, *x.shape, k1=100.0, b=0.8)
    dense = (x @ x.T).toarray().astype(np.float64)
    co = ((x != 0).astype(np.float64) @ (x != 0).T.astype(np.float64)).toarray()
    g = model.graph_
    for i in range(x.shape[0]):
        cands = [j for j in range(x.shape[0]) if j != i and co[i, j] > 0 and dense[i, j] > 0]
        cands.sort(key=lambda j: (-dense[i, j], j))
        lo, hi = g.indptr[i], g.indptr[i + 1]
        np.testing.assert_allclose(g.data[lo:hi], dense[i, cands[:5]], rtol=1e-5)
        assert set(g.indices[lo:hi]) == set(cands[:5]) or np.allclose(
            np.sort(dense[i, g.indices[lo:hi]]), np.sort(dense[i, cands[:5]]), rtol=1e-5)


@pytest.mark.parametrize("cls", [ItemKNN, UserKNN])
def test_prepare_then_serial_and_parallel_paths_agree(data, cls):
    model = cls(k=6).fit(data).prepare()
    batch, _ = model._build_rows(data.user_map.ids, True, None, None, "raise")
    serial = model._recommend_rows_with(batch, 8, False)
    parallel = model._recommend_rows_with(batch, 8, True)
    np.testing.assert_array_equal(serial[0], parallel[0])
    np.testing.assert_array_equal(serial[1], parallel[1])


def test_explain_from_history_matches_fold_in(data):
    model = ItemKNN(k=8).fit(data)
    history = data.item_map.ids[[1, 4, 9, 16]].tolist()
    recs = model.recommend(["new"], k=5, history={"new": history})
    for item, score in zip(recs.items[0], recs.scores[0]):
        frame = model.explain(None, item, history=history)
        if score > 0:
            np.testing.assert_allclose(frame["contribution"].sum(), score, rtol=1e-5)
            assert set(frame["id"]) <= set(history)
        else:
            assert frame.empty


@pytest.mark.parametrize("similarity, weighting, shrink, min_support", [
    ("cosine", None, 0.0, 1), ("jaccard", None, 0.0, 1), ("asymmetric_cosine", None, 0.0, 1),
    ("pearson", None, 0.0, 1), ("adjusted_cosine", None, 0.0, 1), ("dot", None, 0.0, 1),
    ("cosine", "tfidf", 0.0, 1), ("cosine", "bm25", 3.0, 1), ("jaccard", None, 2.0, 2), ("dot", "bm25", 0.0, 2),
])
def test_user_knn_fold_in_reproduces_the_fitted_neighbours(similarity, weighting, shrink, min_support):
    """Folding in a training user's own history finds that user (an identical row) plus exactly the
    neighbours and similarities the fitted graph holds for it."""
    data = random_interactions(7, n_users=50, n_items=40, density=0.15)
    k = 6
    model = UserKNN(k=k, similarity=similarity, weighting=weighting, shrink=shrink, min_support=min_support,
                    alpha=0.3).fit(data)
    g, seen = model.graph_, data.matrix
    rows = np.arange(data.n_users)
    f_indptr, f_indices, f_data = model.fold_in(seen.indptr, seen.indices, seen.data, k + 1)
    for u in rows:
        fi, fs = f_indices[f_indptr[u]:f_indptr[u + 1]], f_data[f_indptr[u]:f_indptr[u + 1]]
        gi, gs = g.indices[g.indptr[u]:g.indptr[u + 1]], g.data[g.indptr[u]:g.indptr[u + 1]]
        others = fi != u
        fs_o, fi_o = fs[others][:k], fi[others][:k]
        np.testing.assert_allclose(fs_o[:len(gs)], gs, rtol=2e-5, atol=1e-6)
        assert len(fs_o) >= len(gs)
        # same neighbours, up to equal-score ties at the cut
        if len(gs) and len(fs_o) == len(gs):
            inner = gs > gs[-1] * (1 + 1e-5)
            assert set(gi[inner]) == set(fi_o[inner])


def test_user_knn_fold_in_recommends_like_a_training_user():
    data = random_interactions(8, n_users=50, n_items=40, density=0.15)
    model = UserKNN(k=5).fit(data)
    history = {"visitor": data.item_map.ids[sorted(_excluded(data.matrix, [3])[0])].tolist()}
    recs = model.recommend(["visitor"], k=8, history=history)
    valid = recs.items[0][recs.scores[0] > -np.inf]
    assert len(valid) == 8 and not set(valid) & set(history["visitor"])
    assert np.all(np.diff(recs.scores[0]) <= 0)
    # its neighbourhood candidates come first and are scored from its fold-in neighbours
    f = model.fold_in(*[np.asarray(x) for x in (
        [0, len(history["visitor"])], data.item_map.to_index(history["visitor"]).astype(np.int32),
        np.ones(len(history["visitor"]), np.float32))], 5)
    nb = sp.csr_matrix((f[2], f[1], f[0]), shape=(1, data.n_users))
    dense = (nb @ data.matrix).toarray()[0]
    dense[data.item_map.to_index(history["visitor"])] = 0
    top = data.item_map.ids[np.lexsort((np.arange(data.n_items), -dense))[:3]]
    np.testing.assert_array_equal(recs.items[0][:3], top)


@pytest.mark.parametrize("cls", [ItemKNN, UserKNN])
def test_concurrent_recommend_from_eight_threads(data, cls):
    model = cls(k=6).fit(data).prepare()
    users = data.user_map.ids
    want_batch = model.recommend(users, k=7)
    want_one = [model.recommend([u], k=7) for u in users[:8]]
    got = {}

    def work(t):
        for _ in range(5):
            got[t] = (model.recommend(users, k=7), model.recommend([users[t]], k=7))

    run_in_threads(work, 8)
    for t, (batch, one) in got.items():
        np.testing.assert_array_equal(batch.items, want_batch.items)
        np.testing.assert_array_equal(one.items, want_one[t].items)


@pytest.mark.parametrize("use_history", [False, True])
def test_user_knn_explain_sums_to_score(use_history):
    data = random_interactions(4, ratings=True)
    model = UserKNN(k=6).fit(data)
    users = data.user_map.ids[:8]
    checked = 0
    for u in users:
        row = data.user_map.to_index([u])[0]
        items = data.item_map.ids[data.matrix.indices[data.matrix.indptr[row]:data.matrix.indptr[row + 1]]]
        history = items.tolist() if use_history else None
        recs = model.recommend(["x"], k=5, history={"x": history}) if use_history else model.recommend([u], k=5)
        for item, score in zip(recs.items[0], recs.scores[0]):
            frame = model.explain(u, item, history=history)
            assert list(frame.columns) == ["component", "via", "id", "weight", "similarity", "contribution"]
            if score <= 0:
                assert frame.empty
                continue
            assert set(frame["via"]) == {"user"} and set(frame["component"]) == {"user_knn"}
            np.testing.assert_allclose(frame["contribution"].sum(), score, rtol=1e-5)
            checked += 1
    assert checked > 10
