"""Every scoring network exports to ONNX as is (tensors in, scores out, dynamic batch) and
onnxruntime reproduces its scores: the export step can rely on ``scoring_module()``."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from .conftest import planted_clusters, planted_sequences  # noqa: E402

CASES = {
    "BPRMF": ("clusters", lambda m: (torch.tensor([0, 1, 2]),)),
    "NeuMF": ("clusters", lambda m: (torch.tensor([0, 1, 2]),)),
    "LightGCN": ("clusters", lambda m: (torch.tensor([0, 1, 2]),)),
    "MultVAE": ("clusters", lambda m: ((torch.rand(3, m.n_items) > 0.8).float(),)),
    "SASRec": ("sequences", lambda m: (torch.randint(0, m.n_items + 1, (3, m.max_len)),)),
    "GRU4Rec": ("sequences", lambda m: (torch.randint(0, m.n_items + 1, (3, m.max_len)),)),
    "Caser": ("sequences", lambda m: (torch.randint(0, m.n_items + 1, (3, m.max_len)),
                                      torch.tensor([0, 1, m.n_users_]))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_scoring_module_exports_to_onnx(name):
    from recsys_fast.models import neural

    source, make_inputs = CASES[name]
    data = planted_clusters(n_users=30) if source == "clusters" else planted_sequences(n_users=30)
    extra = {"max_len": 6} if name in ("SASRec", "GRU4Rec") else {}
    model = getattr(neural, name)(epochs=1, embedding_size=8, n_threads=1, validation_fraction=0.0, **extra).fit(data)
    module = model.scoring_module()
    inputs = make_inputs(model)
    names = [f"input{i}" for i in range(len(inputs))]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, buf, dynamo=False, input_names=names, output_names=["scores"],
                          dynamic_axes={**{n: {0: "batch"} for n in names}, "scores": {0: "batch"}})
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: x.numpy() for n, x in zip(names, inputs)})[0]
    with torch.no_grad():
        expected = module(*inputs).numpy()
    assert got.shape == (3, model.n_items)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
