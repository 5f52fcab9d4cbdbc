"""recsys_fast: fast recommenders with honest evaluation.

Importing the package is light: it loads numpy and scipy, and nothing else until used
(no torch, onnxruntime or pandas; no kernel compiles). Public names resolve lazily.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Interactions": "recsys_fast.data.interactions:Interactions",
    "IdMap": "recsys_fast.data.idmap:IdMap",
    "ItemFeatures": "recsys_fast.data.features:ItemFeatures",
    "Popularity": "recsys_fast.models.popularity:Popularity",
    "ItemKNN": "recsys_fast.models.knn:ItemKNN",
    "UserKNN": "recsys_fast.models.knn:UserKNN",
    "ContentKNN": "recsys_fast.models.content:ContentKNN",
    "Hybrid": "recsys_fast.models.hybrid:Hybrid",
    "BPRMF": "recsys_fast.models.neural.bprmf:BPRMF",
    "NeuMF": "recsys_fast.models.neural.neumf:NeuMF",
    "LightGCN": "recsys_fast.models.neural.lightgcn:LightGCN",
    "MultVAE": "recsys_fast.models.neural.multvae:MultVAE",
    "EASE": "recsys_fast.models.ease:EASE",
    "ALS": "recsys_fast.models.als:ALS",
    "SASRec": "recsys_fast.models.neural.sasrec:SASRec",
    "GRU4Rec": "recsys_fast.models.neural.gru4rec:GRU4Rec",
    "Caser": "recsys_fast.models.neural.caser:Caser",
    "Recommendations": "recsys_fast.models.base:Recommendations",
    "Neighbours": "recsys_fast.models.base:Neighbours",
    "load": "recsys_fast.models.registry:load",
    "evaluate": "recsys_fast.evaluation.protocol:evaluate",
}
_SUBMODULES = {"datasets", "split", "errors", "threads", "testing", "kernels", "models", "evaluation", "data",
               "bundle"}

__all__ = sorted(_LAZY) + sorted(_SUBMODULES)


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name].split(":")
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"recsys_fast.{name}")
    raise AttributeError(f"module 'recsys_fast' has no attribute {name!r}")


def __dir__():
    return __all__
