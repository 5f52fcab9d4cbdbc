"""Honest evaluation: full-ranking top-k metrics (Numba kernels), rating errors, comparison tables."""

from .metrics import ALL_METRICS, RANKING_METRICS, RATING_METRICS, coverage, ranking_metrics, rating_errors
from .protocol import EvaluationResult, compare, evaluate

__all__ = ["ALL_METRICS", "RANKING_METRICS", "RATING_METRICS", "EvaluationResult", "compare", "coverage",
           "evaluate", "ranking_metrics", "rating_errors"]
