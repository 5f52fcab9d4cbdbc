"""Public home of the splits: ``from recsys_fast.split import holdout``."""

from .data.split import holdout, leave_last_out, temporal, test_counts, user_folds

__all__ = ["holdout", "leave_last_out", "temporal", "test_counts", "user_folds"]
