"""Public home of the splits: ``from recsys_fast.split import holdout``."""

from .data.split import cold_items, holdout, leave_last_out, temporal, test_counts, user_folds

__all__ = ["cold_items", "holdout", "leave_last_out", "temporal", "test_counts", "user_folds"]
