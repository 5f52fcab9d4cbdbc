"""Public metric functions: validate and coerce once, then call the kernels.

Definitions (T: a user's test items, R: the top-k list, rel_i = 1 when the item at rank i is in T):
precision@k = |R∩T| / k; recall@k = |R∩T| / |T|; F1@k = 2PR / (P + R), 0 when both are 0;
NDCG@k = DCG / IDCG with DCG = sum_{i<=k} rel_i / log2(i + 1) and IDCG over min(k, |T|) ones;
MAP@k = (1 / min(k, |T|)) * sum_{i<=k} precision@i * rel_i; MRR@k = 1 / rank of the first hit
(0 if none); hit_rate@k = 1 if any hit; coverage@k = distinct recommended items / n_items;
cold_recall@k = |R∩C| / |C| with C the user's test items that have no interaction in train
(cold items; those the model does not know count as misses), mean over users with C non-empty.
Padding (-1) never counts as a hit, and an item repeated in R counts once.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .. import validation
from ..errors import ParameterError
from ..validation import Shown
from ..kernels.metrics import METRIC_NAMES
from ..limits import MAX_K

RANKING_METRICS = METRIC_NAMES  # per-user metrics at a cutoff
RATING_METRICS = ("rmse", "mae")
COLD_METRICS = ("cold_recall",)  # over test items without train interactions (needs train)
ALL_METRICS = RANKING_METRICS + ("coverage",) + COLD_METRICS + RATING_METRICS


def check_ks(k) -> np.ndarray:
    """Cutoffs as a sorted, unique int64 array; one int or a sequence of positive ints."""
    values = validation.integers("k", k, minimum=1)
    if max(values) > MAX_K:
        raise ParameterError("k", k, f"cutoffs <= {MAX_K}")
    return np.unique(np.asarray(values, dtype=np.int64))


def check_metrics(metrics) -> tuple[str, ...]:
    """The requested metric names in canonical order; None means all of them."""
    if metrics is None:
        return ALL_METRICS
    wanted = validation.names("metrics", metrics, ALL_METRICS)
    return tuple(m for m in ALL_METRICS if m in wanted)


def _as_csr(test, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Test items per row as (indptr int64, indices int32), sorted and unique within rows."""
    if sp.issparse(test):
        m = sp.csr_matrix(test)
        if m.shape[0] != n_rows:
            raise ParameterError("test", Shown(f"{m.shape[0]} rows"), f"aligned with recommended ({n_rows} rows)")
        m = m.copy()
        m.sum_duplicates()  # also sorts indices
        indptr, indices = m.indptr, m.indices
    else:
        try:
            rows = [np.unique(np.asarray(r, dtype=np.int64).reshape(-1)) for r in test]
        except (TypeError, ValueError, OverflowError):
            raise ParameterError("test", validation.type_of(test), "a sparse matrix or rows of integer item indices") \
                from None
        if len(rows) != n_rows:
            raise ParameterError("test", Shown(f"{len(rows)} rows"), f"aligned with recommended ({n_rows} rows)")
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum([len(r) for r in rows], out=indptr[1:])
        indices = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        if len(indices) and indices.min() < 0:
            raise ParameterError("test", int(indices.min()), "item indices >= 0")
    if len(indices) and indices.max() >= 2**31:
        raise ParameterError("test", int(indices.max()), "item indices that fit in int32")
    return np.ascontiguousarray(indptr, dtype=np.int64), np.ascontiguousarray(indices, dtype=np.int32)


def _as_recs(recommended) -> np.ndarray:
    recs = np.asarray(recommended)
    if recs.ndim != 2:
        raise ParameterError("recommended", Shown(f"shape {recs.shape}"), "2-D (n_users, k) item indices")
    if recs.dtype.kind not in "iu":
        raise ParameterError("recommended", Shown(f"dtype {recs.dtype}"), "integer item indices (-1 for padding)")
    if recs.size and (recs.max() >= 2**31 or recs.min() < -1):
        raise ParameterError("recommended", int(recs.max() if recs.max() >= 2**31 else recs.min()),
                             "item indices in [-1, 2**31) (-1 for padding)")
    return np.ascontiguousarray(recs, dtype=np.int32)


def ranking_metrics_array(recommended, test, k=10) -> tuple[np.ndarray, np.ndarray]:
    """All ranking metrics as one array ``(len(RANKING_METRICS), n_users, len(ks))`` and the ks.

    ``recommended``: (n_users, K) item indices, best first, -1 padding. ``test``: each row's
    relevant item indices (a scipy sparse matrix with rows aligned, or a sequence of arrays).
    Rows with no test items get NaN.
    """
    from ..kernels.metrics import per_user_metrics

    recs = _as_recs(recommended)
    ks = check_ks(k)
    if ks[-1] > recs.shape[1]:
        raise ParameterError("k", int(ks[-1]), f"at most the {recs.shape[1]} recommendations per row",
                             hint="recommend at least max(k) items; padding with -1 is fine")
    indptr, indices = _as_csr(test, recs.shape[0])
    return per_user_metrics(recs, indptr, indices, ks), ks


def ranking_metrics(recommended, test, k=10) -> dict[str, np.ndarray]:
    """Per-user metrics keyed ``"precision@10"`` and so on (float64 arrays, NaN where T is empty)."""
    values, ks = ranking_metrics_array(recommended, test, k)
    return {f"{name}@{kk}": values[m, :, j] for m, name in enumerate(RANKING_METRICS) for j, kk in enumerate(ks)}


def coverage(recommended, n_items: int, k: int | None = None) -> float:
    """Distinct items among the first ``k`` columns of ``recommended`` (padding ignored) / n_items."""
    recs = _as_recs(recommended)
    n_items = validation.integer("n_items", n_items, minimum=1)
    k = validation.integer("k", k, minimum=1, allow_none=True)
    if recs.size and recs.max() >= n_items:
        raise ParameterError("recommended", int(recs.max()), f"item indices < n_items ({n_items})")
    cols = recs if k is None else recs[:, :k]
    seen = np.zeros(n_items, dtype=bool)
    seen[cols[cols >= 0]] = True
    return float(seen.sum()) / n_items


def rating_errors(predicted, actual) -> dict[str, float]:
    """RMSE and MAE between predicted and actual ratings (NaN when there are none)."""
    p = np.asarray(predicted, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if p.shape != a.shape:
        raise ParameterError("actual", Shown(f"shape {a.shape}"), f"the shape of predicted {p.shape}")
    if p.size == 0:
        return {"rmse": float("nan"), "mae": float("nan")}
    err = p - a
    return {"rmse": float(np.sqrt(np.mean(err * err))), "mae": float(np.mean(np.abs(err)))}
