"""BPRMF: matrix factorisation trained with the BPR pairwise loss (Rendle et al. 2009)."""

from __future__ import annotations

from ...data.interactions import Interactions
from .base import MFFactors, NeuralRecommender
from .samplers import PairSampler


class BPRMF(MFFactors, NeuralRecommender):
    """Matrix factorisation with item biases, trained on (user, positive, sampled negative)
    triples with the BPR loss and Adam.

    ``weight_decay`` is an L2 penalty on the embeddings of each batch (the usual BPR
    regularisation, not a decay of the whole table); ``negatives`` is "uniform" or
    "popularity". Scoring network: ``MF``, ``forward(users int64 (b,)) -> (b, n_items)``; ranking (``recommend``, ``evaluate``,
    ``batch.score``) uses its factors through ``FactorModel`` (sgemm + Numba top-k), ``similar_items`` their cosine.
    """

    kind = "bprmf"
    decay_in_optimizer = False

    def __init__(self, embedding_size: int = 64, epochs: int = 40, learning_rate: float = 0.005,
                 weight_decay: float = 1e-4, batch_size: int = 1024, n_negatives: int = 1, seed: int | None = 0,
                 device: str = "auto", early_stopping_patience: int | None = 5, validation_fraction: float = 0.1,
                 n_threads: int | None = None, verbose: bool = False, negatives: str = "uniform"):
        self._init_params(locals())

    def _prepare(self, fit_data: Interactions) -> None:
        self._sampler = PairSampler(fit_data.matrix, self.n_negatives, self.negatives)

    def _build_module(self):
        from ._torch import torch
        from .nets import MF

        module = MF(self.n_users_, self.n_items_, self.embedding_size)
        torch().nn.init.normal_(module.user.weight, std=0.1)
        torch().nn.init.normal_(module.item.weight, std=0.1)
        return module

    def _build_scoring_module(self):
        from .nets import MF

        return MF(self.n_users_, self.n_items_, self.embedding_size)

    def _train_batches(self, rng, epoch):
        return self._sampler.epoch(rng, self.batch_size)

    def _batch_loss(self, module, batch, step):
        from . import losses

        users, pos, neg = (self._tensor(x) for x in batch)
        s_pos, u, v_pos = module.pair_scores(users, pos)
        s_neg, _, v_neg = module.pair_scores(users, neg)
        reg = (u.pow(2).sum() + v_pos.pow(2).sum() + v_neg.pow(2).sum()) / (2 * len(users))
        return losses.bpr(s_pos, s_neg) + self.weight_decay * reg
