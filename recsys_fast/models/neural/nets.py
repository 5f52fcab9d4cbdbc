"""Scoring and training networks of the non-sequential models (imports torch: load lazily).

Every scoring network's ``forward`` takes tensors only and returns (batch, n_items) scores.
"""

from __future__ import annotations

import torch
from torch import nn


def scoring_cache(module, name: str, weights: tuple, compute):
    """``compute()``, a tensor derived from ``weights`` alone, kept on ``module`` until one of them
    changes (in place, as an optimizer step or ``load_state_dict`` does, or by moving): for scoring
    paths (autograd off) that would derive the same tensor on every call. Not part of the
    ``state_dict``; the result is a plain tensor (usable inside and outside inference mode)."""
    key = tuple((t.data_ptr(), t._version) for t in weights)
    hit = module.__dict__.get(name)
    if hit is None or hit[0] != key:
        with torch.inference_mode(False), torch.no_grad():
            hit = (key, compute())
        module.__dict__[name] = hit
    return hit[1]


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


class LightGCNNet(nn.Module):
    """LightGCN (He et al. 2020): ego embeddings propagated ``n_layers`` times over the normalised
    graph, final embedding = mean of the layers. ``forward(users) -> (b, n_items)`` propagates
    on every call (training); the fitted model scores with an ``MF`` of the final embeddings."""

    def __init__(self, n_users: int, n_items: int, dim: int, n_layers: int, adjacency):
        super().__init__()
        self.n_users, self.n_items, self.n_layers = n_users, n_items, n_layers
        self.embedding = nn.Embedding(n_users + n_items, dim)
        nn.init.normal_(self.embedding.weight, std=0.1)
        self.register_buffer("adjacency", adjacency, persistent=False)

    def propagate(self):
        layer = self.embedding.weight
        total = layer
        for _ in range(self.n_layers):
            layer = torch.sparse.mm(self.adjacency, layer)
            total = total + layer
        final = total / (self.n_layers + 1)
        return final[:self.n_users], final[self.n_users:]

    def forward(self, users):
        u, i = self.propagate()
        return u[users] @ i.t()


class VAE(nn.Module):
    """Mult-VAE (Liang et al. 2018): encoder n_items -> hidden -> (mu, logvar) of size latent,
    decoder latent -> hidden -> n_items logits, tanh between layers, input dropout on the
    L2-normalised row. ``forward(rows float (b, n_items)) -> (b, n_items)`` scores with the mean
    (no sampling, no dropout in eval mode); ``encode_decode`` is the training pass."""

    def __init__(self, n_items: int, hidden: int, latent: int, dropout: float):
        super().__init__()
        self.latent = latent
        self.encoder = nn.Sequential(nn.Linear(n_items, hidden), nn.Tanh(), nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.Tanh(), nn.Linear(hidden, n_items))
        self.dropout = nn.Dropout(dropout)
        for layer in list(self.encoder) + list(self.decoder):
            if isinstance(layer, nn.Linear):
                nn.init.xavier_normal_(layer.weight)
                nn.init.normal_(layer.bias, std=0.001)

    def _encode(self, rows):
        x = nn.functional.normalize(rows, dim=-1)
        if self.training or torch.is_grad_enabled() or torch.jit.is_tracing() or rows.shape[0] > 8:
            h = self.encoder(self.dropout(x))
        else:  # a few rows, scoring: the first layer from the weights of the rows' items only
            first = self.encoder[0]
            per_item = scoring_cache(self, "_cache_item_weights", (first.weight,), lambda: first.weight.t().contiguous())
            r, c = x.nonzero(as_tuple=True)
            h = first.bias.repeat(x.shape[0], 1).index_add_(0, r, per_item[c] * x[r, c].unsqueeze(1))
            h = self.encoder[1:](h)
        return h[:, :self.latent], h[:, self.latent:]

    def forward(self, rows):
        mu, _ = self._encode(rows)
        return self.decoder(mu)

    def encode_decode(self, rows):
        mu, logvar = self._encode(rows)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decoder(z), mu, logvar


class NeuMFNet(nn.Module):
    """NeuMF (He et al. 2017): a GMF tower (element-wise product of embeddings) and an MLP tower
    (concatenated embeddings through ReLU layers), joined by one linear output.

    ``forward(users int64 (b,)) -> (b, n_items)`` scores every item; the MLP's first layer is
    split into its user and item halves so all items are scored without materialising the
    concatenation. ``pair_scores(users, items)`` scores given pairs (training)."""

    def __init__(self, n_users: int, n_items: int, dim: int, layers: tuple[int, ...], dropout: float = 0.0):
        super().__init__()
        # sparse gradients: the trainer steps these tables with a lazy SparseAdam (rows of the batch only)
        self.user_gmf, self.item_gmf = nn.Embedding(n_users, dim, sparse=True), nn.Embedding(n_items, dim, sparse=True)
        self.user_mlp, self.item_mlp = nn.Embedding(n_users, dim, sparse=True), nn.Embedding(n_items, dim, sparse=True)
        for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
            nn.init.normal_(emb.weight, std=0.01)
        sizes = [2 * dim] + list(layers)
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim + sizes[-1], 1)
        self.dim = dim

    def _tower(self, h):
        scoring = not self.training and not torch.is_grad_enabled()
        for i, layer in enumerate(self.mlp):
            if i > 0:
                h = layer(h)
            # scoring: ReLU in place on the (b, n_items, width) activations, no dropout (eval)
            h = torch.relu_(h) if scoring else self.dropout(torch.relu(h))
        return h

    def _first(self, u_mlp, i_mlp):
        w = self.mlp[0].weight
        return u_mlp @ w[:, :self.dim].t(), i_mlp @ w[:, self.dim:].t() + self.mlp[0].bias

    def forward(self, users):
        # out(cat[u * i, h]) split into its two halves: the GMF half is one product with the item
        # table, (u * w_gmf) . i, so the (b, n_items, dim) element-wise product is never built
        w_out = self.out.weight[0]
        gmf = (self.user_gmf(users) * w_out[:self.dim]) @ self.item_gmf.weight.t()
        hu = self.user_mlp(users) @ self.mlp[0].weight[:, :self.dim].t()
        h = self._tower(hu.unsqueeze(1) + self._item_first().unsqueeze(0))
        return gmf + h @ w_out[self.dim:] + self.out.bias

    def _item_first(self):
        """Every item's half of the MLP's first layer, bias included: the same for every user, so
        scoring (autograd off) keeps it (``scoring_cache``; an exported graph holds it as a
        constant); training recomputes it every call."""
        w, b, e = self.mlp[0].weight, self.mlp[0].bias, self.item_mlp.weight
        if torch.is_grad_enabled():
            return e @ w[:, self.dim:].t() + b
        return scoring_cache(self, "_cache_item_first", (w, b, e), lambda: e @ w[:, self.dim:].t() + b)

    def pair_scores(self, users, items):
        if items.dim() == 2:
            users = users.unsqueeze(1).expand_as(items)
        gmf = self.user_gmf(users) * self.item_gmf(items)
        hu, hi = self._first(self.user_mlp(users), self.item_mlp(items))
        h = self._tower(hu + hi)
        return self.out(torch.cat([gmf, h], dim=-1)).squeeze(-1)
