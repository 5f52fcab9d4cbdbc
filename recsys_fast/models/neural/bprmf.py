"""BPRMF: matrix factorisation trained with the BPR pairwise loss (Rendle et al. 2009)."""

from __future__ import annotations

from ...data.interactions import Interactions
from .base import MFFactors, NeuralRecommender
from .samplers import PairSampler


class BPRMF(MFFactors, NeuralRecommender):
    """Matrix factorisation with item biases, trained on (user, positive, sampled negative)
    triples with the BPR loss.

    Training runs one fused Numba kernel per epoch (``kernels.bpr``): every positive once, in a
    shuffled order, with ``n_negatives`` negatives drawn per positive (never one of the user's
    items; ``negatives`` is "uniform" or "popularity"), each sample updating its user row, its two
    item rows and their biases at once with Adam kept per row (Hogwild over ``n_threads``
    threads). ``weight_decay`` is the L2 penalty on the three embedding rows of each sample;
    ``batch_size`` is the number of samples per parallel block, each block drawing its negatives
    from its own seeded stream. With ``n_threads=1`` a seed gives the same model bit for bit;
    with more threads, concurrent updates of shared rows make runs differ within seed noise.
    Training is on the CPU whatever ``device`` is; scoring runs on ``device``.
    Scoring network: ``MF``, ``forward(users int64 (b,)) -> (b, n_items)``; ranking (``recommend``,
    ``evaluate``, ``batch.score``) uses its factors through ``FactorModel`` (sgemm + Numba top-k),
    ``similar_items`` their cosine.
    """

    kind = "bprmf"
    decay_in_optimizer = False

    def __init__(self, embedding_size: int = 64, epochs: int = 40, learning_rate: float = 0.005,
                 weight_decay: float = 0.02, batch_size: int = 1024, n_negatives: int = 1, seed: int | None = 0,
                 device: str = "auto", early_stopping_patience: int | None = 5, validation_fraction: float = 0.1,
                 n_threads: int | None = None, verbose: bool | None = None, negatives: str = "uniform"):
        self._init_params(locals())

    def _update(self, combined, user_pos, item_pos, new_in) -> None:
        self._fold_in_update(combined, user_pos, new_in)

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

    def _fused_epoch(self, module, rng, epoch) -> float:
        from ...kernels.bpr import bpr_epoch, new_adam_state
        from ._torch import to_numpy

        on_cpu = module.user.weight.device.type == "cpu"
        if epoch == 0:  # on the CPU the kernel writes the module's own storage; elsewhere a copy
            tables = [module.user.weight, module.item.weight, module.bias]
            self._tables = [p.detach().numpy() if on_cpu else to_numpy(p).copy() for p in tables]
            self._adam = new_adam_state(self.n_users_, self.n_items_, self.embedding_size)
        s = self._sampler
        order = rng.permutation(len(s))
        seed = int(rng.integers(0, 2 ** 63))
        loss = bpr_epoch(*self._tables, self._adam, s.indptr, s.indices, s.users, s.items, order, seed,
                         self.learning_rate, self.weight_decay, self.n_negatives, s.cdf, self.batch_size)
        if not on_cpu:
            from ._torch import torch

            for p, a in zip([module.user.weight, module.item.weight, module.bias], self._tables):
                p.data.copy_(torch().from_numpy(a))
        return loss / max(len(s) * self.n_negatives, 1)

    def _finalize(self, module, train):
        self.__dict__.pop("_tables", None)
        self.__dict__.pop("_adam", None)
        self.__dict__.pop("_sampler", None)
        return module
