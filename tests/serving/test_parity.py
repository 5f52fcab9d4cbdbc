"""Every neural model exports, and its ONNX runtime answers what the trained model answers
(same items, ties aside; scores within 1e-5 relative) on ml-latest-small."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_fast import serving

from .conftest import NEURAL_KINDS, assert_same_topk

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", NEURAL_KINDS)
def test_runtime_matches_trained_model(exported, name):
    model, path = exported(name)
    runtime = serving.load(path, n_threads=1).prepare()
    users = model.user_map_.ids[::7][:64]
    assert_same_topk(model.recommend(users, k=10), runtime.recommend(users, k=10))
    assert_same_topk(model.recommend(users[:5], k=20, exclude_seen=False),
                     runtime.recommend(users[:5], k=20, exclude_seen=False))
    # the index-level protocol is the same too
    idx = np.arange(0, model.n_users, 11)
    mi, ms = model.recommend_indices(idx, 10, exclude="seen")
    ri, rs = runtime.recommend_indices(idx, 10, exclude="seen")
    np.testing.assert_allclose(rs, ms, rtol=1e-5, atol=1e-6)
    assert runtime.n_users == model.n_users and runtime.n_items == model.n_items
    assert np.array_equal(runtime.item_map_.ids, model.item_map_.ids)
    meta = runtime.metadata
    assert meta["model_kind"] == model.kind and meta["opset"] >= 18 and meta["versions"]["torch"]


@pytest.mark.parametrize("name", [n for n in NEURAL_KINDS if n not in ("BPRMF", "NeuMF", "LightGCN")])
def test_history_fold_in_matches(exported, name):
    model, path = exported(name)
    runtime = serving.load(path, n_threads=1)
    items = model.item_map_.ids
    new_a, new_b = 10**9 + 1, 10**9 + 2  # ids unseen in training (the data's ids are integers)
    history = {new_a: list(items[[5, 3, 9, 3]]), new_b: list(items[[1]]), model.user_map_.ids[0]: list(items[[2, 4]])}
    users = [new_a, model.user_map_.ids[1], new_b, model.user_map_.ids[0]]
    assert_same_topk(model.recommend(users, k=10, history=history), runtime.recommend(users, k=10, history=history))


def test_candidates_unknown_users_and_large_k(exported):
    model, path = exported("BPRMF")
    runtime = serving.load(path)
    users = list(model.user_map_.ids[:3])
    allowed = model.item_map_.ids[10:30]
    got = runtime.recommend(users, k=5, items=allowed)
    assert_same_topk(model.recommend(users, k=5, items=allowed), got)
    assert np.isin(got.items, allowed).all()
    # k above the catalogue: rows padded with -1 / -inf after the unseen items
    big = runtime.recommend(users[:1], k=model.n_items + 5)
    n_seen = model.seen_[0].nnz
    assert (big.scores[0, : model.n_items - n_seen] > -np.inf).all()
    assert (big.scores[0, model.n_items - n_seen:] == -np.inf).all()
    nobody = 10**9 + 7
    padded = runtime.recommend([nobody, users[0]], k=3, on_unknown="pad")
    assert (padded.scores[0] == -np.inf).all() and (padded.scores[1] > -np.inf).all()
    from recsys_fast.errors import UnknownIdError

    with pytest.raises(UnknownIdError, match=str(nobody)):
        runtime.recommend([nobody], k=3)
    with pytest.raises(ValueError, match="cannot score users from a given history"):
        runtime.recommend([nobody], k=3, history={nobody: [allowed[0]]})
    with pytest.raises(TypeError, match="no item-item scores"):
        runtime.similar_items([allowed[0]])


@pytest.mark.parametrize("name", NEURAL_KINDS)
def test_one_user_requests_answer_as_the_general_path(exported, name):
    """``recommend([user])`` takes the runtime's one-user path; it answers what the trained model
    and the runtime's general path (``Recommender.recommend``) answer, padding included."""
    from recsys_fast.models.base import Recommender

    model, path = exported(name)
    runtime = serving.load(path, n_threads=1)
    for user in model.user_map_.ids[::37][:12]:
        got = runtime.recommend([user], k=10)
        general = Recommender.recommend(runtime, [user], k=10)
        assert got.items.dtype == general.items.dtype and got.scores.dtype == general.scores.dtype
        assert np.array_equal(got.users, general.users)
        np.testing.assert_array_equal(got.items, general.items)
        np.testing.assert_array_equal(got.scores, general.scores)
        assert_same_topk(model.recommend([user], k=10), got)
    user = model.user_map_.ids[0]
    whole = runtime.recommend(np.array([user]), k=model.n_items + 5)  # clamped, seen items padded
    np.testing.assert_array_equal(whole.items, Recommender.recommend(runtime, [user], k=model.n_items + 5).items)
    assert whole.items.shape == (1, model.n_items) and (whole.items[0, -model.seen_[0].nnz:] == -1).all()
