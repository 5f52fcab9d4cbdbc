"""Trained models and their exports on real data (ml-latest-small), shared by the serving tests.

Models are tiny (one epoch, small embeddings): the tests check that the runtime answers what
the trained model answers, not how good the answers are.
"""

from __future__ import annotations

import numpy as np
import pytest

NEURAL_KINDS = ("BPRMF", "NeuMF", "LightGCN", "MultVAE", "EASE", "SASRec", "GRU4Rec", "Caser")
TINY = {
    "BPRMF": dict(embedding_size=16, batch_size=4096),
    "NeuMF": dict(embedding_size=8, layers=(16, 8), batch_size=4096),
    "LightGCN": dict(embedding_size=16, batch_size=8192, n_layers=2),
    "MultVAE": dict(embedding_size=16, hidden_size=32, batch_size=128),
    "SASRec": dict(embedding_size=16, max_len=20, batch_size=128, loss="sampled_ce", n_negatives=64),
    "GRU4Rec": dict(embedding_size=16, hidden_size=16, max_len=20, batch_size=128, loss="sampled_ce", n_negatives=64),
    "Caser": dict(embedding_size=16, max_len=5, batch_size=4096, loss="sampled_ce", n_negatives=64),
}


@pytest.fixture(scope="session")
def ml_small(ml_latest_small_path):
    from recsys_fast.datasets import load_movielens

    data, _ = load_movielens(ml_latest_small_path)
    return data


@pytest.fixture(scope="session")
def ml_small_popular(ml_small):
    """ml-latest-small cut to its 2,000 most popular items (EASE's dense item-item matrix stays small)."""
    from recsys_fast.data.interactions import Interactions

    counts = np.bincount(ml_small.matrix.indices, minlength=ml_small.n_items)
    top = ml_small.item_map.ids[np.argsort(-counts, kind="stable")[:2000]]
    df = ml_small.to_pandas()
    return Interactions.from_pandas(df[df["item"].isin(top)], weight="weight", timestamp="timestamp")


@pytest.fixture(scope="session")
def knn(ml_small, tmp_path_factory):
    """(ItemKNN k=50 fitted on ml-latest-small, its saved bundle): the service tests' bundle; tests
    that damage a bundle damage a copy."""
    from recsys_fast.models.knn import ItemKNN

    model = ItemKNN(k=50).fit(ml_small)
    return model, model.save(tmp_path_factory.mktemp("serving") / "item_knn")


def tiny_model(name: str, data):
    pytest.importorskip("torch")
    from recsys_fast.models import neural

    if name == "EASE":
        from recsys_fast.models.ease import EASE

        return EASE(weight_decay=200.0).fit(data)
    params = dict(epochs=1, validation_fraction=0.0, n_threads=1, seed=0, device="cpu", **TINY[name])
    return getattr(neural, name)(**params).fit(data)


@pytest.fixture(scope="session")
def exported(tmp_path_factory, ml_small, ml_small_popular):
    """name -> (trained model, exported bundle path), built on first use."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    cache = {}

    def get(name):
        if name not in cache:
            from recsys_fast.export import to_onnx

            model = tiny_model(name, ml_small_popular if name == "EASE" else ml_small)
            path = to_onnx(model, tmp_path_factory.mktemp("export") / name.lower())
            cache[name] = (model, path)
        return cache[name]

    return get


def assert_same_topk(expected, got, rtol=1e-5) -> None:
    """Same scores within ``rtol`` relative and the same items, except where scores tie."""
    es, gs = np.asarray(expected.scores), np.asarray(got.scores)
    finite = np.isfinite(es)
    assert np.array_equal(finite, np.isfinite(gs)), "padding differs"
    scale = np.maximum(np.abs(es[finite]), 1e-3)
    rel = np.abs(es[finite] - gs[finite]) / scale
    assert rel.max(initial=0) <= rtol, f"scores differ by {rel.max():.3g} relative (limit {rtol})"
    differ = np.argwhere(np.asarray(expected.items) != np.asarray(got.items))
    for r, c in differ:
        row = es[r]
        tie = any(abs(row[c] - row[j]) <= rtol * max(abs(row[c]), 1e-3) for j in (c - 1, c + 1) if 0 <= j < len(row))
        assert tie, f"row {r} rank {c}: item {expected.items[r, c]} vs {got.items[r, c]} without a tie"
