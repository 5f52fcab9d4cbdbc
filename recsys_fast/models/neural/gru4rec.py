"""GRU4Rec: next-item prediction with a recurrent network."""

from __future__ import annotations

from ... import validation

from .sequential import SequentialRecommender


class GRU4Rec(SequentialRecommender):
    """GRU4Rec (Hidasi et al. 2016; padded-batch training on every position) over each user's
    last ``max_len`` items.

    ``cell`` is "gru" or "lstm", ``hidden_size`` and ``n_layers`` its size, ``dropout`` on the
    embeddings and outputs. ``loss`` defaults to full softmax cross-entropy (the loss GRU4Rec's
    authors recommend for accuracy). Scoring network: ``GRU4RecNet``,
    ``forward(seq int64 (b, max_len), left-padded, ids +1) -> (b, n_items)``.
    """

    kind = "gru4rec"

    def __init__(self, embedding_size: int = 64, epochs: int = 40, learning_rate: float = 4e-3,
                 weight_decay: float = 0.0, batch_size: int = 64, n_negatives: int = 1, seed: int | None = 0,
                 device: str = "auto", early_stopping_patience: int | None = 10, validation_fraction: float = 0.1,
                 n_threads: int | None = None, verbose: bool | None = None, max_len: int = 50, hidden_size: int = 128,
                 n_layers: int = 1, dropout: float = 0.2, cell: str = "gru", loss: str = "ce"):
        self._init_params(locals())

    def _check_params(self, p: dict) -> dict:
        p = super()._check_params(p)
        p["cell"] = validation.choice("cell", p["cell"], ("gru", "lstm"))
        p["hidden_size"] = validation.integer("hidden_size", p["hidden_size"], minimum=1)
        p["n_layers"] = validation.integer("n_layers", p["n_layers"], minimum=1)
        return p

    def _build_module(self):
        from .seqnets import GRU4RecNet

        return GRU4RecNet(self.n_items_, self.embedding_size, self.hidden_size, self.n_layers, self.dropout,
                          self.cell)
