"""One check shared by the fold-in tests of every model that scores users from a given history."""

import numpy as np


def assert_history_matches_known_user(model, train, row: int = 5) -> None:
    """A newcomer given training user ``row``'s items gets that user's recommendations."""
    user = train.user_map.ids[row]
    items = train.matrix.indices[train.matrix.indptr[row]:train.matrix.indptr[row + 1]]
    known = model.recommend([user], k=10)
    new = model.recommend(["newcomer"], k=10, history={"newcomer": train.item_map.ids[items]})
    np.testing.assert_array_equal(known.items, new.items)
    np.testing.assert_allclose(known.scores, new.scores, rtol=1e-5)
