"""The serving runtime: every bundle kind loads, torch stays out of the process, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from recsys_fast import serving
from recsys_fast.errors import BundleError

from .conftest import assert_same_topk

BLOCK_TORCH = textwrap.dedent("""
    import sys

    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this process")

    sys.meta_path.insert(0, BlockTorch())
""")


def _knn_bundle(ml_small, tmp_path):
    from recsys_fast.models.knn import ItemKNN

    model = ItemKNN(k=50).fit(ml_small)
    return model, model.save(tmp_path / "item_knn")


def _als_bundle(ml_small, tmp_path):
    from recsys_fast.models.als import ALS

    model = ALS(embedding_size=16, epochs=3, seed=0).fit(ml_small)
    return model, model.save(tmp_path / "als")


def test_serving_works_where_torch_cannot_be_imported(exported, ml_small, tmp_path):
    model, onnx_path = exported("SASRec")
    knn, knn_path = _knn_bundle(ml_small, tmp_path)
    als, als_path = _als_bundle(ml_small, tmp_path)
    users = [int(u) for u in model.user_map_.ids[:3]]
    code = BLOCK_TORCH + textwrap.dedent(f"""
        import json
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("the blocker did not work")
        from recsys_fast import serving, load
        out = {{}}
        for name, path in (("onnx", {str(onnx_path)!r}), ("knn", {str(knn_path)!r}), ("als", {str(als_path)!r})):
            rt = serving.load(path).prepare()
            out[name] = rt.recommend({users!r}, k=5).items.tolist()
        load({str(knn_path)!r})  # the model loader for kNN bundles imports no torch either
        assert "torch" not in sys.modules
        print(json.dumps(out))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["onnx"] == model.recommend(users, k=5).items.tolist()
    assert out["knn"] == knn.recommend(users, k=5).items.tolist()
    assert out["als"] == als.recommend(users, k=5).items.tolist()


def test_kernel_bundles_are_served_as_saved(ml_small, tmp_path):
    from recsys_fast.models.popularity import Popularity

    knn, path = _knn_bundle(ml_small, tmp_path)
    rt = serving.load(path).prepare()
    users = knn.user_map_.ids[:20]
    assert_same_topk(knn.recommend(users, k=10), rt.recommend(users, k=10))
    items = knn.item_map_.ids[:2]
    assert np.array_equal(rt.similar_items(items, k=5).ids, knn.similar_items(items, k=5).ids)
    idx, scores = rt.recommend_indices(np.arange(5), 10, exclude="seen")
    ref = knn.recommend_indices(np.arange(5), 10, exclude="seen")
    assert np.array_equal(idx, ref[0])
    assert rt.metadata["kind"] == "item_knn" and rt.n_items == knn.n_items
    pop = Popularity().fit(ml_small)
    prt = serving.load(pop.save(tmp_path / "pop"))
    assert_same_topk(pop.recommend(users, k=10), prt.recommend(users, k=10))
    with pytest.raises(TypeError, match="no item-item scores"):
        prt.similar_items(items)
    als, als_path = _als_bundle(ml_small, tmp_path)
    art = serving.load(als_path, n_threads=1).prepare()
    assert art.metadata["kind"] == "als"
    assert_same_topk(als.recommend(users, k=10), art.recommend(users, k=10))
    assert np.array_equal(art.similar_items(items, k=5).ids, als.similar_items(items, k=5).ids)
    history = {"new-user": list(als.item_map_.ids[:5])}
    assert_same_topk(als.recommend(["new-user"], k=10, history=history),
                     art.recommend(["new-user"], k=10, history=history))


def test_saved_neural_bundle_names_the_export_command(exported, tmp_path):
    model, _ = exported("BPRMF")
    path = model.save(tmp_path / "bprmf")
    with pytest.raises(BundleError, match="recsys-fast export"):
        serving.load(path)


def test_graph_takes_k_and_exclusions_as_inputs(exported):
    import onnx
    import onnxruntime as ort

    from recsys_fast import bundle

    model, path = exported("BPRMF")
    manifest = bundle.read_manifest(path)
    assert manifest["kind"] == "onnx" and manifest["meta"]["model_kind"] == "bprmf"
    assert all(len(e["sha256"]) == 64 for e in manifest["files"].values())
    raw = (path / "model.onnx").read_bytes()
    proto = onnx.load_from_string(raw)
    onnx.checker.check_model(proto)
    assert proto.graph.node[-2].op_type == "TopK"
    assert [i.name for i in proto.graph.input] == ["users", "exclude", "k"]
    sess = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    users = np.array([0, 1, 2, 3, 4], np.int64)
    for k in (1, 7):
        exclude = np.array([[3, -1], [-1, -1], [0, 1], [-1, -1], [-1, -1]], np.int64)
        items, scores = sess.run(["items", "scores"], {"users": users, "exclude": exclude, "k": np.array([k], np.int64)})
        assert items.shape == (5, k) and scores.shape == (5, k)
        assert 3 not in items[0] and 0 not in items[2] and 1 not in items[2]
        assert (np.diff(scores, axis=1) <= 0).all()


def test_runtime_is_safe_from_many_threads(exported):
    model, path = exported("GRU4Rec")
    rt = serving.load(path, n_threads=1).prepare()
    users = model.user_map_.ids[:40]
    expected = rt.recommend(users, k=10).items
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda u: rt.recommend([u], k=10).items[0], list(users) * 5))
    assert np.array_equal(np.array(results), np.tile(expected, (5, 1)))


def test_unavailable_provider_is_a_clear_error(exported):
    _, path = exported("BPRMF")
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        serving.load(path, providers=["NoSuchExecutionProvider"])


def test_cuda_provider_parity(exported):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDAExecutionProvider (needs onnxruntime-gpu and a CUDA device); CPU parity is tested above")
    model, path = exported("SASRec")
    rt = serving.load(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    users = model.user_map_.ids[:32]
    assert_same_topk(model.recommend(users, k=10), rt.recommend(users, k=10), rtol=1e-4)


def test_the_history_graph_runs_in_chunks_bounded_in_memory(exported, monkeypatch):
    """EASE's graph gathers [users, longest history, n_items] floats: a batch is cut so that each
    run stays under the budget (a batch of long histories once asked onnxruntime for 24 GB)."""
    from recsys_fast.serving import runtime as runtime_module

    model, path = exported("EASE")
    rt = serving.load(path, n_threads=1)
    users = model.user_map_.ids[:64]
    whole = rt.recommend(users, k=10)
    budget = 3 * 40 * rt.n_items * 4  # three users of 40 items, or fewer users with longer ones
    monkeypatch.setattr(runtime_module, "GATHER_BUDGET_BYTES", budget)
    batch = rt.batch_for_users(np.arange(64), rt.seen_)
    chunks = rt._chunks(batch)
    lengths = np.maximum(np.diff(batch.hist_indptr), 1)
    assert chunks[0][0] == 0 and chunks[-1][1] == 64 and len(chunks) > 3
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    for start, stop in chunks:
        held = (stop - start) * lengths[start:stop].max() * rt.n_items * 4
        assert held <= budget or stop - start == 1
    assert_same_topk(whole, rt.recommend(users, k=10))
