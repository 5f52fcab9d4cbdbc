"""Caser: next-item prediction with convolutions over the last L items."""

from __future__ import annotations

from ... import validation

import numpy as np

from ...data.interactions import Interactions
from ..base import RowBatch
from . import samplers
from .sequential import SequentialRecommender

UNKNOWN_USER_RATE = 0.1  # share of training windows shown with the "unknown user" embedding


class Caser(SequentialRecommender):
    """Caser (Tang & Wang 2018) on windows of the last ``max_len`` (the paper's L) items.

    ``n_horizontal`` filters per height 1..L, ``n_vertical`` vertical filters, ``dropout`` before
    the fully connected layer. Every (window, next item) pair of the training sequences is a
    training example, with ``loss`` as in ``SequentialRecommender`` (default full softmax
    cross-entropy). Caser has a user embedding: users scored from a ``history=`` use a learned
    "unknown user" embedding, trained on 10% of the windows. Scoring network: ``CaserNet``,
    ``forward(seq int64 (b, max_len) left-padded ids +1, users int64 (b,)) -> (b, n_items)``
    (user ``n_users`` = unknown).
    """

    kind = "caser"

    def __init__(self, embedding_size: int = 64, epochs: int = 20, learning_rate: float = 2e-3,
                 weight_decay: float = 1e-6, batch_size: int = 1024, n_negatives: int = 1, seed: int | None = 0,
                 device: str = "auto", early_stopping_patience: int | None = 3, validation_fraction: float = 0.1,
                 n_threads: int | None = None, verbose: bool | None = None, max_len: int = 5, n_horizontal: int = 16,
                 n_vertical: int = 4, dropout: float = 0.5, loss: str = "ce"):
        self._init_params(locals())

    def _check_params(self, p: dict) -> dict:
        p = super()._check_params(p)
        p["n_horizontal"] = validation.integer("n_horizontal", p["n_horizontal"], minimum=1)
        p["n_vertical"] = validation.integer("n_vertical", p["n_vertical"], minimum=1)
        return p

    def _build_module(self):
        from .seqnets import CaserNet

        return CaserNet(self.n_users_, self.n_items_, self.embedding_size, self.max_len, self.n_horizontal,
                        self.n_vertical, self.dropout)

    def _prepare(self, fit_data: Interactions) -> None:
        super()._prepare(fit_data)
        self._windows = samplers.sliding_windows(self._seq_indptr, self._seq_items, self.max_len)

    def _finalize(self, module, train):
        self._windows = None
        return super()._finalize(module, train)

    def _train_batches(self, rng, epoch):
        users, windows, targets = self._windows
        for sel in samplers.row_batches(len(users), self.batch_size, rng):
            u = users[sel].copy()
            u[rng.random(len(u)) < UNKNOWN_USER_RATE] = self.n_users_
            yield windows[sel], u, targets[sel], rng

    def _batch_loss(self, module, batch, step):
        windows, users, targets, rng = batch
        hidden = module.encode(self._tensor(windows), self._tensor(users))
        return self._next_item_loss(module, hidden, targets, rng)

    def _update(self, combined, user_pos, item_pos, new_in) -> None:
        """Sequences as for every sequential model; the user table grows: old users keep their
        embedding, new users start from the learned "unknown user" embedding (the one history=
        scoring uses), which stays last."""
        from ._torch import torch

        old_n = self.n_users_
        super()._update(combined, user_pos, item_pos, new_in)
        weight = self.module_.user.weight.detach()
        table = weight[old_n].repeat(combined.n_users + 1, 1)
        table[torch().as_tensor(user_pos)] = weight[:old_n]
        self.module_.user = torch().nn.Embedding.from_pretrained(table, freeze=False).to(self.device_)

    def _user_inputs(self, users):
        seq = samplers.pad_sequences(self._seq_indptr, self._seq_items, users, self.max_len)
        return self._tensor(seq), self._tensor(users)

    def _scoring_inputs(self, batch: RowBatch):
        users = np.where(batch.user_index >= 0, batch.user_index, self.n_users_)
        return self._tensor(self._sequences_for(batch)), self._tensor(users)
