"""ContentKNN: item-item kNN over item features, so items nobody has interacted with are ranked.

The neighbour graph is built by ``kernels.similarity.topk_similarity`` over the rows of an
``ItemFeatures`` matrix (the same top-k graph code as ItemKNN, which compares the items' user
columns; never a dense items x items matrix), and users are scored exactly as by ItemKNN:
``score(u, j) = sum_i w(u, i) s(i, j)`` over the user's items i.

Item map. ``Interactions.item_map`` holds the items of the events; ``ItemFeatures.item_map`` the
featured items. A ContentKNN's ``item_map_`` is their sorted union: training items and cold items
(features, no interactions) alike, and ``seen_`` is the training matrix re-indexed onto it (so
its shape is ``(n_users, len(item_map_))``; cold items are empty columns). Training items without
features keep their place (they are counted in ``fit_report_`` and a ``DataWarning``): they have
no content neighbours, so they contribute to no score and are reached only through ``fill``.
Evaluation aligns test data to ``item_map_`` as for any model, so cold test items count.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..data.features import ItemFeatures, union_item_map, warn_report
from ..data.interactions import Interactions
from ..errors import ParameterError
from .knn import ItemKNN
from .base import check_train


class ContentKNN(ItemKNN):
    """Item-based kNN whose item-item similarity (``similarity``, ``shrink``, ``min_support`` over
    shared features, ``alpha``) comes from item features: ``fit(train, features=ItemFeatures)``.

    ``k`` neighbours are kept per item (cold items included); ``similar_items`` answers for any
    item in ``item_map_``; ``recommend`` scores cold items like any other, and ``history=`` may
    name cold items. ``fill="popularity"`` continues short lists with the most popular items
    (cold items last). ``fit_report_`` says how the features covered the training items.
    """

    kind = "content_knn"
    _RENAMED = {}
    # ItemKNN's interaction weighting does not apply: features come weighted (see ItemFeatures)
    weighting, k1, b = None, 100.0, 0.8

    def __init__(self, k: int = 100, similarity: str = "cosine", shrink: float = 0.0, min_support: int = 1,
                 alpha: float = 0.5, fill: str | None = "popularity", n_threads: int | None = None):
        self._init_params(locals())

    def _check_params(self, p: dict) -> dict:
        checked = super()._check_params({**p, "weighting": None, "k1": self.k1, "b": self.b})
        return {name: checked[name] for name in p}

    def fit(self, train: Interactions, features: ItemFeatures | None = None) -> "ContentKNN":
        """Learn the item graph from ``features`` and the users' histories from ``train``."""
        check_train(train)
        if not isinstance(features, ItemFeatures):
            raise ParameterError("features", features, "a recsys_fast.ItemFeatures",
                                 hint="fit(train, features=ItemFeatures.from_pandas(items, ...))")
        report = features.report(train)
        warn_report(report, f"{type(self).__name__}.fit")
        item_map = union_item_map(train.item_map, features.item_map)
        train, _ = train.remap(train.user_map, item_map)  # every training item is in the union
        self.fit_report_ = report
        self.features_ = features.aligned(item_map)
        self.feature_names_ = features.feature_names
        return super().fit(train)

    def _compared_rows(self, matrix):
        return self.features_

    def _keeps_rows(self) -> bool:
        return False  # the feature rows are kept anyway (features_)

    def _transposed_structure(self, combined):
        return None

    def _popularity(self, combined, new_rows) -> np.ndarray:  # new_rows are feature rows here
        return np.bincount(combined.matrix.indices, minlength=combined.n_items).astype(np.float32)

    def _update_rows(self, combined, user_pos, item_pos, new_in):
        """The feature rows before and after: new items from the events have no features (empty
        rows, no content neighbours, reached through ``fill`` only until a refit with features);
        the old items' graph rows are kept, bit for bit as a refit would build them."""
        from .knn import _reindex, _sorted_csr

        f = self.features_
        n_feat = f.shape[1]
        ptr, idx, data = _reindex(f.indptr, f.indices, f.data, item_pos, np.arange(n_feat), combined.n_items)
        grown = sp.csr_matrix((data, idx, ptr), shape=(combined.n_items, n_feat))
        self.features_ = grown
        return _sorted_csr(f), _sorted_csr(grown), item_pos, np.arange(n_feat)

    def _get_state(self):
        f = self.features_
        state = super()._get_state()
        state.update({"feature_indptr": f.indptr.astype(np.int64), "feature_indices": f.indices.astype(np.int32),
                      "feature_data": f.data.astype(np.float32), "feature_names": self.feature_names_})
        return state

    def _set_state(self, arrays, meta):
        names = arrays["feature_names"]
        n_items = len(arrays["graph_indptr"]) - 1
        self.features_ = sp.csr_matrix((arrays["feature_data"], arrays["feature_indices"], arrays["feature_indptr"]),
                                       shape=(n_items, len(names)))
        self.feature_names_ = names
        self.fit_report_ = dict(meta.get("fit_report", {}))
        super()._set_state(arrays, meta)

    def _get_meta(self):
        return {"fit_report": getattr(self, "fit_report_", {})}

    def item_features(self, items) -> "object":
        """The named features of ``items`` (external ids) as a DataFrame: item, feature, value."""
        import pandas as pd

        self.check_fitted()
        idx = self.item_map_.to_index(np.atleast_1d(np.asarray(items)))
        f = self.features_[idx].tocoo()
        return pd.DataFrame({"item": self.item_map_.ids[idx[f.row]], "feature": self.feature_names_[f.col],
                             "value": f.data})
