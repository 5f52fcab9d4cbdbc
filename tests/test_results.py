"""One vocabulary for result types: Recommendations and Neighbours share fields and columns."""

from __future__ import annotations

import numpy as np
import pytest

import recsys_fast as rf
from recsys_fast.testing import contract_data


@pytest.fixture(scope="module")
def model():
    return rf.ItemKNN(k=5).fit(contract_data())


def test_both_result_types_are_exported_with_the_same_fields(model):
    recs = model.recommend(["u000", "u001"], k=3)
    near = model.similar_items([100, 101], k=3)
    assert isinstance(recs, rf.Recommendations) and isinstance(near, rf.Neighbours)
    for res, query in ((recs, ["u000", "u001"]), (near, [100, 101])):
        assert res.query.tolist() == query
        assert res.ids.shape == res.scores.shape == (2, 3)
        assert list(res.to_pandas().columns) == ["query", "rank", "id", "score"]
    # recommend's result also answers to users / items (the same arrays)
    assert recs.users is recs.query and recs.items is recs.ids


def test_results_are_read_only(model):
    recs = model.recommend(["u000"], k=2)
    with pytest.raises(AttributeError, match="read-only"):
        recs.ids = np.zeros((1, 2))


def test_old_constructor_names_name_the_new_ones():
    with pytest.raises(TypeError, match="'users' was renamed to 'query'"):
        rf.Recommendations(users=np.array([1]), ids=np.zeros((1, 1)), scores=np.zeros((1, 1)))
    with pytest.raises(TypeError, match="'items' was renamed to 'ids'"):
        rf.Recommendations(np.array([1]), items=np.zeros((1, 1)), scores=np.zeros((1, 1)))


def test_padding_is_left_out_of_to_pandas(model):
    recs = model.recommend(["u000"], k=model.n_items + 3)
    frame = recs.to_pandas()
    assert len(frame) == int(np.isfinite(recs.scores).sum())
    assert frame["rank"].tolist() == list(range(1, len(frame) + 1))
