"""Model kinds by name, as ``module:Class`` strings so that loading a bundle imports only its model."""

from __future__ import annotations

import importlib

from .. import bundle
from ..errors import BundleError, ParameterError

MODELS: dict[str, str] = {
    "popularity": "recsys_fast.models.popularity:Popularity",
    "item_knn": "recsys_fast.models.knn:ItemKNN",
    "user_knn": "recsys_fast.models.knn:UserKNN",
    "content_knn": "recsys_fast.models.content:ContentKNN",
    "hybrid": "recsys_fast.models.hybrid:Hybrid",
    "bprmf": "recsys_fast.models.neural.bprmf:BPRMF",
    "neumf": "recsys_fast.models.neural.neumf:NeuMF",
    "lightgcn": "recsys_fast.models.neural.lightgcn:LightGCN",
    "multvae": "recsys_fast.models.neural.multvae:MultVAE",
    "ease": "recsys_fast.models.ease:EASE",
    "als": "recsys_fast.models.als:ALS",
    "sasrec": "recsys_fast.models.neural.sasrec:SASRec",
    "gru4rec": "recsys_fast.models.neural.gru4rec:GRU4Rec",
    "caser": "recsys_fast.models.neural.caser:Caser",
}


def model_class(kind: str):
    """The class registered under ``kind``; the error lists the known kinds."""
    try:
        target = MODELS[kind]
    except KeyError:
        raise ParameterError("model", kind, "one of " + ", ".join(repr(m) for m in sorted(MODELS))) from None
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def load(path):
    """Load any saved model bundle (hashes checked, no pickle)."""
    manifest = bundle.read_manifest(path)
    kind = manifest.get("kind")
    if kind == "onnx":
        raise BundleError(f"{path} is an exported serving bundle (ONNX); load it with recsys_fast.serving.load")
    if kind not in MODELS:
        raise BundleError(f"{path}: bundle holds a model of kind {kind!r}, which this recsys_fast does not know "
                          f"(known: {', '.join(sorted(MODELS))})")
    cls = model_class(kind)
    with bundle.building(path, cls.__name__):
        return cls._from_bundle(path, manifest)
