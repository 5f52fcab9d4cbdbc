"""Deep recommenders on one training loop (extra ``train``: torch).

Importing this package does not import torch; each class resolves on first use:
``BPRMF``, ``NeuMF``, ``LightGCN``, ``MultVAE``, ``SASRec``, ``GRU4Rec``, ``Caser``.
(EASE, closed form in NumPy, is ``recsys_fast.models.ease``.)
"""

from __future__ import annotations

import importlib

_LAZY = {
    "NeuralRecommender": "base",
    "BPRMF": "bprmf",
    "NeuMF": "neumf",
    "LightGCN": "lightgcn",
    "MultVAE": "multvae",
    "SASRec": "sasrec",
    "GRU4Rec": "gru4rec",
    "Caser": "caser",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
