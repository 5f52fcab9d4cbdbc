"""The library's recommender contract (recsys_fast.testing) on every neural model."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from recsys_fast.testing import RecommenderContract  # noqa: E402

# Small networks, trained long enough (small batches: many steps on the 48-user contract data)
# to learn its planted taste groups; chosen so each model's share clears the threshold with a
# margin (mean share over seeds 0-2 >= 0.85; about 0.3 after 3 epochs of one batch each).
SMALL = dict(embedding_size=8, epochs=20, batch_size=32, learning_rate=0.01, n_threads=1, validation_fraction=0.0)
SEQUENTIAL = {**SMALL, "epochs": 40, "batch_size": 16}


def _cls(name):
    from recsys_fast.models import neural

    return getattr(neural, name)


class TestBPRMFContract(RecommenderContract):
    def make_model(self):
        return _cls("BPRMF")(**SMALL)


class TestNeuMFContract(RecommenderContract):
    def make_model(self):
        return _cls("NeuMF")(layers=(8,), **SMALL)


class TestLightGCNContract(RecommenderContract):
    def make_model(self):
        return _cls("LightGCN")(n_layers=2, **SMALL)


class TestMultVAEContract(RecommenderContract):
    def make_model(self):
        return _cls("MultVAE")(hidden_size=16, **SMALL)


class TestSASRecContract(RecommenderContract):
    def make_model(self):
        return _cls("SASRec")(max_len=6, n_blocks=1, **SEQUENTIAL)


class TestGRU4RecContract(RecommenderContract):
    def make_model(self):
        return _cls("GRU4Rec")(max_len=6, hidden_size=8, **{**SEQUENTIAL, "learning_rate": 0.02})


class TestCaserContract(RecommenderContract):
    def make_model(self):
        return _cls("Caser")(max_len=3, n_horizontal=2, n_vertical=2, **{**SMALL, "learning_rate": 0.005})
