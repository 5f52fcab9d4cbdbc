"""int8 export behind the NDCG@10 gate, on real data (ml-latest-small), and ``recsys-fast export``."""

from __future__ import annotations


import numpy as np
import pytest

from recsys_fast import bundle, serving, split
from recsys_fast.cli import main
from recsys_fast.errors import ParameterError, QuantizationError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from .conftest import tiny_model  # noqa: E402

RECORD_KEYS = {"mode", "method", "ndcg@10_fp32", "ndcg@10_int8", "ndcg_drop", "max_ndcg_drop", "validation",
               "bytes_fp32", "bytes_int8", "latency_batch1_p50_ms_fp32", "latency_batch1_p50_ms_int8", "latency"}


@pytest.fixture(scope="module")
def bprmf(ml_small):
    return tiny_model("BPRMF", ml_small)


def _ndcg10(runtime, data) -> float:
    from recsys_fast.evaluation import evaluate
    from recsys_fast.export.quantize import VALIDATION_SPLIT

    train, test = split.holdout(data, test_fraction=VALIDATION_SPLIT["test_fraction"], seed=VALIDATION_SPLIT["seed"])
    return evaluate(runtime, train, test, k=10, metrics=["ndcg"]).means["ndcg@10"]


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_export_records_what_it_measured(bprmf, ml_small, tmp_path, mode):
    from recsys_fast.export import to_onnx

    fp32_path = to_onnx(bprmf, tmp_path / "fp32")
    path = to_onnx(bprmf, tmp_path / mode, quantize=mode, calibration=ml_small, max_ndcg_drop=0.05)
    record = bundle.read_manifest(path)["meta"]["quantization"]
    assert set(record) == RECORD_KEYS and record["mode"] == mode
    int8, fp32 = serving.load(path, n_threads=1), serving.load(fp32_path, n_threads=1)
    # the recorded figures are those of the graphs as served, on the documented split
    assert record["ndcg@10_int8"] == pytest.approx(_ndcg10(int8, ml_small), rel=1e-9)
    assert record["ndcg@10_fp32"] == pytest.approx(_ndcg10(fp32, ml_small), rel=1e-9)
    assert record["ndcg_drop"] == pytest.approx(record["ndcg@10_fp32"] - record["ndcg@10_int8"])
    assert record["ndcg_drop"] <= 0.05
    assert record["bytes_fp32"] == (fp32_path / "model.onnx").stat().st_size
    assert record["bytes_int8"] == (path / "model.onnx").stat().st_size < record["bytes_fp32"]
    assert record["latency_batch1_p50_ms_int8"] > 0 and record["latency_batch1_p50_ms_fp32"] > 0
    assert int8.metadata["quantization"]["mode"] == mode
    import onnx

    ops = {n.op_type for n in onnx.load(str(path / "model.onnx")).graph.node}
    assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "QuantizeLinear", "DequantizeLinear", "QLinearMatMul"}
    assert "TopK" in ops  # the head is kept
    users = bprmf.user_map_.ids[:20]
    got, ref = int8.recommend(users, k=10), fp32.recommend(users, k=10)
    assert got.items.shape == ref.items.shape and (got.items >= 0).all()
    seen = bprmf.seen_
    for r, u in enumerate(bprmf.user_map_.to_index(users)):  # exclusions still hold in the int8 graph
        internal = bprmf.item_map_.to_index(got.items[r])
        assert not np.isin(internal, seen.indices[seen.indptr[u]:seen.indptr[u + 1]]).any()


def test_a_drop_above_the_limit_is_refused_naming_both_figures(bprmf, ml_small, tmp_path):
    from recsys_fast.export import to_onnx

    # an int8 graph would have to gain a whole NDCG point to pass max_ndcg_drop=-1: never
    with pytest.raises(QuantizationError, match=r"NDCG@10 \d\.\d+ against fp32 \d\.\d+.*max_ndcg_drop -1") as info:
        to_onnx(bprmf, tmp_path / "refused", quantize="dynamic", calibration=ml_small, max_ndcg_drop=-1)
    assert info.value.ndcg_fp32 > 0 and info.value.ndcg_int8 > 0
    assert f"{info.value.ndcg_fp32:.5f}" in str(info.value) and f"{info.value.ndcg_int8:.5f}" in str(info.value)
    assert not (tmp_path / "refused").exists()


def test_quantize_arguments_are_checked(bprmf, ml_small, tmp_path):
    from recsys_fast.export import to_onnx

    with pytest.raises(ParameterError, match="quantize must be one of None, 'dynamic', 'static', got 'int4'"):
        to_onnx(bprmf, tmp_path / "x", quantize="int4", calibration=ml_small)
    with pytest.raises(ParameterError, match="calibration must be recsys_fast.Interactions"):
        to_onnx(bprmf, tmp_path / "x", quantize="dynamic")
    with pytest.raises(ParameterError, match="max_ndcg_drop"):
        to_onnx(bprmf, tmp_path / "x", quantize="dynamic", calibration=ml_small, max_ndcg_drop=float("nan"))
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------- recsys-fast export
def test_recsys_fast_export_end_to_end(ml_latest_small_path, tmp_path, capsys):
    pytest.importorskip("torch")
    from recsys_fast import load

    saved = tmp_path / "bprmf"
    assert main(["train", str(ml_latest_small_path), "--model", "bprmf", "--param", "epochs=1",
                 "--param", "embedding_size=16", "--param", "batch_size=4096", "--param", "validation_fraction=0.0",
                 "--param", "seed=0", "--param", "device=\"cpu\"", "--out", str(saved)]) == 0
    out = tmp_path / "served"
    assert main(["export", str(saved), "--out", str(out)]) == 0
    assert f"recsys-fast serve {out}" in capsys.readouterr().out
    model, runtime = load(saved), serving.load(out)
    users = model.user_map_.ids[:10]
    np.testing.assert_array_equal(runtime.recommend(users, k=10).items, model.recommend(users, k=10).items)
    assert "quantization" not in bundle.read_manifest(out)["meta"]

    q = tmp_path / "served_int8"
    assert main(["export", str(saved), "--out", str(q), "--quantize", "dynamic", "--max-ndcg-drop", "0.05",
                 "--data", str(ml_latest_small_path)]) == 0
    printed = capsys.readouterr().out
    record = bundle.read_manifest(q)["meta"]["quantization"]
    assert f"NDCG@10 {record['ndcg@10_int8']:.5f} vs fp32 {record['ndcg@10_fp32']:.5f}" in printed
    assert serving.load(q).recommend(users, k=10).items.shape == (10, 10)

    refused = tmp_path / "refused"
    assert main(["export", str(saved), "--out", str(refused), "--quantize", "dynamic", "--max-ndcg-drop", "-1",
                 "--data", str(ml_latest_small_path)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "against fp32" in err and not refused.exists()


def test_recsys_fast_export_refusals(ml_small, tmp_path, capsys):
    from recsys_fast.models.knn import ItemKNN

    knn = ItemKNN(k=20).fit(ml_small).save(tmp_path / "knn")
    assert main(["export", str(knn), "--out", str(tmp_path / "o")]) == 2
    assert "model must be one of the neural models" in capsys.readouterr().err
    assert main(["export", str(knn), "--out", str(tmp_path / "o"), "--quantize", "static"]) == 2
    assert "--quantize: needs --data" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
