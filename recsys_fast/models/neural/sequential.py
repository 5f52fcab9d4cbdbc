"""SequentialRecommender: what SASRec, GRU4Rec and Caser share.

Each user's training items are ordered by timestamp (ties by item id; data without timestamps
keeps item order, which carries no time signal: pass timestamps). Fitted users are scored from
the latest ``max_len`` items of that sequence; ``history={user: [items]}`` scores from the given
items, in the order given (oldest first). Validation for early stopping holds out each user's
last training item.
"""

from __future__ import annotations

import numpy as np

from ... import validation
from ...data.interactions import Interactions
from ..base import RowBatch
from . import samplers
from .base import NeuralRecommender

SEQUENCE_LOSSES = ("ce", "sampled_ce", "bce")


class SequentialRecommender(NeuralRecommender):
    """Base of the next-item models; trains on every position of (randomly cropped) sequences,
    in shuffled batches whose all-padding leading columns are dropped (the network's
    ``encode(seq, dropped=...)`` accounts for them, so every position's state is the one of the
    full ``max_len`` window).

    ``loss``: "ce" (full softmax cross-entropy over all items), "sampled_ce" (softmax over the
    target and ``n_negatives`` uniform negatives shared by all positions of a batch, so the
    negative scores are one matrix product; a negative equal to the target is masked) or "bce"
    (binary cross-entropy against ``n_negatives`` uniform negatives per position, SASRec's
    original loss).
    """

    sequential = True
    supports_history = True

    def _check_params(self, p: dict) -> dict:
        p = super()._check_params(p)
        p["max_len"] = validation.integer("max_len", p["max_len"], minimum=1)
        p["loss"] = validation.choice("loss", p["loss"], SEQUENCE_LOSSES)
        return p

    # ------------------------------------------------------------------ data
    def _prepare(self, fit_data: Interactions) -> None:
        self._seq_indptr, self._seq_items = samplers.user_sequences(fit_data.matrix, fit_data.timestamps)
        self._train_users = np.flatnonzero(np.diff(self._seq_indptr) >= 2)

    def _finalize(self, module, train: Interactions):
        self._seq_indptr, self._seq_items = samplers.user_sequences(train.matrix, train.timestamps)
        return module

    def _train_batches(self, rng, epoch):
        # a batch's all-padding leading columns are dropped (all but one): on short histories
        # (10 items against max_len=50) much of a batch is padding. (Batches of users of similar
        # length would drop far more, but cost SASRec a quarter of its NDCG@10 on ml-100k.)
        for users in samplers.row_batches(0, self.batch_size, rng, rows=self._train_users):
            drop = samplers.random_crop_ends(self._seq_indptr, users, self.max_len + 1, rng)
            padded = samplers.pad_sequences(self._seq_indptr, self._seq_items, users, self.max_len + 1, drop)
            inputs, targets = padded[:, :-1], padded[:, 1:]
            dropped = samplers.leading_padding(inputs)
            yield inputs[:, dropped:], targets[:, dropped:], rng, dropped

    def _batch_loss(self, module, batch, step):
        inputs, targets, rng, dropped = batch
        hidden = module.encode(self._tensor(inputs), dropped=dropped)
        mask = self._tensor((inputs > 0) & (targets > 0), dtype=_bool())
        return self._next_item_loss(module, hidden[mask], targets[(inputs > 0) & (targets > 0)] - 1, rng)

    def _next_item_loss(self, module, hidden, targets: np.ndarray, rng):
        """Loss of hidden states (m, d) against next items (m,) under ``self.loss``."""
        from . import losses
        from ._torch import torch
        from .nets import blas_linear

        t = torch()
        bias = getattr(module, "output_bias", None)
        target_t = self._tensor(targets)
        if self.loss == "ce":
            # the (positions x n_items) product and its gradients by BLAS (``nets.blas_linear``)
            return losses.softmax_ce(blas_linear(hidden, module.item_weights(), bias), target_t)
        if self.loss == "sampled_ce":
            # negatives shared by the batch: a (positions x n_negatives) product, not a gather of
            # n_negatives embeddings per position (which cost as much as the full softmax); the
            # targets' and negatives' rows in one gather (one pass of the table's gradient)
            neg = self._tensor(rng.integers(0, self.n_items_, size=self.n_negatives))
            both = t.cat([target_t, neg])
            rows = module.item_rows(both)
            b = None if bias is None else bias[both]
            m = len(target_t)
            pos_s = (hidden * rows[:m]).sum(-1) + (0 if b is None else b[:m])
            neg_s = blas_linear(hidden, rows[m:], None if b is None else b[m:])
            neg_s = neg_s.masked_fill(neg.unsqueeze(0) == target_t.unsqueeze(1), -1e9)
            return losses.sampled_softmax_ce(pos_s, neg_s)
        pos_s = (hidden * module.item_rows(target_t)).sum(-1)
        if bias is not None:
            pos_s = pos_s + bias[target_t]
        neg = self._tensor(rng.integers(0, self.n_items_, size=(len(targets), self.n_negatives)))
        neg_s = (hidden.unsqueeze(1) * module.item_rows(neg)).sum(-1)
        if bias is not None:
            neg_s = neg_s + bias[neg]
        neg_s = t.where(neg == target_t.unsqueeze(1), t.full_like(neg_s, -30), neg_s)
        return losses.bce(pos_s, neg_s)

    # ------------------------------------------------------------------ the feedback loop
    def _update(self, combined, user_pos, item_pos, new_in) -> None:
        """The new events join the users' sequences at once, after their earlier items, in their
        own time order (ties and missing timestamps: item order); an item a user meets again moves
        to its latest position. New users start a sequence. The network is unchanged (the next
        refit learns from the new transitions)."""
        old_ptr, old_items = self._seq_indptr, self._seq_items
        o_users = user_pos[np.repeat(np.arange(len(old_ptr) - 1), np.diff(old_ptr))]
        n_ptr, n_items = samplers.user_sequences(new_in.matrix, new_in.timestamps)
        n_users = np.repeat(np.arange(len(n_ptr) - 1), np.diff(n_ptr))
        users = np.concatenate([o_users, n_users]).astype(np.int64)
        items = np.concatenate([old_items, n_items]).astype(np.int64)
        order = np.lexsort((np.arange(len(users)), users))  # by user; old before new, each in order
        users, items = users[order], items[order]
        # keep each (user, item)'s last occurrence
        key = users * max(1, combined.n_items) + items
        last = np.ones(len(key), dtype=bool)
        rev_first = np.unique(key[::-1], return_index=True)[1]
        last[:] = False
        last[len(key) - 1 - rev_first] = True
        users, items = users[last], items[last]
        indptr = np.zeros(combined.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=combined.n_users), out=indptr[1:])
        self._seq_indptr, self._seq_items = indptr, items
        self.n_users_ = combined.n_users

    # ------------------------------------------------------------------ scoring inputs
    def sequences(self) -> tuple[np.ndarray, np.ndarray]:
        """Every fitted user's training items in time order, CSR-like ``(indptr int64 (n_users + 1,),
        items int64)``: what the scoring network sees (its last ``max_len`` items, ids +1) for them."""
        self.check_fitted()
        return self._seq_indptr, self._seq_items

    def _user_inputs(self, users):
        return (self._tensor(samplers.pad_sequences(self._seq_indptr, self._seq_items, users, self.max_len)),)

    def _sequences_for(self, batch: RowBatch) -> np.ndarray:
        """(rows, max_len) padded sequences: stored time order for fitted users, given order for
        rows scored from a ``history=``."""
        return samplers.batch_sequences(self._seq_indptr, self._seq_items, batch.user_index, batch.hist_indptr,
                                        batch.hist_indices, self.max_len)

    def _scoring_inputs(self, batch: RowBatch):
        return (self._tensor(self._sequences_for(batch)),)

    # ------------------------------------------------------------------ persistence
    def _extra_state(self):
        return {"seq_indptr": self._seq_indptr, "seq_items": self._seq_items}

    def _set_extra_state(self, arrays, meta):
        self._seq_indptr = arrays["seq_indptr"].astype(np.int64)
        self._seq_items = arrays["seq_items"].astype(np.int64)


def _bool():
    from ._torch import torch

    return torch().bool
