"""Scoring and training networks of the non-sequential models (imports torch: load lazily).

Every scoring network's ``forward`` takes tensors only and returns (batch, n_items) scores.
"""

from __future__ import annotations

import torch
from torch import nn


class MF(nn.Module):
    """Dot-product scorer: user embedding . item embedding (+ item bias).

    ``forward(users: int64 (b,)) -> (b, n_items)``. Used by BPRMF, and by LightGCN for its final
    propagated embeddings.
    """

    def __init__(self, n_users: int, n_items: int, dim: int, item_bias: bool = True):
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.bias = nn.Parameter(torch.zeros(n_items)) if item_bias else None

    def forward(self, users):
        scores = self.user(users) @ self.item.weight.t()
        return scores + self.bias if self.bias is not None else scores

    def pair_scores(self, users, items):
        """Scores of (users (b,), items (b,) or (b, n)) pairs, plus the embeddings used."""
        u = self.user(users)
        v = self.item(items)
        if items.dim() == 2:
            s = (u.unsqueeze(1) * v).sum(-1)
        else:
            s = (u * v).sum(-1)
        if self.bias is not None:
            s = s + self.bias[items]
        return s, u, v
