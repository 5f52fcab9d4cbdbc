"""Offline batch scoring: every user's top-k streamed to Parquet or CSV, resumably, locally or on
a dask.distributed cluster (extra ``dist``).

``score(model_or_bundle, users=None, k=10, out="recs.parquet", ...)`` takes a fitted model, a
runtime from ``recsys_fast.serving.load`` or a bundle path (loaded through ``serving.load``, so no
torch for kNN/EASE/Popularity/ALS and exported ONNX bundles). Importing this package imports neither
torch nor pyarrow nor dask.
"""

from .score import BatchResult, score

__all__ = ["score", "BatchResult"]
