import numpy as np
import pytest

from recsys_fast.data.interactions import Interactions
from recsys_fast.models.popularity import Popularity
from recsys_fast.testing import RecommenderContract


# Popularity ranks every user's unseen items by one global order: it ignores personal taste by
# design, so the planted taste-group test cannot apply (its own known answer is the count order,
# tested below). Every other contract test runs.
NOT_PERSONALISED = "Popularity is not personalised: one global ranking for every user"


class TestPopularityContract(RecommenderContract):
    planted_groups_exempt = NOT_PERSONALISED

    def make_model(self):
        return Popularity()


class TestPopularitySumContract(RecommenderContract):
    planted_groups_exempt = NOT_PERSONALISED

    def make_model(self):
        return Popularity(weighting="sum")


def test_ranks_by_user_count_and_ties_by_lower_index():
    data = Interactions.from_arrays([1, 1, 2, 2, 3, 4], [10, 20, 20, 30, 30, 40])
    recs = Popularity().fit(data).recommend([4], k=4)
    # counts: 10->1, 20->2, 30->2, 40->1 ; user 4 saw 40
    assert recs.items[0].tolist() == [20, 30, 10, -1]
    assert recs.scores[0].tolist()[:3] == [2.0, 2.0, 1.0]


def test_sum_weighting_uses_weights():
    data = Interactions.from_arrays([1, 2, 3], [10, 20, 20], [5.0, 1.0, 1.0])
    assert Popularity(weighting="sum").fit(data).recommend([3], k=1).items[0, 0] == 10
    assert Popularity(weighting="count").fit(data).recommend([1], k=1).items[0, 0] == 20


def test_bad_parameter():
    with pytest.raises(ValueError, match="weighting must be"):
        Popularity(weighting="median")


def test_matches_reference_topk(rng):
    from tests.reference import topk_reference

    users = rng.integers(0, 50, 400)
    items = rng.integers(0, 60, 400)
    data = Interactions.from_arrays(users, items)
    model = Popularity().fit(data)
    recs = model.recommend(data.user_map.ids, k=15)
    counts = np.bincount(data.matrix.indices, minlength=data.n_items).astype(np.float32)
    seen = [set(data.matrix[r].indices.tolist()) for r in range(data.n_users)]
    ref_i, ref_s = topk_reference(np.tile(counts, (data.n_users, 1)), 15, seen)
    np.testing.assert_array_equal(recs.items, data.item_map.to_external(ref_i))
    np.testing.assert_array_equal(recs.scores, ref_s)
