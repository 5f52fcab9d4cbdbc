"""MultVAE: variational autoencoder over the user's item row with a multinomial likelihood."""

from __future__ import annotations

from ... import validation

import numpy as np

from ...data.interactions import Interactions
from ..base import RowBatch
from .base import NeuralRecommender
from .samplers import dense_rows, row_batches


class MultVAE(NeuralRecommender):
    """Mult-VAE^PR (Liang et al. 2018): loss = multinomial NLL + beta * KL, beta annealed linearly
    from 0 to ``anneal_cap`` over ``anneal_steps`` optimiser steps.

    ``embedding_size`` is the latent size, ``hidden_size`` the encoder/decoder width,
    ``dropout`` the input dropout. Scores users unseen in training from a ``history=`` (their row).
    Training steps the input layer lazily: its gradient is sparse (the batch's items) and a
    ``SparseAdam`` moves only those items' weights, so ``weight_decay`` (Adam's) applies to the
    other layers; the scoring network is unchanged.
    Scoring network: ``VAE``, ``forward(rows float32 (b, n_items), 1 where interacted) -> (b, n_items)``.
    """

    kind = "multvae"
    supports_history = True

    def __init__(self, embedding_size: int = 200, epochs: int = 200, learning_rate: float = 1e-3,
                 weight_decay: float = 0.0, batch_size: int = 128, seed: int | None = 0, device: str = "auto",
                 early_stopping_patience: int | None = 20, validation_fraction: float = 0.1,
                 n_threads: int | None = None, verbose: bool | None = None, hidden_size: int = 600,
                 dropout: float = 0.5, anneal_cap: float = 0.2, anneal_steps: int = 2000):
        self._init_params(locals())

    def _check_params(self, p: dict) -> dict:
        p = super()._check_params(p)
        p["hidden_size"] = validation.integer("hidden_size", p["hidden_size"], minimum=1)
        p["anneal_cap"] = validation.number("anneal_cap", p["anneal_cap"], minimum=0.0)
        p["anneal_steps"] = validation.integer("anneal_steps", p["anneal_steps"], minimum=0)
        return p

    def _prepare(self, fit_data: Interactions) -> None:
        self._rows = fit_data.matrix
        self._active = np.flatnonzero(np.diff(fit_data.matrix.indptr) > 0)

    def _build_module(self):
        from .nets import VAE

        # training form: the input layer's weights item-major with sparse gradients (a lazy
        # SparseAdam step on the batch's items, not a dense step of all n_items x hidden weights)
        return VAE(self.n_items_, self.hidden_size, self.embedding_size, self.dropout, sparse_input=True)

    def _build_scoring_module(self):
        from .nets import VAE

        return VAE(self.n_items_, self.hidden_size, self.embedding_size, self.dropout)

    def _train_batches(self, rng, epoch):
        return row_batches(self._rows.shape[0], self.batch_size, rng, rows=self._active)

    def _batch_loss(self, module, users, step):
        from . import losses

        # the batch's rows as their nonzeros: the input layer and the likelihood touch the rows'
        # items only (a dense (batch x n_items) input cost as much as the decoder)
        sub = self._rows[users]
        rows = self._tensor(np.repeat(np.arange(len(users)), np.diff(sub.indptr)))
        items = self._tensor(sub.indices)
        logits, mu, logvar = module.encode_decode_sparse(rows, items, len(users))
        beta = losses.kl_weight(step, self.anneal_steps, self.anneal_cap)
        return losses.multinomial_nll_sparse(logits, rows, items) + beta * losses.gaussian_kl(mu, logvar)

    def _user_inputs(self, users):
        return (self._tensor(dense_rows(self._rows, users), dtype=_float()),)

    def _update(self, combined, user_pos, item_pos, new_in) -> None:
        """MultVAE scores a user from its row: the new events are in the rows at once (new users
        too); the network is unchanged."""
        self._rows = combined.matrix
        self.n_users_ = combined.n_users

    def _finalize(self, module, train: Interactions):
        self._rows = train.matrix
        return module.scoring_form()

    def _scoring_inputs(self, batch: RowBatch):
        import scipy.sparse as sp

        n = len(batch.user_index)
        rows = sp.csr_matrix((np.ones(len(batch.hist_indices), np.float32), batch.hist_indices, batch.hist_indptr),
                             shape=(n, self.n_items))
        return (self._tensor(dense_rows(rows, np.arange(n)), dtype=_float()),)


def _float():
    from ._torch import torch

    return torch().float32
