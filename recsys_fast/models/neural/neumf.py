"""NeuMF: neural collaborative filtering with GMF and MLP towers."""

from __future__ import annotations

from ...errors import ParameterError

from ...data.interactions import Interactions
from .base import NeuralRecommender
from .samplers import PairSampler


class NeuMF(NeuralRecommender):
    """NeuMF (He et al. 2017) trained pointwise: binary cross-entropy on each positive and its
    ``n_negatives`` sampled negatives (uniform or popularity), Adam.

    ``embedding_size`` is the size of each tower's embeddings, ``layers`` the MLP widths,
    ``weight_decay`` Adam's L2. Scoring network: ``NeuMFNet``,
    ``forward(users int64 (b,)) -> (b, n_items)``.
    """

    kind = "neumf"
    inference_chunk = 128  # the MLP runs on (chunk x n_items x width) activations

    def __init__(self, embedding_size: int = 32, epochs: int = 30, learning_rate: float = 0.002,
                 weight_decay: float = 0.0, batch_size: int = 1024, n_negatives: int = 4, seed: int | None = 0,
                 device: str = "auto", early_stopping_patience: int | None = 3, validation_fraction: float = 0.1,
                 n_threads: int | None = None, verbose: bool | None = None, layers: tuple = (64, 32, 16),
                 dropout: float = 0.0, negatives: str = "uniform"):
        self._init_params(locals())

    def _check_params(self, p: dict) -> dict:
        p = super()._check_params(p)
        layers = p["layers"]
        ok = isinstance(layers, (tuple, list)) and len(layers) > 0 and all(
            isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in layers)
        if not ok:
            raise ParameterError("layers", layers, "a non-empty sequence of positive integer widths")
        p["layers"] = tuple(int(w) for w in layers)
        return p

    def _prepare(self, fit_data: Interactions) -> None:
        self._sampler = PairSampler(fit_data.matrix, self.n_negatives, self.negatives)

    def _build_module(self):
        from .nets import NeuMFNet

        return NeuMFNet(self.n_users_, self.n_items_, self.embedding_size, self.layers, self.dropout)

    def _train_batches(self, rng, epoch):
        return self._sampler.epoch(rng, self.batch_size)

    def _batch_loss(self, module, batch, step):
        from . import losses

        users, pos, neg = (self._tensor(x) for x in batch)
        return losses.bce(module.pair_scores(users, pos), module.pair_scores(users, neg))
