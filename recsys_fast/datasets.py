"""Public home of the data set helpers: ``recsys_fast.datasets.load_movielens`` and friends."""

from .data.datasets import NO_GENRES, dataset_search_path, find_dataset, load_movielens, synthetic

__all__ = ["NO_GENRES", "dataset_search_path", "find_dataset", "load_movielens", "synthetic"]
