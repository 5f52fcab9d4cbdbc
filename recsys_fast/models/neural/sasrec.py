"""SASRec: next-item prediction with causal self-attention."""

from __future__ import annotations

from .sequential import SequentialRecommender


class SASRec(SequentialRecommender):
    """SASRec (Kang & McAuley 2018) over each user's last ``max_len`` items.

    ``n_blocks`` attention blocks with ``n_heads`` heads, ``dropout`` on embeddings, attention
    and feed-forward layers. Trained on every position with ``loss`` (default full softmax
    cross-entropy, which beats the original sampled BCE in full-ranking evaluation; "bce"
    gives the original). Scoring network: ``SASRecNet``,
    ``forward(seq int64 (b, max_len), left-padded, ids +1) -> (b, n_items)``.
    """

    kind = "sasrec"

    def __init__(self, embedding_size: int = 64, epochs: int = 50, learning_rate: float = 3e-3,
                 weight_decay: float = 0.0, batch_size: int = 32, n_negatives: int = 1, seed: int | None = 0,
                 device: str = "auto", early_stopping_patience: int | None = 10, validation_fraction: float = 0.1,
                 n_threads: int | None = None, verbose: bool = False, max_len: int = 50, n_blocks: int = 2,
                 n_heads: int = 1, dropout: float = 0.2, loss: str = "ce"):
        self._set_common(embedding_size, epochs, learning_rate, weight_decay, batch_size, n_negatives, seed,
                         device, early_stopping_patience, validation_fraction, n_threads, verbose)
        self._set_sequence(max_len, loss)
        if n_blocks < 1 or n_heads < 1 or embedding_size % n_heads:
            raise ValueError(f"n_blocks and n_heads must be >= 1 and n_heads must divide embedding_size "
                             f"({embedding_size}), got n_blocks={n_blocks}, n_heads={n_heads}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.n_blocks, self.n_heads, self.dropout = int(n_blocks), int(n_heads), float(dropout)

    def _build_module(self):
        from .seqnets import SASRecNet

        return SASRecNet(self.n_items_, self.embedding_size, self.max_len, self.n_blocks, self.n_heads, self.dropout)
