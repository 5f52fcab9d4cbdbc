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



def similarity_reference(dense: np.ndarray, similarity: str = "cosine", shrink: float = 0.0,
                         min_support: int = 1, alpha: float = 0.5, exclude_self: bool = True):
    """Dense float64 similarity, straight from the definitions in kernels/similarity.py.

    ``dense`` is n_rows x n_cols; zeros are "not stored". Returns ``(score, eligible)``: the
    n_rows x n_rows score matrix after shrinkage (0 where undefined) and the mask of pairs that
    may be kept (co-count >= max(1, min_support), not self when excluded). A kept entry is an
    eligible one with score > 0; row i's answer is its k best kept entries, ties by lower index.
    """
    x = np.asarray(dense, dtype=np.float64)
    n, m = x.shape
    stored = x != 0
    co = stored.astype(np.float64) @ stored.T.astype(np.float64)
    if similarity == "jaccard":
        nnz = stored.sum(axis=1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            s = co / (nnz[:, None] + nnz[None, :] - co)
    else:
        y = x.copy()
        if similarity == "pearson":
            for i in range(n):
                if stored[i].any():
                    y[i, stored[i]] -= y[i, stored[i]].mean()
        elif similarity == "adjusted_cosine":
            for u in range(m):
                if stored[:, u].any():
                    y[stored[:, u], u] -= y[stored[:, u], u].mean()
        ss = (y * y).sum(axis=1)
        dot = y @ y.T
        with np.errstate(invalid="ignore", divide="ignore"):
            if similarity == "dot":
                s = dot
            elif similarity == "asymmetric_cosine":
                s = dot / (ss[:, None] ** alpha * ss[None, :] ** (1.0 - alpha))
            else:
                s = dot / np.sqrt(ss[:, None] * ss[None, :])
    s = np.where(np.isfinite(s), s, 0.0)
    if shrink > 0:
        s = s * co / (co + shrink)
    eligible = co >= max(1, min_support)
    if exclude_self:
        np.fill_diagonal(eligible, False)
    return s, eligible


def dense_of_csr(indptr, indices, data, n_cols):
    """A dense float64 copy of CSR arrays (for small test inputs)."""
    n_rows = len(indptr) - 1
    out = np.zeros((n_rows, n_cols), dtype=np.float64)
    for r in range(n_rows):
        out[r, indices[indptr[r]:indptr[r + 1]]] = data[indptr[r]:indptr[r + 1]]
    return out


def _idf_reference(dense):
    n_rows = dense.shape[0]
    df = (dense != 0).sum(axis=0)
    return np.log(n_rows) - np.log1p(df)


def tfidf_reference(dense: np.ndarray) -> np.ndarray:
    """implicit's TF-IDF on a dense matrix: sqrt(x) * (log(n_rows) - log1p(df[column]))."""
    x = np.asarray(dense, dtype=np.float64)
    return np.where(x != 0, np.sqrt(x) * _idf_reference(x)[None, :], 0.0)


def bm25_reference(dense: np.ndarray, k1: float = 100.0, b: float = 0.8) -> np.ndarray:
    """implicit's BM25 on a dense matrix (rows are documents, columns terms)."""
    x = np.asarray(dense, dtype=np.float64)
    row_sums = x.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        length_norm = (1.0 - b) + b * row_sums / row_sums.mean()
        w = x * (k1 + 1.0) / (k1 * length_norm[:, None] + x) * _idf_reference(x)[None, :]
    return np.where(x != 0, w, 0.0)


def knn_topk_reference(a_rows, b_rows, n_items: int, k: int, excluded=None, allowed=None, fill_order=None):
    """kNN scoring from the definition: rows of A and B as lists of (column, value) pairs.

    Candidates of row r: items j with A[r, s] and B[s, j] both stored, not excluded, allowed;
    score = sum_s A[r, s] * B[s, j] (float64). Best k by (score desc, index asc); then items of
    ``fill_order`` not excluded, allowed and not chosen, scored base-1, base-2, ... with
    base = min(0, lowest chosen score); then padding -1 / -inf.
    """
    n = len(a_rows)
    out_i = np.full((n, k), -1, dtype=np.int64)
    out_s = np.full((n, k), -np.inf, dtype=np.float64)
    for r in range(n):
        excl = set() if excluded is None else set(excluded[r])
        scores: dict[int, float] = {}
        for s, w in a_rows[r]:
            for j, v in b_rows[s]:
                if j in excl or (allowed is not None and not allowed[j]):
                    continue
                scores[j] = scores.get(j, 0.0) + float(w) * float(v)
        chosen = sorted(scores, key=lambda j: (-scores[j], j))[:k]
        for pos, j in enumerate(chosen):
            out_i[r, pos] = j
            out_s[r, pos] = scores[j]
        if fill_order is not None and len(chosen) < k:
            base = min(0.0, out_s[r, len(chosen) - 1]) if chosen else 0.0
            taken = set(scores)
            pos = len(chosen)
            for j in fill_order:
                if pos == k:
                    break
                if j in excl or j in taken or (allowed is not None and not allowed[j]):
                    continue
                taken.add(j)
                out_i[r, pos] = j
                out_s[r, pos] = base - (pos - len(chosen) + 1)
                pos += 1
    return out_i, out_s


def csr_rows(matrix) -> list[list[tuple[int, float]]]:
    """A scipy CSR matrix as a list of rows of (column, value) pairs, in stored order."""
    out = []
    for r in range(matrix.shape[0]):
        lo, hi = matrix.indptr[r], matrix.indptr[r + 1]
        out.append(list(zip(matrix.indices[lo:hi].tolist(), matrix.data[lo:hi].tolist())))
    return out

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
