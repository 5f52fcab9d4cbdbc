"""The library's recommender contract (recsys_fast.testing) on every neural model."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from recsys_fast.testing import RecommenderContract  # noqa: E402

SMALL = dict(embedding_size=8, epochs=3, n_threads=1, validation_fraction=0.0)


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
        return _cls("SASRec")(max_len=6, n_blocks=1, **SMALL)


class TestGRU4RecContract(RecommenderContract):
    def make_model(self):
        return _cls("GRU4Rec")(max_len=6, hidden_size=8, **SMALL)


class TestCaserContract(RecommenderContract):
    def make_model(self):
        return _cls("Caser")(max_len=3, n_horizontal=2, n_vertical=2, **SMALL)
