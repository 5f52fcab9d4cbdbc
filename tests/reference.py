"""Plain NumPy/Python references, written straight from the formulas in the README.

Every kernel is compared against one of these on random inputs. They are slow on purpose:
clarity over speed.
"""

from __future__ import annotations

import numpy as np


def topk_reference(scores: np.ndarray, k: int, excluded: list[set] | None = None, allowed=None):
    """Row-wise top-k by score desc, ties by lower index; padding -1/-inf."""
    n, m = scores.shape
    out_i = np.full((n, k), -1, dtype=np.int64)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    for r in range(n):
        cands = [j for j in range(m) if not np.isnan(scores[r, j])
                 and (excluded is None or j not in excluded[r]) and (allowed is None or allowed[j])]
        cands.sort(key=lambda j: (-scores[r, j], j))
        for pos, j in enumerate(cands[:k]):
            out_i[r, pos] = j
            out_s[r, pos] = scores[r, j]
    return out_i, out_s


# ---------------------------------------------------------------------- ranking metrics (per user)
# R: the ranked recommendation list (item ids, -1 = padding), T: the user's test items (a set).
# rel_i = 1 when R[i] is in T, is not padding, and did not appear earlier in R (an item counts once).

def _rel(recs, test, k):
    rel, seen = [], set()
    for item in list(recs)[:k]:
        hit = item != -1 and item in test and item not in seen
        rel.append(1 if hit else 0)
        if item != -1:
            seen.add(item)
    return rel


def precision_reference(recs, test, k):
    """|R∩T| / k (k, not the number of items recommended)."""
    return sum(_rel(recs, test, k)) / k


def recall_reference(recs, test, k):
    """|R∩T| / |T|."""
    return sum(_rel(recs, test, k)) / len(test)


def f1_reference(recs, test, k):
    """2PR / (P + R), 0 when P and R are both 0."""
    p, r = precision_reference(recs, test, k), recall_reference(recs, test, k)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def ndcg_reference(recs, test, k):
    """DCG / IDCG: DCG = sum_{i=1..k} rel_i / log2(i+1); IDCG over min(k, |T|) relevant items."""
    import math

    dcg = sum(r / math.log2(i + 1) for i, r in enumerate(_rel(recs, test, k), start=1))
    idcg = sum(1 / math.log2(i + 1) for i in range(1, min(k, len(test)) + 1))
    return dcg / idcg


def map_reference(recs, test, k):
    """(1 / min(k, |T|)) * sum_{i=1..k} precision@i * rel_i."""
    rel = _rel(recs, test, k)
    return sum(sum(rel[:i]) / i * rel[i - 1] for i in range(1, len(rel) + 1)) / min(k, len(test))


def mrr_reference(recs, test, k):
    """1 / rank of the first hit within the top k, else 0."""
    for i, r in enumerate(_rel(recs, test, k), start=1):
        if r:
            return 1.0 / i
    return 0.0


def hit_rate_reference(recs, test, k):
    """1 if any of the top k is a test item, else 0."""
    return 1.0 if any(_rel(recs, test, k)) else 0.0


def coverage_reference(recs_rows, n_items, k):
    """Distinct items in the users' top k (padding ignored) / n_items."""
    return len({item for row in recs_rows for item in list(row)[:k] if item != -1}) / n_items


METRIC_REFERENCES = {
    "precision": precision_reference, "recall": recall_reference, "f1": f1_reference, "ndcg": ndcg_reference,
    "map": map_reference, "mrr": mrr_reference, "hit_rate": hit_rate_reference,
}


def rating_errors_reference(predicted, actual):
    """RMSE = sqrt(mean((p - a)^2)), MAE = mean(|p - a|), straight loops."""
    import math

    n = len(actual)
    sq = sum((float(p) - float(a)) ** 2 for p, a in zip(predicted, actual))
    ab = sum(abs(float(p) - float(a)) for p, a in zip(predicted, actual))
    return {"rmse": math.sqrt(sq / n), "mae": ab / n}
