"""SASRec: next-item prediction with causal self-attention."""

from __future__ import annotations

from ... import validation
from ...errors import ParameterError

from . import samplers
from .sequential import SequentialRecommender


class SASRec(SequentialRecommender):
    """SASRec (Kang & McAuley 2018) over each user's last ``max_len`` items.

    ``n_blocks`` attention blocks with ``n_heads`` heads, ``dropout`` on embeddings, attention
    and feed-forward layers. Trained on every position with ``loss`` (default full softmax
    cross-entropy, which beats the original sampled BCE in full-ranking evaluation; "bce"
    gives the original). Training packs each batch's sequences into rows of ``max_len + 1`` slots
    (``samplers.pack_sequences``; the same users per batch, the same states, at the cost of the
    real positions: a batch of short histories was mostly padding). Scoring network: ``SASRecNet``,
    ``forward(seq int64 (b, max_len), left-padded, ids +1) -> (b, n_items)``.
    """

    kind = "sasrec"

    def __init__(self, embedding_size: int = 64, epochs: int = 50, learning_rate: float = 3e-3,
                 weight_decay: float = 0.0, batch_size: int = 32, n_negatives: int = 1, seed: int | None = 0,
                 device: str = "auto", early_stopping_patience: int | None = 10, validation_fraction: float = 0.1,
                 n_threads: int | None = None, verbose: bool | None = None, max_len: int = 50, n_blocks: int = 2,
                 n_heads: int = 1, dropout: float = 0.2, loss: str = "ce"):
        self._init_params(locals())

    def _check_params(self, p: dict) -> dict:
        p = super()._check_params(p)
        p["n_blocks"] = validation.integer("n_blocks", p["n_blocks"], minimum=1)
        p["n_heads"] = validation.integer("n_heads", p["n_heads"], minimum=1)
        if p["embedding_size"] % p["n_heads"]:
            raise ParameterError("n_heads", p["n_heads"], f"a divisor of embedding_size ({p['embedding_size']})")
        return p

    def _build_module(self):
        from .seqnets import SASRecNet

        return SASRecNet(self.n_items_, self.embedding_size, self.max_len, self.n_blocks, self.n_heads, self.dropout)

    def _train_batches(self, rng, epoch):
        for inputs, targets, rng_, dropped in super()._train_batches(rng, epoch):
            yield samplers.pack_sequences(inputs, targets, dropped) + (rng_,)

    def _batch_loss(self, module, batch, step):
        inputs, targets, positions, mask, pad_slot, pad_count, rng = batch
        hidden = module.encode_packed(self._tensor(inputs), self._tensor(positions),
                                      self._tensor(mask, dtype=module.item.weight.dtype), self._tensor(pad_slot),
                                      self._tensor(pad_count))
        real = (inputs > 0) & (targets > 0)
        return self._next_item_loss(module, hidden[self._tensor(real, dtype=_bool())], targets[real] - 1, rng)


def _bool():
    from ._torch import torch

    return torch().bool
