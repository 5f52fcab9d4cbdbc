"""Top-k ranking metrics per user, parallel over users.

Input: ranked recommendations ``recs`` (n_users, K) int32, best first, -1 padding; the users' test
items as CSR ``test_indptr`` (n_users + 1) / ``test_indices`` (sorted, unique per row); the
cutoffs ``ks`` (int64, each 1 <= k <= K). Output: float64 ``(N_METRICS, n_users, len(ks))`` in
the order of ``METRIC_NAMES``. For a user with test items T and top-k list R:

- rel_i = 1 when the item at rank i is in T (padding -1 never is; a repeated item counts once);
- precision@k = |R∩T| / k, recall@k = |R∩T| / |T|, F1@k = 2PR / (P + R) (0 when P = R = 0);
- NDCG@k = DCG / IDCG, DCG = sum_{i=1..k} rel_i / log2(i + 1), IDCG = sum_{i=1..min(k,|T|)} 1 / log2(i + 1);
- MAP@k = (1 / min(k, |T|)) * sum_{i=1..k} precision@i * rel_i;
- MRR@k = 1 / (rank of the first hit) when it is <= k, else 0; hit_rate@k = 1 if any hit, else 0.

A user with no test items gets NaN for every metric (undefined, and left out of means).
No fastmath: these numbers are reported, and must be the same for any thread count.

``per_user_metrics`` is the public wrapper (O(1) checks of dtypes and shapes, plus one pass over
the test indices for their order): evaluation, the hybrid's weight tuning and the neural models'
validation NDCG all call it, so every NDCG in the library is this one.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..errors import DataError
from ._config import kernel
from ._csr_checks import first_unsorted_row

METRIC_NAMES = ("precision", "recall", "f1", "ndcg", "map", "mrr", "hit_rate")
PRECISION, RECALL, F1, NDCG, MAP, MRR, HIT_RATE = range(len(METRIC_NAMES))


def per_user_metrics(recs, test_indptr, test_indices, ks) -> np.ndarray:
    """Every metric of ``METRIC_NAMES`` at every cutoff of ``ks`` for every row of ``recs``.

    ``recs``: (n_users, K) item indices, best first, -1 padding; ``test_indptr`` (n_users + 1) /
    ``test_indices``: each row's test items, sorted and unique within the row; ``ks``: unique
    cutoffs >= 1 (ranks past K count as padding). Returns float64 ``(len(METRIC_NAMES), n_users, len(ks))``, NaN for
    rows without test items. Bad input raises ``DataError``.
    """
    recs = np.ascontiguousarray(recs, dtype=np.int32)
    test_indptr = np.ascontiguousarray(test_indptr, dtype=np.int64)
    test_indices = np.ascontiguousarray(test_indices, dtype=np.int32)
    ks = np.ascontiguousarray(np.atleast_1d(ks), dtype=np.int64)
    if recs.ndim != 2:
        raise DataError(f"recs must be 2-D (n_users, k), got shape {recs.shape}")
    n = recs.shape[0]
    if test_indptr.shape != (n + 1,) or test_indptr[0] != 0 or test_indptr[-1] != test_indices.shape[0]:
        raise DataError(f"test_indptr must be a CSR index pointer of {n + 1} entries over "
                        f"{test_indices.shape[0]} test items")
    if ks.ndim != 1 or ks.size == 0 or ks.min() < 1 or np.unique(ks).size != ks.size:
        raise DataError(f"ks must be unique cutoffs >= 1, got {ks.tolist()}")
    if ks.max() > recs.shape[1]:  # ranks past the list are padding (a list clamped to the catalogue)
        recs = np.concatenate([recs, np.full((n, int(ks.max()) - recs.shape[1]), -1, np.int32)], axis=1)
    if first_unsorted_row(test_indptr, test_indices) != -1:
        raise DataError("test_indices must be sorted and unique within each row")
    return _ranking_metrics(recs, test_indptr, test_indices, ks)


@kernel(parallel=True, fastmath=False)
def _ranking_metrics(recs, test_indptr, test_indices, ks):
    """Every metric of ``METRIC_NAMES`` at every cutoff of ``ks`` (unique) for every row of ``recs``."""
    n_users = recs.shape[0]
    n_ks = ks.shape[0]
    kmax = 0
    for j in range(n_ks):
        kmax = max(kmax, ks[j])
    # discount[i] = 1 / log2(i + 2) for 0-based rank i; idcg[m] = sum of the first m discounts
    discount = np.empty(kmax, dtype=np.float64)
    idcg = np.zeros(kmax + 1, dtype=np.float64)
    for i in range(kmax):
        discount[i] = 1.0 / np.log2(i + 2.0)
        idcg[i + 1] = idcg[i] + discount[i]
    at_rank = np.full(kmax, -1, dtype=np.int64)  # at_rank[i] = j where ks[j] == i + 1, else -1
    for j in range(n_ks):
        at_rank[ks[j] - 1] = j
    out = np.empty((len(METRIC_NAMES), n_users, n_ks), dtype=np.float64)
    for u in prange(n_users):
        lo = test_indptr[u]
        hi = test_indptr[u + 1]
        n_test = hi - lo
        if n_test == 0:
            out[:, u, :] = np.nan
            continue
        taken = np.zeros(n_test, dtype=np.bool_)  # test items already hit: a repeat is no new hit
        hits = 0
        dcg = 0.0
        ap_sum = 0.0
        first_hit = 0  # 1-based rank of the first hit; 0: none yet
        for i in range(kmax):
            item = recs[u, i]
            if item >= 0:
                a = lo  # binary search for item in the row's sorted test items
                b = hi
                while a < b:
                    mid = (a + b) >> 1
                    if test_indices[mid] < item:
                        a = mid + 1
                    else:
                        b = mid
                if a < hi and test_indices[a] == item and not taken[a - lo]:
                    taken[a - lo] = True
                    hits += 1
                    dcg += discount[i]
                    ap_sum += hits / (i + 1.0)
                    if first_hit == 0:
                        first_hit = i + 1
            j = at_rank[i]
            if j < 0:
                continue
            rank = i + 1
            p = hits / rank
            r = hits / n_test
            m = min(rank, n_test)
            out[PRECISION, u, j] = p
            out[RECALL, u, j] = r
            out[F1, u, j] = 2.0 * p * r / (p + r) if hits > 0 else 0.0
            out[NDCG, u, j] = dcg / idcg[m]
            out[MAP, u, j] = ap_sum / m
            out[MRR, u, j] = 1.0 / first_hit if first_hit > 0 else 0.0
            out[HIT_RATE, u, j] = 1.0 if hits > 0 else 0.0
    return out
