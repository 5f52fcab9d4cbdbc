"""LightGCN: layer-averaged embedding propagation on the normalised user-item graph."""

from __future__ import annotations

from ... import validation

from ...data.interactions import Interactions
from .base import MFFactors, NeuralRecommender
from .samplers import PairSampler, normalized_adjacency


class LightGCN(MFFactors, NeuralRecommender):
    """LightGCN (He et al. 2020) trained with BPR on sampled negatives.

    ``n_layers`` propagation steps over D^-1/2 A D^-1/2; ``weight_decay`` is the L2 penalty on the
    batch's ego (layer-0) embeddings, as in the paper. Training propagates on the graph of the
    training data less the validation items; the fitted model propagates once more on the full
    training graph and keeps the final embeddings. Scoring network: ``MF`` of the final
    embeddings (no bias), ``forward(users int64 (b,)) -> (b, n_items)``.
    """

    kind = "lightgcn"
    decay_in_optimizer = False

    def __init__(self, embedding_size: int = 64, epochs: int = 60, learning_rate: float = 0.01,
                 weight_decay: float = 1e-4, batch_size: int = 4096, n_negatives: int = 1, seed: int | None = 0,
                 device: str = "auto", early_stopping_patience: int | None = 5, validation_fraction: float = 0.1,
                 n_threads: int | None = None, verbose: bool | None = None, n_layers: int = 3):
        self._init_params(locals())

    def _check_params(self, p: dict) -> dict:
        p = super()._check_params(p)
        p["n_layers"] = validation.integer("n_layers", p["n_layers"], minimum=1)
        return p

    def _update(self, combined, user_pos, item_pos, new_in) -> None:
        """Fold-in on the final (propagated) embeddings, item side fixed (see
        ``NeuralRecommender._fold_in_update``); the propagation itself is not rerun."""
        self._fold_in_update(combined, user_pos, new_in)

    def _prepare(self, fit_data: Interactions) -> None:
        self._sampler = PairSampler(fit_data.matrix, self.n_negatives, "uniform")
        self._adjacency = normalized_adjacency(fit_data.matrix)

    def _build_module(self):
        from .nets import LightGCNNet

        return LightGCNNet(self.n_users_, self.n_items_, self.embedding_size, self.n_layers,
                           self._adjacency.to(self.device_))

    def _train_batches(self, rng, epoch):
        return self._sampler.epoch(rng, self.batch_size)

    def _batch_loss(self, module, batch, step):
        from . import losses

        from ._torch import torch

        users, pos, neg = (self._tensor(x) for x in batch)
        b = len(users)
        # one gather of the final embeddings (users, then positives, then negatives), so the
        # propagation runs once per batch and its gradient comes back in one pass
        rows = torch().cat([users, pos + self.n_users_, neg.reshape(-1) + self.n_users_])
        final, ego = module.propagated_rows(rows)
        u, p, n = final[:b], final[b:2 * b], final[2 * b:].reshape(b, -1, final.shape[1])
        s_pos = (u * p).sum(-1)
        s_neg = (u.unsqueeze(1) * n).sum(-1)
        reg = ego.pow(2).sum() / (2 * b)  # the batch's ego embeddings
        return losses.bpr(s_pos, s_neg) + self.weight_decay * reg

    def _finalize(self, module, train: Interactions):
        from ._torch import torch
        from .nets import MF

        module.adjacency = normalized_adjacency(train.matrix).to(self.device_)
        with torch().no_grad():
            u, i = module.propagate()
        scorer = MF(self.n_users_, self.n_items_, self.embedding_size, item_bias=False)
        with torch().no_grad():
            scorer.user.weight.copy_(u)
            scorer.item.weight.copy_(i)
        del self._adjacency
        return scorer.to(self.device_)

    def _build_scoring_module(self):
        from .nets import MF

        return MF(self.n_users_, self.n_items_, self.embedding_size, item_bias=False)
