"""Serving: load any bundle and answer top-k requests, without torch (extra ``serve``).

``load(path)`` returns a runtime with the model's contract (``recommend``, ``recommend_indices``,
``similar_items`` where the model has item-item scores, ``prepare``, ``metadata``):

- ``model.save`` bundles of torch-free models (Popularity, ItemKNN, UserKNN, ContentKNN, EASE, ALS): the model
  itself on its Numba/NumPy kernels;
- ONNX bundles written by ``recsys_fast.export.to_onnx`` / ``recsys-fast export``: onnxruntime.

The HTTP service is ``recsys_fast.serving.http`` (``recsys-fast serve``). Importing torch anywhere
in this package is a bug: a test runs it in a process where ``import torch`` fails.
"""

from __future__ import annotations

from .. import bundle
from ..errors import BundleError

TORCH_FREE_KINDS = ("popularity", "item_knn", "user_knn", "content_knn", "ease", "als")

__all__ = ["load", "TORCH_FREE_KINDS"]


def load(path, n_threads: int | None = None, providers=None):
    """The runtime for the bundle at ``path`` (hashes checked, no pickle, no torch).

    ``n_threads``: threads of onnxruntime's intra-op pool, or the Numba limit of each call for
    kernel models (None: the libraries' defaults). The process-wide BLAS pools are not resized per
    call (unsafe from concurrent request threads): bound them once around the service with
    ``recsys_fast.threads.limit(n)``, as ``recsys-fast serve --threads`` does. ``providers``: onnxruntime execution providers, e.g.
    ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` (default: CPU).
    """
    from ..validation import integer

    if n_threads is not None:
        n_threads = integer("n_threads", n_threads, minimum=1)
    manifest = bundle.read_manifest(path)
    kind = manifest.get("kind")
    if kind == "onnx":
        from .runtime import OnnxRuntime

        with bundle.building(path, "serving runtime"):
            return OnnxRuntime.from_bundle(path, manifest, n_threads=n_threads, providers=providers)
    from ..models.registry import MODELS, load as load_model

    if kind in TORCH_FREE_KINDS:
        from .runtime import ModelRuntime

        return ModelRuntime(load_model(path), manifest, path, n_threads=n_threads)
    if kind in MODELS:
        raise BundleError(f"{path} holds a {kind} model saved with model.save(), which serves only through torch; "
                          f"export it first: `recsys-fast export {path} --out DIR` (or "
                          f"recsys_fast.export.to_onnx(model, DIR)) and serve DIR")
    raise BundleError(f"{path}: bundle kind {kind!r} cannot be served (known: onnx, {', '.join(TORCH_FREE_KINDS)})")
