"""The one training loop of the neural models: epochs of sampler batches, a loss, Adam/AdamW,
validation NDCG@10 after each epoch, early stopping that restores the best weights, a tqdm bar.

The model supplies the pieces (``_train_batches``, ``_batch_loss``, ``_validation_scores``); the
loop owns the order of events, so every model trains, validates and stops the same way. A model
may instead supply a fused epoch, ``_fused_epoch(module, rng, epoch) -> mean loss``, that updates
the module's weights itself (BPRMF's Numba kernel); validation, early stopping and the restore
of the best weights are the same either way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ... import validation
from ...progress import progress
from ._torch import torch

OPTIMIZERS = ("adam", "adamw")
VALIDATION_K = 10
MAX_VALIDATION_USERS = 5000  # validation cost is one score row per user: cap it on big data sets
_VAL_CHUNK = 1024


@dataclass
class Validation:
    """Held-out items of a sample of users, carved from the training data.

    ``users`` are internal user indices; ``exclude`` (len(users) x n_items CSR) the items each
    still trains on (removed from the candidates), ``targets`` the held-out items.
    """

    users: np.ndarray
    exclude: sp.csr_matrix
    targets: sp.csr_matrix

    def ndcg(self, score_fn, k: int = VALIDATION_K) -> float:
        """Mean NDCG@k over the users (the library's one NDCG, ``kernels.metrics``), full ranking,
        training items excluded; a user without held-out items counts 0."""
        from ...kernels.metrics import NDCG, per_user_metrics
        from ...kernels.topk import dense_topk

        total = 0.0
        for start in range(0, len(self.users), _VAL_CHUNK):
            stop = min(len(self.users), start + _VAL_CHUNK)
            scores = np.ascontiguousarray(score_fn(self.users[start:stop]), dtype=np.float32)
            ex = self.exclude[start:stop]
            top, _ = dense_topk(scores, k, ex.indptr.astype(np.int64), ex.indices.astype(np.int32),
                                np.zeros(0, dtype=np.bool_))
            tg = self.targets[start:stop]
            tg.sort_indices()
            total += float(np.nansum(per_user_metrics(top, tg.indptr, tg.indices, [k])[NDCG, :, 0]))
        return total / max(len(self.users), 1)


def holdout_validation(matrix: sp.csr_matrix, fraction: float, rng: np.random.Generator):
    """Per-user random holdout of ``fraction`` of each user's items (users with >= 2 items keep
    at least one). Returns (keep mask over matrix.data, Validation or None)."""
    n_users = matrix.shape[0]
    counts = np.diff(matrix.indptr)
    n_val = np.minimum(np.rint(counts * fraction).astype(np.int64), np.maximum(counts - 1, 0))
    rows = np.repeat(np.arange(n_users), counts)
    order = np.lexsort((rng.random(matrix.nnz), rows))  # random order within each row
    rank = np.empty(matrix.nnz, dtype=np.int64)
    rank[order] = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], counts)
    held = rank < n_val[rows]
    return ~held, _validation_from_mask(matrix, held, rng)


def last_item_validation(matrix: sp.csr_matrix, seq_indptr: np.ndarray, seq_items: np.ndarray,
                         rng: np.random.Generator):
    """Hold out each user's most recent item (users with >= 2 items)."""
    counts = np.diff(seq_indptr)
    users = np.flatnonzero(counts >= 2)
    last_items = seq_items[seq_indptr[users + 1] - 1]
    rows = np.repeat(np.arange(matrix.shape[0]), counts)
    held_keys = users * matrix.shape[1] + last_items
    keys = rows * matrix.shape[1] + matrix.indices
    held = np.isin(keys, held_keys)
    return ~held, _validation_from_mask(matrix, held, rng)


def _validation_from_mask(matrix, held, rng):
    if not held.any():
        return None
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    users = np.unique(rows[held])
    if len(users) > MAX_VALIDATION_USERS:
        users = np.sort(rng.choice(users, MAX_VALIDATION_USERS, replace=False))
    sub = matrix[users]  # a copy: the caller's matrix is never modified
    sub_held = held[np.concatenate([np.arange(matrix.indptr[u], matrix.indptr[u + 1]) for u in users])]
    held_m = sp.csr_matrix((sub_held.astype(np.float32), sub.indices.copy(), sub.indptr.copy()), shape=sub.shape)
    keep_m = sp.csr_matrix(((~sub_held).astype(np.float32), sub.indices.copy(), sub.indptr.copy()), shape=sub.shape)
    held_m.eliminate_zeros()
    keep_m.eliminate_zeros()
    return Validation(users, keep_m, held_m)


class Trainer:
    """Runs ``epochs`` of training on ``model``'s batches; keeps the weights of the best
    validation epoch and stops after ``patience`` epochs without improvement (None: never)."""

    def __init__(self, epochs: int, learning_rate: float, weight_decay: float = 0.0, optimizer: str = "adam",
                 patience: int | None = 3, verbose: bool | None = None, desc: str = "train"):
        validation.choice("optimizer", optimizer, OPTIMIZERS)
        self.epochs, self.learning_rate, self.weight_decay = epochs, learning_rate, weight_decay
        self.optimizer, self.patience, self.verbose, self.desc = optimizer, patience, verbose, desc

    def _optimizers(self, module) -> list:
        """Adam/AdamW over the dense parameters, and a lazy ``SparseAdam`` over the weights of
        ``nn.Embedding(sparse=True)`` tables: their rows move only when a batch looks them up, so
        a step costs O(batch) instead of O(table) (``weight_decay`` applies to the dense ones)."""
        t = torch()
        sparse = [m.weight for m in module.modules() if isinstance(m, t.nn.Embedding) and m.sparse]
        taken = {id(p) for p in sparse}
        dense = [p for p in module.parameters() if id(p) not in taken]
        cls = t.optim.AdamW if self.optimizer == "adamw" else t.optim.Adam
        # fused: one kernel per step instead of one pass per operation of Adam's update (on big
        # tables, e.g. LightGCN's or MultVAE's, the unfused passes cost as much as the batch); it
        # does not bump the parameters' _version, so ``run`` does (``nets.scoring_cache`` keys on it)
        fused = {"fused": True} if dense and all(p.device.type == "cpu" and p.dtype == t.float32 for p in dense) else {}
        optimizers = [cls(dense, lr=self.learning_rate, weight_decay=self.weight_decay, **fused)] if dense else []
        if sparse:
            optimizers.append(t.optim.SparseAdam(sparse, lr=self.learning_rate))
        return optimizers

    def run(self, model, module, rng: np.random.Generator, validation: Validation | None) -> list[dict]:
        t = torch()
        fused = getattr(model, "_fused_epoch", None)
        optimizers = self._optimizers(module) if fused is None else []
        fused_params = [p for opt in optimizers if opt.defaults.get("fused") for g in opt.param_groups
                        for p in g["params"]]
        history: list[dict] = []
        best_score, best_state, since_best = -np.inf, None, 0
        bar = progress(self.epochs, self.desc, "epoch", enabled=self.verbose)
        step = 0
        for epoch in range(self.epochs):
            started, cpu_started = time.perf_counter(), time.process_time()
            module.train()
            if fused is not None:
                record = {"epoch": epoch + 1, "loss": fused(module, rng, epoch)}
            else:
                total, n_batches = 0.0, 0
                for batch in model._train_batches(rng, epoch):
                    loss = model._batch_loss(module, batch, step)
                    for opt in optimizers:
                        opt.zero_grad(set_to_none=True)
                    loss.backward()
                    for opt in optimizers:
                        opt.step()
                    if fused_params:  # a fused step leaves _version alone: caches keyed on it would go stale
                        t.autograd.graph.increment_version(fused_params)
                    total += float(loss.detach())
                    n_batches += 1
                    step += 1
                record = {"epoch": epoch + 1, "loss": total / max(n_batches, 1)}
            if validation is not None:
                module.eval()
                with t.no_grad():
                    record["val_ndcg@10"] = validation.ndcg(lambda users: model._validation_scores(module, users))
            record["seconds"] = time.perf_counter() - started
            record["cpu_seconds"] = time.process_time() - cpu_started  # every thread of the process
            history.append(record)
            bar.update(1, **{k: round(v, 4) for k, v in record.items() if k in ("loss", "val_ndcg@10")})
            if validation is None:
                continue
            if record["val_ndcg@10"] > best_score:
                best_score, since_best = record["val_ndcg@10"], 0
                best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            else:
                since_best += 1
                if self.patience is not None and since_best >= self.patience:
                    break
        bar.close()
        if best_state is not None:
            module.load_state_dict(best_state)
        module.eval()
        return history


def best_epoch(history: list[dict]) -> int:
    """The epoch (1-based) whose weights ``Trainer.run`` kept: the first with the best validation
    NDCG@10, or the last epoch when there was no validation; 0 for an empty history."""
    if not history:
        return 0
    scores = [r.get("val_ndcg@10") for r in history]
    if any(s is None for s in scores):
        return int(history[-1]["epoch"])
    return int(history[int(np.argmax(scores))]["epoch"])

