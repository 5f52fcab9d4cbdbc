"""Scoring and training networks of the non-sequential models (imports torch: load lazily).

Every scoring network's ``forward`` takes tensors only and returns (batch, n_items) scores.
"""

from __future__ import annotations

import numpy as np
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


def blas_linear(x, weight, bias=None):
    """``x @ weight.T + bias`` (as ``nn.functional.linear``, ``x`` (..., in), ``weight`` (out, in)),
    its products and their gradients by NumPy's BLAS (OpenBLAS) on the CPU in float32: torch's
    MKL runs at half OpenBLAS's rate on this project's AMD machines (128 x 600 x 20k: 13-18 against
    31-33 GFLOPS, 1 thread; MKL does not take its AVX2 path on AMD CPUs). Elsewhere (another
    device or dtype, or tracing for export) it is ``nn.functional.linear``. The threads are
    BLAS's, which ``threads.limit`` sets with torch's."""
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if torch.jit.is_tracing() or any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return nn.functional.linear(x, weight, bias)
    return BlasLinear.apply(x, weight, bias)


class BlasLinear(torch.autograd.Function):
    """``blas_linear``'s autograd: ``y = x W^T + b``; ``dx = g W``, ``dW = g^T x``, ``db = sum g``."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        lead = x.shape[:-1]
        x2 = x.detach().reshape(-1, x.shape[-1]).numpy()
        out = np.matmul(x2, weight.detach().numpy().T)
        if bias is not None:
            out += bias.detach().numpy()
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.from_numpy(out).reshape(*lead, weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        g = grad.detach().reshape(-1, weight.shape[0]).numpy()
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.from_numpy(np.matmul(g, weight.detach().numpy())).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            gw = torch.from_numpy(np.matmul(g.T, x.detach().reshape(-1, x.shape[-1]).numpy()))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = torch.from_numpy(g.sum(0))
        return gx, gw, gb


class FastLinear(nn.Linear):
    """``nn.Linear`` whose forward is ``blas_linear`` (same parameters, same state_dict)."""

    def forward(self, x):
        return blas_linear(x, self.weight, self.bias)


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
            layer = self._product(layer)
            total = total + layer
        final = total / (self.n_layers + 1)
        return final[:self.n_users], final[self.n_users:]

    def forward(self, users):
        if torch.is_grad_enabled():
            u, i = self.propagate()
        else:  # validation scores users in chunks: propagate once per weight update, not per chunk
            u, i = scoring_cache(self, "_cache_final", (self.embedding.weight,), self.propagate)
        return u[users] @ i.t()

    def propagated_rows(self, rows):
        """``(final, ego)``: rows ``rows`` (int64, users then ``n_users + item``) of the final and of
        the ego (layer-0) embeddings, as ``torch.cat(self.propagate())[rows]`` and
        ``self.embedding.weight[rows]``, with the gradient taken to the ego table in one pass
        (``Propagation``), without the autograd graph of the full-size layers."""
        if self.adjacency.device.type != "cpu" or self.embedding.weight.dtype != torch.float32:
            return torch.cat(self.propagate())[rows], self.embedding.weight[rows]
        return Propagation.apply(self.embedding.weight, rows, self._csr(), self.n_layers)

    def _csr(self):
        cached = self.__dict__.get("_csr_cache")
        if cached is None or cached[0] is not self.adjacency:  # kept until adjacency is replaced
            cached = (self.adjacency, SymmetricCsr(self.adjacency))
            self.__dict__["_csr_cache"] = cached
        return cached[1]

    def _product(self, x):
        """``adjacency @ x``: on the CPU by the Numba CSR kernel (``kernels.spmm``; the graph in CSR
        form is kept until ``adjacency`` is replaced), elsewhere by ``torch.sparse.mm``."""
        if self.adjacency.device.type != "cpu" or x.dtype != torch.float32:
            return torch.sparse.mm(self.adjacency, x)
        return GraphProduct.apply(x, self._csr())


class SymmetricCsr:
    """A symmetric sparse matrix (a coalesced torch COO tensor, as ``samplers.normalized_adjacency``
    builds) in CSR arrays, multiplied into dense float32 arrays by ``kernels.spmm``."""

    def __init__(self, coo):
        from ...kernels.spmm import csr_dense_mm

        coo = coo.coalesce()  # rows sorted, then columns
        rows, cols = coo.indices().numpy()
        n = coo.shape[0]
        self.indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=self.indptr[1:])
        self.indices = cols.astype(np.int32)
        self.data = coo.values().numpy().astype(np.float32)
        csr_dense_mm(self.indptr, self.indices, self.data, np.zeros((coo.shape[1], 0), np.float32))  # checks once
        self._bounds = {}

    def mm(self, x, base=None, acc=None, rows=None, src_mask=None):
        """``(base + A @ x)[rows]`` (``kernels.spmm.csr_dense_mm``), added into ``acc`` when given."""
        import numba

        from ...kernels.spmm import csr_dense_mm, row_blocks

        n_threads = numba.get_num_threads()
        if rows is None:
            bounds = self._bounds.get(n_threads)
            if bounds is None:
                bounds = self._bounds[n_threads] = row_blocks(self.indptr, 8 * n_threads)
        else:
            bounds = row_blocks(self.indptr, 8 * n_threads, rows)
        return csr_dense_mm(self.indptr, self.indices, self.data, x, bounds, base=base, acc=acc, rows=rows,
                            src_mask=src_mask, check=False)


class GraphProduct(torch.autograd.Function):
    """``A @ x`` for a ``SymmetricCsr`` ``A`` with autograd: the gradient is ``A^T g = A g``."""

    @staticmethod
    def forward(ctx, x, graph):
        ctx.graph = graph
        return torch.from_numpy(graph.mm(x.detach().numpy()))

    @staticmethod
    def backward(ctx, grad):
        return torch.from_numpy(ctx.graph.mm(grad.detach().numpy())), None


class Propagation(torch.autograd.Function):
    """LightGCN's layer mean ``F = P E``, ``P = (I + A + ... + A^L) / (L + 1)``, at rows ``rows``:
    ``apply(ego E (n, d), rows int64 (m,), graph SymmetricCsr, n_layers) -> (F[rows], E[rows])``
    (each (m, d)), the same values and gradients as autograd over ``propagate`` and a gather of
    ``E``, at a third less work for 3 layers:

    - forward: layers 1..L-1 in full (each added into the sum as the kernel writes it), layer L at
      the batch's rows only (``A[rows] @ layer``);
    - backward: the rows' gradient G scattered into (n, d); ``P^T G = P G`` (A symmetric) by
      Horner's rule ``H <- G + A H``, L times, the first from G's nonzero rows only (the batch's).
    No full-size intermediate is kept for autograd."""

    @staticmethod
    def forward(ctx, ego, rows, graph, n_layers):
        e = ego.detach().numpy()
        total = e.copy()
        layer = e
        for _ in range(n_layers - 1):
            layer = graph.mm(layer, acc=total)
        r = rows.numpy()
        unique, inverse = np.unique(r, return_inverse=True)
        final = (total[unique] + graph.mm(layer, rows=unique)) * np.float32(1.0 / (n_layers + 1))
        inverse = torch.from_numpy(inverse.reshape(-1))
        ctx.save_for_backward(inverse)
        ctx.graph, ctx.n_layers, ctx.shape, ctx.unique = graph, n_layers, tuple(ego.shape), unique
        return torch.from_numpy(final)[inverse], torch.from_numpy(e[unique])[inverse]

    @staticmethod
    def backward(ctx, grad_final, grad_ego):
        (inverse,) = ctx.saved_tensors
        per_row = lambda grad: torch.zeros((len(ctx.unique), ctx.shape[1])).index_add_(0, inverse, grad.float())  # noqa: E731
        g = np.zeros(ctx.shape, dtype=np.float32)
        g[ctx.unique] = per_row(grad_final).numpy()
        nonzero = np.zeros(ctx.shape[0], dtype=np.bool_)
        nonzero[ctx.unique] = True
        h = ctx.graph.mm(g, base=g, src_mask=nonzero)
        for _ in range(ctx.n_layers - 1):
            h = ctx.graph.mm(h, base=g)
        h *= np.float32(1.0 / (ctx.n_layers + 1))
        h[ctx.unique] += per_row(grad_ego).numpy()
        return torch.from_numpy(h), None, None, None


class ItemInput(nn.Module):
    """A first layer ``x @ W + b`` over item rows, its weight held item-major as an embedding
    table, ``table.weight`` (n_items, hidden) = ``W``, with sparse gradients: a batch given by its
    nonzeros (``bag``) moves the rows of its items only, stepped by the trainer's lazy
    ``SparseAdam``. The training form of an ``nn.Linear(n_items, hidden)`` (``from_linear``,
    ``to_linear``: the same weights, transposed)."""

    def __init__(self, n_items: int, hidden: int):
        super().__init__()
        self.table = nn.Embedding(n_items, hidden, sparse=True)
        self.bias = nn.Parameter(torch.zeros(hidden))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "ItemInput":
        layer = cls(linear.in_features, linear.out_features)
        with torch.no_grad():
            layer.table.weight.copy_(linear.weight.t())
            layer.bias.copy_(linear.bias)
        return layer

    def to_linear(self) -> nn.Linear:
        linear = nn.Linear(*self.table.weight.shape)
        with torch.no_grad():
            linear.weight.copy_(self.table.weight.t())
            linear.bias.copy_(self.bias)
        return linear

    def forward(self, x):
        return torch.addmm(self.bias, x, self.table.weight)

    def bag(self, items, offsets, weights):
        """The layer of rows given by their nonzeros: ``items`` (nnz,) grouped by row, ``offsets``
        (n_rows,) where each row starts, ``weights`` (nnz,) the values."""
        bag = nn.functional.embedding_bag(items, self.table.weight, offsets, mode="sum", per_sample_weights=weights,
                                          sparse=True)
        return bag + self.bias


class VAE(nn.Module):
    """Mult-VAE (Liang et al. 2018): encoder n_items -> hidden -> (mu, logvar) of size latent,
    decoder latent -> hidden -> n_items logits, tanh between layers, input dropout on the
    L2-normalised row. ``forward(rows float (b, n_items)) -> (b, n_items)`` scores with the mean
    (no sampling, no dropout in eval mode); ``encode_decode`` is the training pass.

    ``sparse_input=True`` (training): the encoder's first layer is an ``ItemInput`` (the same
    weights, item-major, sparse gradients), so a batch's step touches the input weights of its
    items only; ``scoring_form()`` gives the plain network (an ``nn.Linear`` there), the one
    bundles and exports hold. The initial weights are the same either way."""

    def __init__(self, n_items: int, hidden: int, latent: int, dropout: float, sparse_input: bool = False):
        super().__init__()
        self.latent = latent
        self._sizes = (n_items, hidden, latent, dropout)
        self.encoder = nn.Sequential(nn.Linear(n_items, hidden), nn.Tanh(), nn.Linear(hidden, 2 * latent))
        # the decoder's output layer is most of a batch's work: its products by BLAS (``FastLinear``)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.Tanh(), FastLinear(hidden, n_items))
        self.dropout = nn.Dropout(dropout)
        for layer in list(self.encoder) + list(self.decoder):
            if isinstance(layer, nn.Linear):
                nn.init.xavier_normal_(layer.weight)
                nn.init.normal_(layer.bias, std=0.001)
        if sparse_input:
            self.encoder[0] = ItemInput.from_linear(self.encoder[0])

    def scoring_form(self) -> "VAE":
        """The network with an ``nn.Linear`` first layer (itself when it has one), same weights."""
        if not isinstance(self.encoder[0], ItemInput):
            return self
        plain = VAE(*self._sizes)
        with torch.no_grad():
            plain.encoder[0] = self.encoder[0].to_linear()
            for mine, theirs in ((self.encoder[2], plain.encoder[2]), (self.decoder[0], plain.decoder[0]),
                                 (self.decoder[2], plain.decoder[2])):
                theirs.load_state_dict(mine.state_dict())
        return plain.to(self.encoder[2].weight.device).train(self.training)

    def _encode(self, rows):
        x = nn.functional.normalize(rows, dim=-1)
        first = self.encoder[0]
        if (self.training or torch.is_grad_enabled() or torch.jit.is_tracing() or rows.shape[0] > 8
                or not isinstance(first, nn.Linear)):
            h = self.encoder(self.dropout(x))
        else:  # a few rows, scoring: the first layer from the weights of the rows' items only
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
        return self._decode(mu, logvar)

    def encode_decode_sparse(self, rows, items, n_rows: int):
        """``encode_decode`` of ``n_rows`` binary rows given by their nonzeros, ``rows`` (ascending)
        and ``items`` int64 (nnz,): the same pass, with the first layer a sum of the rows' items'
        weight columns (an embedding bag) instead of a (n_rows x n_items) dense product, and input
        dropout drawn on the nonzeros only (dropout leaves a zero a zero). With an ``ItemInput``
        first layer the bag's gradient is sparse (the batch's items only)."""
        counts = torch.bincount(rows, minlength=n_rows)
        values = self.dropout(counts[rows].to(torch.float32).rsqrt())  # the L2-normalised row, then dropout
        first = self.encoder[0]
        offsets = torch.cumsum(counts, 0) - counts
        if isinstance(first, ItemInput):
            h = first.bag(items, offsets, values)
        else:
            h = nn.functional.embedding_bag(items, first.weight.t(), offsets, mode="sum", per_sample_weights=values)
            h = h + first.bias
        h = self.encoder[1:](h)
        return self._decode(h[:, :self.latent], h[:, self.latent:])

    def _decode(self, mu, logvar):
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
