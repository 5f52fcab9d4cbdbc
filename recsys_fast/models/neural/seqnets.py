"""Networks of the sequential models (imports torch: load lazily).

Input convention, shared by every sequential scoring network: ``seq`` int64 (b, L), item ids
shifted by +1, left-padded with 0, the most recent item in the last column. ``forward`` returns
(b, n_items) scores for the next item; ``encode`` the hidden state of every position (training).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SASRecNet(nn.Module):
    """SASRec (Kang & McAuley 2018): item + learned positional embeddings, ``n_blocks`` causal
    self-attention blocks (pre-LayerNorm, ReLU feed-forward, residuals, padding positions zeroed
    after each block), a final LayerNorm; scores are dot products with the (tied) item embeddings."""

    def __init__(self, n_items: int, dim: int, max_len: int, n_blocks: int, n_heads: int, dropout: float):
        super().__init__()
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.position = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        self.attn_norm = nn.ModuleList(nn.LayerNorm(dim, eps=1e-8) for _ in range(n_blocks))
        self.attn = nn.ModuleList(nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
                                  for _ in range(n_blocks))
        self.ffn_norm = nn.ModuleList(nn.LayerNorm(dim, eps=1e-8) for _ in range(n_blocks))
        self.ffn = nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout),
                                               nn.Linear(dim, dim), nn.Dropout(dropout)) for _ in range(n_blocks))
        self.last_norm = nn.LayerNorm(dim, eps=1e-8)
        self.scale = dim ** 0.5
        self.dim, self.n_heads, self.max_len = dim, n_heads, max_len
        causal = torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)
        nn.init.normal_(self.item.weight, std=dim ** -0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def encode(self, seq, dropped: int = 0):
        """Hidden states of every position of ``seq``. ``dropped``: ``seq`` is the window of a
        longer left-padded batch less its first ``dropped`` columns, all padding, and its first
        column is padding too (``trim_padding``): the states are those of the full window's
        columns, because padding positions are zero, so every padding key and value is the same
        and the dropped ones are counted by adding log(dropped + 1) to the first column's logits
        (exact up to the attention dropout, drawn once for the merged keys)."""
        length = seq.shape[1]
        keep = (seq > 0).unsqueeze(-1).to(self.item.weight.dtype)
        positions = torch.arange(dropped, dropped + length, device=seq.device).unsqueeze(0)
        h = self.item(seq) * self.scale + self.position(positions)
        h = self.dropout(h) * keep
        mask = self.causal[:length, :length]
        if dropped:
            mask = torch.zeros(length, length, dtype=h.dtype, device=seq.device).masked_fill(mask, float("-inf"))
            mask[:, 0] += math.log(dropped + 1)
        return self._blocks(h, keep, mask)

    def encode_packed(self, seq, positions, mask, pad_slot, pad_count):
        """``encode``'s states at the real positions of a batch packed by ``samplers.pack_sequences``
        (``seq``, ``positions``, ``pad_slot``, ``pad_count`` (R, S) int64, ``mask`` (R, S, S) float
        additive): each segment's items see their own earlier items and the padding slot, whose
        logit carries the log of the row's padding count, so every item's state is the one of its
        left-padded row in the full window, at the cost of the real positions rather than of the
        batch's longest row. The attention dropout keeps each real key with probability 1 - p
        and the merged padding key's weight in the share Binomial(count, 1 - p) / count, as
        dropping the ``count`` padding keys one by one would (the same distribution)."""
        keep = (seq > 0).unsqueeze(-1).to(self.item.weight.dtype)
        h = self.dropout(self.item(seq) * self.scale + self.position(positions)) * keep
        heads = self.n_heads
        for norm_a, attn, norm_f, ffn in zip(self.attn_norm, self.attn, self.ffn_norm, self.ffn):
            q = norm_a(h)
            h = q + self._attend_packed(attn, q, h, mask, pad_slot, pad_count, heads)
            h = (h + ffn(norm_f(h))) * keep
        return self.last_norm(h)

    def _attend_packed(self, attn, q, kv, mask, pad_slot, pad_count, heads):
        """``attn(q, kv, kv, attn_mask=mask)`` of an ``nn.MultiheadAttention`` from its own
        parameters, with ``encode_packed``'s dropout of the merged padding keys."""
        rows, slots, d = q.shape
        hd = d // heads
        w, bias = attn.in_proj_weight, attn.in_proj_bias
        split = lambda x: x.reshape(rows, slots, heads, hd).transpose(1, 2)  # noqa: E731
        qp = split(nn.functional.linear(q, w[:d], bias[:d]))
        kp = split(nn.functional.linear(kv, w[d:2 * d], bias[d:2 * d]))
        vp = split(nn.functional.linear(kv, w[2 * d:], bias[2 * d:]))
        probs = torch.softmax((qp @ kp.transpose(-1, -2)) * (float(hd) ** -0.5) + mask.unsqueeze(1), dim=-1)
        p = attn.dropout
        if self.training and p > 0:
            factor = (torch.rand_like(probs) >= p).to(probs.dtype) / (1 - p)
            count = pad_count.to(probs.dtype).unsqueeze(1).expand(rows, heads, slots)
            kept = torch.binomial(count.contiguous(), torch.full_like(count, 1 - p))
            factor.scatter_(3, pad_slot.unsqueeze(1).expand(rows, heads, slots).unsqueeze(-1),
                            (kept / (count.clamp(min=1) * (1 - p))).unsqueeze(-1))
            probs = probs * factor
        out = (probs @ vp).transpose(1, 2).reshape(rows, slots, d)
        return attn.out_proj(out)

    def _blocks(self, h, keep, mask):
        for norm_a, attn, norm_f, ffn in zip(self.attn_norm, self.attn, self.ffn_norm, self.ffn):
            q = norm_a(h)
            a, _ = attn(q, h, h, attn_mask=mask, need_weights=False)
            h = q + a
            h = (h + ffn(norm_f(h))) * keep
        return self.last_norm(h)

    def item_weights(self):
        return self.item.weight[1:]

    def item_rows(self, items):
        """``item_weights()[items]`` as one embedding lookup (its gradient one pass of the table)."""
        return nn.functional.embedding(items + 1, self.item.weight)

    def forward(self, seq):
        """Next-item scores ``encode(seq)[:, -1] @ item_weights().T`` with eval semantics (no
        dropout), for ``seq`` of length ``max_len`` (what scoring passes), computed leaner: the
        last block runs for the last position only (the only one scored; its causal mask row
        allows every position), and attention is written out with shapes known up front, so the
        exported graph has no shape arithmetic (about half the nodes of ``nn.MultiheadAttention``'s)."""
        keep = (seq > 0).unsqueeze(-1).to(self.item.weight.dtype)
        h = (self.item(seq) * self.scale + self.position.weight) * keep
        last = len(self.attn) - 1
        for b, (norm_a, attn, norm_f, ffn) in enumerate(zip(self.attn_norm, self.attn, self.ffn_norm, self.ffn)):
            if b == last:
                q = norm_a(h[:, -1:])
                h = q + self._attend(attn, q, h, None)
                h = (h + ffn(norm_f(h))) * keep[:, -1:]
            else:
                q = norm_a(h)
                h = q + self._attend(attn, q, h, self.causal)
                h = (h + ffn(norm_f(h))) * keep
        return self.last_norm(h[:, 0]) @ self.item_weights().t()

    def _attend(self, attn, q, kv, mask):
        """``attn(q, kv, kv, attn_mask=mask)`` of an ``nn.MultiheadAttention`` in eval mode, from its
        own parameters: ``q`` (b, lq, d), ``kv`` (b, max_len, d), ``mask`` bool (lq, max_len) or None."""
        d, heads = self.dim, self.n_heads
        w, bias = attn.in_proj_weight, attn.in_proj_bias
        lq = 1 if mask is None else self.max_len
        qp = nn.functional.linear(q, w[:d], bias[:d])
        kp = nn.functional.linear(kv, w[d:2 * d], bias[d:2 * d])
        vp = nn.functional.linear(kv, w[2 * d:], bias[2 * d:])
        if heads > 1:
            hd = d // heads
            qp = qp.reshape(-1, lq, heads, hd).transpose(1, 2)
            kp = kp.reshape(-1, self.max_len, heads, hd).transpose(1, 2)
            vp = vp.reshape(-1, self.max_len, heads, hd).transpose(1, 2)
        logits = (qp @ kp.transpose(-1, -2)) * (float(d // heads) ** -0.5)
        if mask is not None:
            logits = logits.masked_fill(mask, float("-inf"))
        out = torch.softmax(logits, dim=-1) @ vp
        if heads > 1:
            out = out.transpose(1, 2).reshape(-1, lq, d)
        return attn.out_proj(out)


class GRU4RecNet(nn.Module):
    """GRU4Rec (Hidasi et al. 2016): item embedding, dropout, a GRU (or LSTM) over the sequence;
    the last hidden state is projected to item space and scored against output item embeddings."""

    def __init__(self, n_items: int, dim: int, hidden: int, n_layers: int, dropout: float, cell: str):
        super().__init__()
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(dim, hidden, num_layers=n_layers, batch_first=True,
                       dropout=dropout if n_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(hidden, dim)
        self.output = nn.Embedding(n_items, dim)
        self.output_bias = nn.Parameter(torch.zeros(n_items))
        nn.init.normal_(self.item.weight, std=dim ** -0.5)
        nn.init.normal_(self.output.weight, std=dim ** -0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def encode(self, seq, dropped: int = 0):
        """Hidden states of every position of ``seq``. ``dropped``: ``seq`` is the window of a
        longer left-padded batch less its first ``dropped`` columns, all padding (``trim_padding``):
        the recurrence starts from the state it reaches after ``dropped`` padding steps (zero
        inputs from a zero state, the same for every row), so the states are those of the full
        window's columns (with more than one layer, the inter-layer dropout of those steps is
        drawn once for the batch)."""
        h0 = None
        if dropped:
            _, h0 = self.rnn(torch.zeros(1, dropped, self.item.weight.shape[1], dtype=self.item.weight.dtype,
                                         device=seq.device))
            expand = lambda s: s.expand(-1, seq.shape[0], -1).contiguous()  # noqa: E731
            h0 = tuple(expand(s) for s in h0) if isinstance(h0, tuple) else expand(h0)
        out, _ = self.rnn(self.dropout(self.item(seq)), h0)
        return self.project(self.dropout(out))

    def item_weights(self):
        return self.output.weight

    def item_rows(self, items):
        """``item_weights()[items]`` as one embedding lookup (its gradient one pass of the table)."""
        return nn.functional.embedding(items, self.output.weight)

    def forward(self, seq):
        return self.encode(seq)[:, -1, :] @ self.output.weight.t() + self.output_bias


class CaserNet(nn.Module):
    """Caser (Tang & Wang 2018): the last L items as an L x d "image"; horizontal convolutions of
    heights 1..L (max-pooled over time) and vertical convolutions (weighted sums of the rows),
    a ReLU fully connected layer, concatenated with the user embedding, scored against output
    item embeddings and biases. ``forward(seq (b, L), users (b,)) -> (b, n_items)``; user index
    ``n_users`` is a learned "unknown user" (scoring from a given history)."""

    def __init__(self, n_users: int, n_items: int, dim: int, window: int, n_horizontal: int, n_vertical: int,
                 dropout: float):
        super().__init__()
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        # sparse gradients: a batch touches at most batch_size of the users, and the trainer steps
        # this table with a lazy SparseAdam (a dense step cleared and moved every user's row)
        self.user = nn.Embedding(n_users + 1, dim, sparse=True)
        self.vertical = nn.Conv2d(1, n_vertical, (window, 1))
        self.horizontal = nn.ModuleList(nn.Conv2d(1, n_horizontal, (h, dim)) for h in range(1, window + 1))
        self.fc = nn.Linear(n_vertical * dim + n_horizontal * window, dim)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Embedding(n_items, 2 * dim)
        self.output_bias = nn.Parameter(torch.zeros(n_items))
        self.window = window
        nn.init.normal_(self.item.weight, std=1.0 / dim)
        nn.init.normal_(self.user.weight, std=1.0 / dim)
        nn.init.normal_(self.output.weight, std=1.0 / (2 * dim))
        with torch.no_grad():
            self.item.weight[0].zero_()

    def encode(self, seq, users):
        """The convolutions written as the products they are (the same parameters and values; a
        convolution's backward on these small shapes cost more than the rest of a batch): the
        vertical one a weighted sum of the window's rows, each horizontal one of height h a
        product of every h consecutive rows, concatenated, with its (n_h, h * d) filters."""
        e = self.item(seq[:, -self.window:])  # (b, L, d)
        length, d = e.shape[1], e.shape[2]
        vw = self.vertical.weight[:, 0, :, 0]  # (n_v, L)
        v = (vw @ e + self.vertical.bias.unsqueeze(-1)).flatten(1)  # (b, n_v * d), as conv(...).flatten(1)
        hs = []
        for conv in self.horizontal:
            height = conv.weight.shape[2]
            rows = torch.cat([e[:, i:length - height + 1 + i] for i in range(height)], dim=2)  # (b, L - h + 1, h * d)
            h = torch.relu(nn.functional.linear(rows, conv.weight.reshape(conv.out_channels, height * d), conv.bias))
            hs.append(h.max(dim=1).values)
        z = torch.relu(self.fc(self.dropout(torch.cat([v] + hs, dim=1))))
        return torch.cat([z, self.user(users)], dim=1)

    def item_weights(self):
        return self.output.weight

    def item_rows(self, items):
        """``item_weights()[items]`` as one embedding lookup (its gradient one pass of the table)."""
        return nn.functional.embedding(items, self.output.weight)

    def forward(self, seq, users):
        return self.encode(seq, users) @ self.output.weight.t() + self.output_bias
