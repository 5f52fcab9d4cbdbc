"""``to_onnx``: a trained neural model as an ONNX serving bundle with top-k inside the graph.

The graph is the model's scoring network (exported by torch's TorchScript exporter) followed by
a small head written here with ``onnx.helper``:

    inputs:  the model's inputs (see ``INPUT_FAMILIES``), ``exclude`` int64 [batch, e] and ``k`` int64 [1]
    scores = ScatterElements(all_scores, max(exclude, 0), where(exclude >= 0, -inf, +inf), reduction=min)
    items, scores = TopK(scores, k)          outputs: ``items`` int64 [batch, k], ``scores`` float [batch, k]

``exclude`` lists each row's excluded item indices padded with -1 (a padding entry scatters +inf
under ``min`` into column 0, which changes nothing). Padded index lists won over a dense
[batch, n_items] bool mask when measured (README, "Export"): the same speed at batch 1 and far
less to build and copy per request at batch 256. The batch axis and ``e`` are dynamic, ``k`` is a
tensor; ``TopK`` breaks ties by the lower index, as the library's kernels do.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from .. import __version__, bundle
from ..errors import MissingExtraError, ParameterError

OPSET = 18  # ScatterElements with reduction="min" needs 18
MODEL_FILE = "model.onnx"
BUNDLE_KIND = "onnx"
EXPORTER = "torch.onnx.export (TorchScript exporter, dynamo=False) + recsys_fast top-k head"

# model kind -> how the graph takes a user; the serving runtime builds these inputs per request
INPUT_FAMILIES = {
    "bprmf": "users",            # users int64 [batch]
    "neumf": "users",
    "lightgcn": "users",
    "multvae": "rows",           # rows float32 [batch, n_items], 1 where interacted
    "ease": "history",           # history int64 [batch, h]: item indices padded with n_items
    "sasrec": "sequence",        # sequence int64 [batch, max_len]: ids +1, left-padded with 0
    "gru4rec": "sequence",
    "caser": "sequence_users",   # sequence as above + users int64 [batch] (n_users = unknown user)
}
FAMILY_INPUTS = {"users": ("users",), "rows": ("rows",), "history": ("history",), "sequence": ("sequence",),
                 "sequence_users": ("sequence", "users")}


def to_onnx(model, path, quantize: str | None = None, calibration=None, max_ndcg_drop: float = 0.005) -> Path:
    """Export the fitted neural ``model`` as a serving bundle directory at ``path``; returns the path.

    The bundle holds ``model.onnx`` (checked with ``onnx.checker``), the id maps, the training rows
    (exclusion of seen items) and, for sequential models, the users' sequences; its manifest has
    kind ``"onnx"``, the model kind and parameters, the opset, exporter and library versions and
    the sha256 of every file.

    ``quantize="dynamic"`` or ``"static"`` writes an int8 graph instead (``onnxruntime.quantization``;
    static calibrates activation ranges on ``calibration``'s users). It needs ``calibration``:
    ``Interactions`` (ideally held out from training) whose validation split (per-user holdout,
    20%, seed 0) measures NDCG@10 of the fp32 and the int8 graph as served; both figures, the graph
    sizes and the batch-1 latencies go into the manifest (``meta["quantization"]``). When the drop
    (fp32 minus int8) exceeds ``max_ndcg_drop``, ``QuantizationError`` names both figures and no
    bundle is written.
    """
    import tempfile

    from .. import validation
    from ..data.interactions import Interactions
    from .quantize import MODES, quantize_bundle

    quantize = validation.choice("quantize", quantize, (None,) + MODES)
    max_ndcg_drop = validation.number("max_ndcg_drop", max_ndcg_drop)
    if quantize is not None:
        validation.instance("calibration", calibration, Interactions,
                            "recsys_fast.Interactions to measure NDCG@10 on (and, for static, to calibrate with)")
    model.check_fitted()
    kind = getattr(model, "kind", "")
    if kind not in INPUT_FAMILIES:
        raise ParameterError("model", type(model).__name__, f"one of the neural models ({', '.join(sorted(INPUT_FAMILIES))})",
                             hint="kNN and popularity bundles are served as saved: model.save(dir), "
                                  "then recsys_fast.serving.load(dir)")
    family = INPUT_FAMILIES[kind]
    graph = export_graph(model, family)
    arrays = {"user_ids": model.user_map_.ids, "item_ids": model.item_map_.ids,
              "seen_indptr": model.seen_.indptr, "seen_indices": model.seen_.indices, "seen_data": model.seen_.data}
    meta = {"model_kind": kind, "input_family": family, "n_users": int(model.n_users), "n_items": int(model.n_items),
            "supports_history": bool(model.supports_history), "opset": OPSET, "exporter": EXPORTER,
            "exclusions": "padded index lists (exclude int64 [batch, e], -1 = padding)",
            "chunk_rows": int(min(getattr(model, "inference_chunk", 1024), 1024)), "versions": _versions()}
    if family.startswith("sequence"):
        indptr, items = model.sequences()
        arrays.update(seq_indptr=indptr, seq_items=items)
        meta["max_len"] = int(model.max_len)

    def write(target, graph_bytes: bytes, extra: dict | None = None) -> Path:
        return bundle.write_bundle(target, BUNDLE_KIND, model.get_params(), arrays, meta={**meta, **(extra or {})},
                                   files={MODEL_FILE: graph_bytes})

    if quantize is None:
        return write(path, graph)
    with tempfile.TemporaryDirectory(prefix="recsys-fast-quantize-") as work:
        fp32_dir = write(Path(work) / "fp32", graph)
        int8_graph, record = quantize_bundle(fp32_dir, quantize, calibration, max_ndcg_drop, write, Path(work))
    return write(path, int8_graph, {"quantization": record})


def export_graph(model, family: str) -> bytes:
    """The serialized, checked ONNX graph (scores network + top-k head) of ``model``."""
    onnx = _require("onnx")
    torch = _require("torch", extra="train")
    module, example = _scoring_network(model, family, torch)
    names = list(FAMILY_INPUTS[family])
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, buf, dynamo=False, opset_version=OPSET, input_names=names,
                          output_names=["all_scores"],
                          dynamic_axes={**{n: {0: "batch"} for n in names}, "all_scores": {0: "batch"},
                                        **({"history": {0: "batch", 1: "n_history"}} if family == "history" else {})})
    proto = onnx.load_from_string(buf.getvalue())
    _add_topk_head(proto, onnx)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _scoring_network(model, family: str, torch):
    """(module in eval mode on CPU, example inputs) for the export."""
    n_users, n_items = model.n_users, model.n_items
    if family == "history":
        module = _HistorySum(torch, model.weights_)
        return module.eval(), (torch.full((2, 3), n_items, dtype=torch.long),)
    module = model.scoring_module().to("cpu").eval()
    if family == "users":
        return module, (torch.zeros(2, dtype=torch.long),)
    if family == "rows":
        return module, (torch.zeros((2, n_items), dtype=torch.float32),)
    seq = torch.ones((2, model.max_len), dtype=torch.long)
    if family == "sequence":
        return module, (seq,)
    return module, (seq, torch.tensor([0, n_users], dtype=torch.long))


def _HistorySum(torch, weights: np.ndarray):
    """EASE as gathered weight rows: scores = sum of B's rows of the (distinct) history items, the
    same as binary row x B but reading only those rows (a dense row x B would read all of B)."""

    class HistorySum(torch.nn.Module):
        def __init__(self):
            super().__init__()
            w = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32))
            self.register_buffer("weights", torch.cat([w, torch.zeros((1, w.shape[1]))], dim=0))

        def forward(self, history):
            return self.weights[history].sum(dim=1)

    return HistorySum()


def _add_topk_head(proto, onnx) -> None:
    """Replace the graph's output ``all_scores`` [batch, n_items] by exclusion + ``TopK``."""
    from onnx import TensorProto, helper, numpy_helper

    g = proto.graph
    scores = g.output[0].name
    del g.output[:]
    g.input.extend([helper.make_tensor_value_info("exclude", TensorProto.INT64, ["batch", "n_exclude"]),
                    helper.make_tensor_value_info("k", TensorProto.INT64, [1])])
    g.initializer.extend([numpy_helper.from_array(np.array(0, np.int64), "head_zero"),
                          numpy_helper.from_array(np.array(-np.inf, np.float32), "head_neg_inf"),
                          numpy_helper.from_array(np.array(np.inf, np.float32), "head_pos_inf")])
    g.node.extend([
        helper.make_node("GreaterOrEqual", ["exclude", "head_zero"], ["head_valid"], name="head_valid"),
        helper.make_node("Max", ["exclude", "head_zero"], ["head_index"], name="head_index"),
        helper.make_node("Where", ["head_valid", "head_neg_inf", "head_pos_inf"], ["head_updates"],
                         name="head_updates"),
        helper.make_node("ScatterElements", [scores, "head_index", "head_updates"], ["head_masked"], axis=1,
                         reduction="min", name="head_exclude"),
        helper.make_node("TopK", ["head_masked", "k"], ["scores", "head_items"], axis=1, largest=1, sorted=1,
                         name="head_topk"),
        helper.make_node("Identity", ["head_items"], ["items"], name="head_items_out"),
    ])
    g.output.extend([helper.make_tensor_value_info("items", TensorProto.INT64, ["batch", "k"]),
                     helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "k"])])


def _require(module: str, extra: str = "export"):
    try:
        return __import__(module)
    except ImportError:
        raise MissingExtraError(module, extra) from None


def _versions() -> dict:
    out = {"recsys_fast": __version__}
    for name in ("torch", "onnx", "onnxscript", "onnxruntime", "numpy"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out
