"""int8 quantization of an exported graph, behind a quality gate.

``quantize_bundle(fp32_dir, mode, calibration, max_ndcg_drop, write)`` quantizes the ``model.onnx``
of an fp32 serving bundle with ``onnxruntime.quantization`` and measures both graphs as they are
served (``recsys_fast.serving.load``, one intra-op thread):

- a validation split of ``calibration`` (per-user holdout, 20%, seed 0): NDCG@10 of each graph by
  the library's full-ranking evaluation (the split's train part excluded), on the same users;
- the graph sizes (bytes) and the batch-1 latency of each runtime (``recommend([user], k=10)``,
  p50 over ``LATENCY_REQUESTS`` requests after warm-up, ids mapped and seen items excluded);
- ``"static"`` also calibrates activation ranges (MinMax, QDQ format) on batches of the split's
  train users, fed exactly as requests feed the graph.

The numbers go into the manifest (``meta["quantization"]``); when the fp32 NDCG@10 minus the
int8 NDCG@10 exceeds ``max_ndcg_drop``, ``QuantizationError`` names both figures and nothing is
written. The graph's exclusion + TopK head stays in float (only the scoring network is quantized).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from pathlib import Path

import numpy as np

from ..errors import QuantizationError

MODES = ("dynamic", "static")
VALIDATION_SPLIT = {"split": "holdout", "test_fraction": 0.2, "seed": 0}
LATENCY_REQUESTS = 200
CALIBRATION_USERS = 512
CALIBRATION_BATCH = 64
HEAD_NODES = ("head_valid", "head_index", "head_updates", "head_exclude", "head_topk", "head_items_out")


def quantize_bundle(fp32_dir: Path, mode: str, calibration, max_ndcg_drop: float, write,
                    work_dir: Path) -> tuple[bytes, dict]:
    """Quantize the bundle at ``fp32_dir`` and gate it: ``(int8 graph, the manifest's quantization record)``.

    ``write(path, graph_bytes)`` writes a serving bundle with that graph (the int8 candidate, in
    ``work_dir``); the caller writes the final bundle with the int8 graph once this returns.
    Raises ``QuantizationError`` when the NDCG@10 drop exceeds ``max_ndcg_drop``.
    """
    from .. import split
    from ..serving import load

    fp32 = load(fp32_dir, n_threads=1).prepare()
    val_train, val_test = split.holdout(calibration, test_fraction=VALIDATION_SPLIT["test_fraction"],
                                        seed=VALIDATION_SPLIT["seed"])
    known = fp32.user_map_.to_index(val_train.user_map.ids, on_unknown="pad")
    known = known[known >= 0]
    if not len(known):
        raise QuantizationError("calibration shares no user with the model: pass interactions of the model's users")
    int8_graph = _quantize(Path(fp32_dir) / "model.onnx", mode, fp32, known, Path(work_dir))
    int8 = load(write(Path(work_dir) / "int8", int8_graph), n_threads=1).prepare()
    ndcg_fp32 = _ndcg10(fp32, val_train, val_test)
    ndcg_int8 = _ndcg10(int8, val_train, val_test)
    users = fp32.user_map_.ids[np.sort(known)[:LATENCY_REQUESTS]]
    record = {
        "mode": mode,
        "method": ("dynamic int8 weights (QInt8), activations quantized per batch at run time" if mode == "dynamic"
                   else f"static QDQ int8 (MinMax ranges from {min(len(known), CALIBRATION_USERS)} calibration users)"),
        "ndcg@10_fp32": ndcg_fp32,
        "ndcg@10_int8": ndcg_int8,
        "ndcg_drop": ndcg_fp32 - ndcg_int8,
        "max_ndcg_drop": float(max_ndcg_drop),
        "validation": {**VALIDATION_SPLIT, "users": int(val_test.n_users), "test_interactions": int(val_test.nnz)},
        "bytes_fp32": (Path(fp32_dir) / "model.onnx").stat().st_size,
        "bytes_int8": len(int8_graph),
        "latency_batch1_p50_ms_fp32": _p50_ms(fp32, users),
        "latency_batch1_p50_ms_int8": _p50_ms(int8, users),
        "latency": f"recommend([user], k=10), p50 of {len(users)} requests, 1 intra-op thread",
    }
    if record["ndcg_drop"] > max_ndcg_drop:
        raise QuantizationError(
            f"int8 ({mode}) graph refused: NDCG@10 {ndcg_int8:.5f} against fp32 {ndcg_fp32:.5f}, a drop of "
            f"{record['ndcg_drop']:.5f} > max_ndcg_drop {max_ndcg_drop:g} (validation split of calibration: "
            f"{val_test.n_users} users); nothing was written. Export without quantize, try the other mode, or "
            f"raise max_ndcg_drop knowingly", ndcg_fp32=ndcg_fp32, ndcg_int8=ndcg_int8)
    return int8_graph, record


def _quantize(fp32_path: Path, mode: str, fp32_runtime, known_users: np.ndarray, work_dir: Path) -> bytes:
    try:
        from onnxruntime import quantization as q
    except ImportError:
        from ..errors import MissingExtraError

        raise MissingExtraError("onnxruntime", "export") from None
    out = work_dir / f"model.{mode}.onnx"
    with warnings.catch_warnings(), _quiet_root_logger():
        warnings.simplefilter("ignore")
        if mode == "dynamic":
            q.quantize_dynamic(fp32_path, out, weight_type=q.QuantType.QInt8, nodes_to_exclude=list(HEAD_NODES))
        else:
            users = np.sort(known_users)[:CALIBRATION_USERS]
            batches = [fp32_runtime.graph_inputs(users[i:i + CALIBRATION_BATCH])
                       for i in range(0, len(users), CALIBRATION_BATCH)]
            q.quantize_static(fp32_path, out, _Reader(q.CalibrationDataReader, batches),
                              quant_format=q.QuantFormat.QDQ, activation_type=q.QuantType.QInt8,
                              weight_type=q.QuantType.QInt8, calibrate_method=q.CalibrationMethod.MinMax,
                              nodes_to_exclude=list(HEAD_NODES))
    return out.read_bytes()


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs advice ("consider pre-processing") on the root logger; keep it
    out of the caller's logs for the duration of the call (the filter is removed after)."""
    root = logging.getLogger()

    def drop(record):
        return not record.name == "root" or record.levelno > logging.WARNING

    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _Reader(base, batches):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over prepared feed dicts."""

    class Reader(base):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

        def rewind(self):
            self.it = iter(batches)

    return Reader()


def _ndcg10(runtime, val_train, val_test) -> float:
    from ..evaluation import evaluate

    return float(evaluate(runtime, val_train, val_test, k=10, metrics=["ndcg"]).means["ndcg@10"])


def _p50_ms(runtime, users) -> float:
    for u in users[:10]:
        runtime.recommend([u], k=10)
    times = np.empty(len(users))
    for i, u in enumerate(users):
        t0 = time.perf_counter()
        runtime.recommend([u], k=10)
        times[i] = time.perf_counter() - t0
    return float(np.median(times) * 1e3)
