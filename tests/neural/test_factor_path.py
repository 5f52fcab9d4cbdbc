"""BPRMF and LightGCN rank through FactorModel (sgemm + Numba top-k): the same lists as the torch
scoring network's dense scores, cosine similar_items, batch and request paths agreeing."""

import numpy as np
import pytest

pytest.importorskip("torch")

from recsys_fast.datasets import synthetic  # noqa: E402
from recsys_fast.kernels.topk import dense_topk  # noqa: E402
from recsys_fast.models.neural import BPRMF, LightGCN  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return synthetic(300, 120, 4000, seed=3)


def _fit(cls, data):
    extra = {"n_layers": 2} if cls is LightGCN else {}
    return cls(embedding_size=8, epochs=2, batch_size=512, validation_fraction=0.0, seed=0, device="cpu",
               n_threads=1, **extra).fit(data)


@pytest.mark.parametrize("cls", [BPRMF, LightGCN])
def test_recommend_matches_the_scoring_networks_top_k(cls, data):
    import torch

    model = _fit(cls, data)
    users = np.arange(data.n_users)
    with torch.no_grad():
        dense = model.scoring_module()(torch.as_tensor(users)).numpy().astype(np.float32)
    seen = data.matrix
    ref_i, ref_s = dense_topk(dense, 15, seen.indptr.astype(np.int64), seen.indices.astype(np.int32),
                              np.zeros(0, np.bool_))
    got_i, got_s = model.recommend_indices(users, 15, exclude="seen")
    np.testing.assert_allclose(got_s, ref_s, rtol=1e-5, atol=1e-6)
    same = got_i == ref_i
    assert same.mean() > 0.99  # the rest are float ties resolved differently by two GEMMs
    assert np.allclose(got_s[~same], ref_s[~same], rtol=1e-5, atol=1e-6)
    one = model.recommend(data.user_map.ids[:3], k=15)  # the request path (serial kernel)
    np.testing.assert_array_equal(one.items, data.item_map.ids[got_i[:3]])


def test_similar_items_is_the_cosine_of_item_vectors(data):
    model = _fit(BPRMF, data)
    _, items, _ = model.factors()
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    cos = unit @ unit.T
    np.fill_diagonal(cos, -np.inf)
    query = data.item_map.ids[[0, 7, 50]]
    res = model.similar_items(query, k=5)
    ref = np.argsort(-cos[[0, 7, 50]], axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(res.ids, data.item_map.ids[ref])
    np.testing.assert_allclose(res.scores, np.take_along_axis(cos[[0, 7, 50]], ref, 1), rtol=1e-5)
    assert model.factors()[0] is model.factors()[0]  # converted once, not per call
