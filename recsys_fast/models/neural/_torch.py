"""Lazy torch access, device choice and seeding for the neural models.

Nothing here imports torch at module import time: ``import recsys_fast.models.neural`` stays
light, and a missing torch surfaces as ``MissingExtraError`` naming the ``train`` extra.
"""

from __future__ import annotations

import numpy as np

from ... import validation
from ...errors import MissingExtraError

DEVICES = ("auto", "cpu", "cuda")


def torch():
    """The torch module, or ``MissingExtraError("torch", "train")`` when it is not installed."""
    try:
        import torch as _torch
    except ImportError:
        raise MissingExtraError("torch", "train") from None
    return _torch


def resolve_device(device: str):
    """``"auto"`` -> cuda when available, else cpu; ``"cuda"`` without a GPU is an error."""
    t = torch()
    validation.choice("device", device, DEVICES)
    if device == "auto":
        device = "cuda" if t.cuda.is_available() else "cpu"
    if device == "cuda" and not t.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device; use device='cpu' or 'auto'")
    return t.device(device)


def seeded(seed: int | None):
    """Seed torch's global generator and return a NumPy Generator for the samplers.

    On CPU the same seed gives the same model: every random draw comes from these two sources.
    """
    t = torch()
    seed = 0 if seed is None else int(seed)
    t.manual_seed(seed)
    return np.random.default_rng(seed)


def to_numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def sanitise(name: str) -> str:
    """A state_dict key as a bundle array name (letters, digits, underscores)."""
    return "w__" + "".join(c if c.isalnum() else "_" for c in name)
