"""Torch -> ONNX: the only code that turns a trained neural model into a serving bundle.

``to_onnx(model, path)`` writes a bundle whose ``model.onnx`` takes the model's inputs, the items
to exclude and ``k``, and ends in ``TopK``; ``recsys_fast.serving.load(path)`` serves it with
onnxruntime and no torch. Needs the ``export`` extra (onnx, onnxscript, onnxruntime) and torch.
"""

from __future__ import annotations

from .onnx_export import INPUT_FAMILIES, OPSET, to_onnx

__all__ = ["to_onnx", "INPUT_FAMILIES", "OPSET"]
