"""Batch sources for the training loop, vectorised NumPy (torch only where a tensor is the product).

- ``PairSampler``: (user, positive item, negatives) triples for pairwise/pointwise losses, with
  uniform or popularity-proportional negatives, rejecting the user's own positives.
- ``user_sequences`` / ``pad_sequences``: each user's items ordered by timestamp, cut to the
  last ``max_len`` and left-padded with 0 (item ids shifted by +1) for the sequential models.
- ``row_batches``: shuffled user batches for the autoencoders (their rows are the inputs).
- ``normalized_adjacency``: the symmetric-normalised user-item graph as a torch sparse tensor.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ... import validation

NEGATIVE_SAMPLERS = ("uniform", "popularity")


class PairSampler:
    """Shuffled positives of a CSR matrix with sampled negatives.

    ``negatives="uniform"`` draws items uniformly; ``"popularity"`` in proportion to
    ``count ** alpha`` (word2vec's 0.75 by default). A negative that is one of the user's
    positives is redrawn (``kernels.sampling``: Numba, parallel, reproducible for a seed at any
    thread count; after 32 draws the last one stays, for users who have seen almost everything).
    ``users``/``items`` are the positives, ``indptr``/``indices`` the sorted CSR they come from and
    ``cdf`` the negative distribution (None: uniform), for kernels that sample themselves.
    """

    def __init__(self, matrix: sp.csr_matrix, n_negatives: int = 1, negatives: str = "uniform",
                 alpha: float = 0.75):
        validation.choice("negatives", negatives, NEGATIVE_SAMPLERS)
        n_negatives = validation.integer("n_negatives", n_negatives, minimum=1)
        matrix = sp.csr_matrix(matrix)
        matrix.sort_indices()
        self.n_items = matrix.shape[1]
        self.n_negatives = int(n_negatives)
        self.indptr = matrix.indptr.astype(np.int64)
        self.indices = matrix.indices.astype(np.int32)
        self.users = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
        self.items = matrix.indices.astype(np.int64)
        self.cdf = None
        if negatives == "popularity":
            weight = np.bincount(self.items, minlength=self.n_items).astype(np.float64) ** alpha
            self.cdf = np.cumsum(weight) / weight.sum()

    def __len__(self) -> int:
        return len(self.items)

    def negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(len(users), n_negatives) items, none of them (bar rare leftovers) a positive of its user."""
        from ...kernels.sampling import sample_negatives

        seed = int(rng.integers(0, 2 ** 63))
        return sample_negatives(self.indptr, self.indices, users, self.n_items, self.n_negatives, seed, self.cdf)

    def epoch(self, rng: np.random.Generator, batch_size: int):
        """Yield (users, positives, negatives) int64 arrays over one shuffled pass."""
        order = rng.permutation(len(self.items))
        for start in range(0, len(order), batch_size):
            sel = order[start:start + batch_size]
            users = self.users[sel]
            yield users, self.items[sel], self.negatives(users, rng)


def user_sequences(matrix: sp.csr_matrix, timestamps: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Each user's items in time order (ties and missing timestamps: item order), as CSR-like
    ``(indptr int64, items int64)``."""
    matrix = sp.csr_matrix(matrix)
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    if timestamps is None:
        order = np.arange(matrix.nnz)
    else:
        order = np.lexsort((matrix.indices, timestamps, rows))
    return matrix.indptr.astype(np.int64).copy(), matrix.indices[order].astype(np.int64)


def pad_sequences(indptr: np.ndarray, items: np.ndarray, rows: np.ndarray, max_len: int,
                  drop_last=0) -> np.ndarray:
    """(len(rows), max_len) int64: the last ``max_len`` items of each row's sequence (after
    dropping its final ``drop_last``, a number or one per row), shifted by +1 and left-padded
    with 0 (most recent item in the last column)."""
    rows = np.asarray(rows, dtype=np.int64)
    ends = np.maximum(indptr[rows + 1] - drop_last, indptr[rows])
    take = np.minimum(ends - indptr[rows], max_len)
    offset = np.arange(max_len)[None, :] - (max_len - take)[:, None]
    mask = offset >= 0
    src = (ends - take)[:, None] + offset
    out = np.zeros((len(rows), max_len), dtype=np.int64)
    out[mask] = items[src[mask]] + 1
    return out


def batch_sequences(seq_indptr: np.ndarray, seq_items: np.ndarray, user_index: np.ndarray,
                    hist_indptr: np.ndarray, hist_indices: np.ndarray, max_len: int) -> np.ndarray:
    """(rows, max_len) padded sequences of a recommend batch: the stored time order for fitted
    users (``user_index >= 0``), the given history in the order given for rows with index -1."""
    users = np.asarray(user_index, dtype=np.int64)
    out = pad_sequences(seq_indptr, seq_items, np.maximum(users, 0), max_len)
    for r in np.flatnonzero(users < 0):
        given = hist_indices[hist_indptr[r]:hist_indptr[r + 1]].astype(np.int64)
        out[r] = pad_sequences(np.array([0, len(given)]), given, np.array([0]), max_len)[0]
    return out


def random_crop_ends(indptr: np.ndarray, rows: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """For each row, how many trailing items to drop so that a ``window``-long crop ends at a
    uniformly random position among those that fill the window (0 for rows no longer than it):
    long histories contribute all their items across epochs, not just the latest ``window``."""
    lengths = indptr[rows + 1] - indptr[rows]
    spare = np.maximum(lengths - window, 0)
    return np.floor(rng.random(len(rows)) * (spare + 1)).astype(np.int64)


def sliding_windows(indptr: np.ndarray, items: np.ndarray, window: int, rows: np.ndarray | None = None):
    """Every (user, previous ``window`` items, next item) of the sequences, for models that see a
    fixed window (Caser): returns (users (m,), windows (m, window) left-padded +1 ids, targets (m,)
    0-based). A target needs at least one item before it."""
    n_rows = len(indptr) - 1
    rows = np.arange(n_rows, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    lengths = indptr[rows + 1] - indptr[rows]
    n_targets = np.maximum(lengths - 1, 0)
    users = np.repeat(rows, n_targets)
    # position of each target within its sequence: 1 .. length-1
    first = np.repeat(np.cumsum(n_targets) - n_targets, n_targets)
    pos = np.arange(len(users)) - first + 1
    target_idx = indptr[users] + pos
    offset = np.arange(window)[None, :] - window  # -window .. -1 relative to the target
    src = target_idx[:, None] + offset
    valid = src >= indptr[users][:, None]
    out = np.zeros((len(users), window), dtype=np.int64)
    out[valid] = items[src[valid]] + 1
    return users, out, items[target_idx]


def row_batches(n_rows: int, batch_size: int, rng: np.random.Generator, rows: np.ndarray | None = None):
    """Yield shuffled batches of row indices (all rows, or the given ``rows``)."""
    rows = np.arange(n_rows, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    order = rows[rng.permutation(len(rows))]
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def leading_padding(padded: np.ndarray, keep: int = 1) -> int:
    """How many leading columns of a left-padded (rows, L) batch are padding (0) in every row,
    less ``keep`` (0 when fewer): the columns a model may drop (see ``SASRecNet.encode``)."""
    if padded.size == 0:
        return 0
    filled = (padded != 0).any(axis=0)
    first = int(np.argmax(filled)) if filled.any() else padded.shape[1]
    return max(first - keep, 0)


def pack_sequences(inputs: np.ndarray, targets: np.ndarray, dropped: int = 0):
    """The real positions of a left-padded batch (``inputs``, ``targets`` (B, L - dropped), 0 =
    padding, each row's items contiguous at the right; a window of L columns less its first
    ``dropped``, all padding) packed into fewer rows of ``L + 1`` slots, for an
    attention encoder that sees each row's padding only as keys (``SASRecNet.encode_packed``).

    Each row becomes a segment: one padding slot standing for all of the row's ``L - n`` padding
    positions, then its ``n`` items; segments are placed first-fit, longest first. Returns
    ``(inputs, targets, positions, mask)``: (R, L + 1) int64 packed ids (0 on padding and empty
    slots), their targets, each slot's column in the original window (its position embedding),
    the (R, L + 1, L + 1) float32 additive attention mask: a query attends the keys of its own
    segment up to itself (causal), the padding slot with ``log(L - n)`` (the row's padding keys,
    all alike, counted; -inf when the row has none); padding and empty slots attend only
    themselves (their states are discarded); then (R, L + 1) int64 ``pad_slot``, the column of
    each slot's padding slot (itself for padding and empty slots), and ``pad_count``, how many
    padding keys that slot stands for at each real slot (0 elsewhere), for an attention dropout
    that drops the merged keys as it would drop them one by one."""
    inputs = np.asarray(inputs)
    n_rows, length = inputs.shape[0], inputs.shape[1] + dropped
    cap = length + 1
    counts = (inputs > 0).sum(axis=1)
    order = np.argsort(-counts, kind="stable")
    free: list[int] = []  # slots left per packed row
    row_of, start_of = np.empty(n_rows, np.int64), np.empty(n_rows, np.int64)
    for b in order:
        need = int(counts[b]) + 1
        for r, left in enumerate(free):
            if left >= need:
                break
        else:
            r = len(free)
            free.append(cap)
        row_of[b], start_of[b] = r, cap - free[r]
        free[r] -= need
    n_packed = len(free)
    seg = np.full((n_packed, cap), -1, np.int64)  # the batch row of each slot
    out_in = np.zeros((n_packed, cap), np.int64)
    out_tg = np.zeros((n_packed, cap), np.int64)
    pos = np.zeros((n_packed, cap), np.int64)
    key_bias = np.zeros((n_packed, cap), np.float32)
    pad_slot = np.tile(np.arange(cap), (n_packed, 1))
    pad_count = np.zeros((n_packed, cap), np.int64)
    for b in range(n_rows):
        r, s, n = row_of[b], start_of[b], int(counts[b])
        seg[r, s:s + n + 1] = b
        pad = length - n
        pad_slot[r, s + 1:s + n + 1] = s
        pad_count[r, s + 1:s + n + 1] = pad
        key_bias[r, s] = np.log(pad) if pad > 0 else -np.inf
        out_in[r, s + 1:s + n + 1] = inputs[b, pad - dropped:]
        out_tg[r, s + 1:s + n + 1] = targets[b, pad - dropped:]
        pos[r, s + 1:s + n + 1] = np.arange(pad, length)
    idx = np.arange(cap)
    real = out_in > 0
    allowed = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0) & (idx[None, None, :] <= idx[None, :, None])
    mask = np.where(allowed & real[:, :, None], key_bias[:, None, :], np.float32(-np.inf)).astype(np.float32)
    diag = ~real
    mask[:, idx, idx] = np.where(diag, np.float32(0.0), mask[:, idx, idx])
    return out_in, out_tg, pos, mask, pad_slot, pad_count


def dense_rows(matrix: sp.csr_matrix, rows: np.ndarray, binary: bool = True) -> np.ndarray:
    """float32 dense (len(rows), n_items) rows of ``matrix`` (1 where present when ``binary``)."""
    sub = matrix[rows]
    out = np.zeros(sub.shape, dtype=np.float32)
    r = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
    out[r, sub.indices] = 1.0 if binary else sub.data
    return out


def normalized_adjacency(matrix: sp.csr_matrix):
    """D^-1/2 A D^-1/2 of the bipartite graph A = [[0, R], [R^T, 0]] (users first, then items),
    R the binarised interactions, as a coalesced torch sparse COO float32 tensor."""
    from ._torch import torch

    t = torch()
    r = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    r.data[:] = 1.0
    n_users, n_items = r.shape
    adj = sp.bmat([[None, r], [r.T, None]], format="coo", dtype=np.float32)
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    np.divide(1.0, np.sqrt(deg), out=inv_sqrt, where=deg > 0)
    values = (inv_sqrt[adj.row] * adj.data * inv_sqrt[adj.col]).astype(np.float32)
    index = t.from_numpy(np.vstack([adj.row, adj.col]).astype(np.int64))
    n = n_users + n_items
    return t.sparse_coo_tensor(index, t.from_numpy(values), (n, n), check_invariants=False).coalesce()
