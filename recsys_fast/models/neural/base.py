"""NeuralRecommender: the shared fit / score / save logic of the torch models.

A subclass provides
- ``_prepare(fit_data)``: its batch sources for the (validation-reduced) training data;
- ``_build_module()``: the training network; ``_train_batches`` / ``_batch_loss``: one epoch;
- ``_scoring_inputs(batch)``: the tensors its scoring network takes for a recommend batch;
- optionally ``_finalize(module, train)``: turn the trained network into the scoring network.

The scoring network (``scoring_module()``) is a plain ``torch.nn.Module`` whose ``forward``
takes tensors only and returns scores over all items, so it exports to ONNX unchanged. Weights
are saved as ``.npy`` arrays in the bundle and loaded without pickle or ``torch.load``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ... import threads, validation
from ...data.interactions import Interactions
from ...errors import BundleError
from ...kernels.topk import SERIAL_MAX_ROWS
from ..base import Recommender, RowBatch
from ..factors import FactorModel
from . import samplers
from ._torch import DEVICES, resolve_device, sanitise, seeded, to_numpy, torch
from .trainer import Trainer, best_epoch, holdout_validation, last_item_validation

INFERENCE_CHUNK = 512  # rows per forward pass when scoring


class NeuralRecommender(Recommender):
    """Common hyper-parameters (same names in every model):

    embedding_size, epochs, learning_rate, weight_decay, batch_size, n_negatives, seed, device
    ("auto" | "cpu" | "cuda"), early_stopping_patience (epochs without a better validation
    NDCG@10 before stopping; None: train all epochs), validation_fraction (share of each user's
    training items held out for early stopping; 0 disables validation and trains on everything;
    sequential models hold out each user's last item instead whenever it is > 0), n_threads
    (torch/BLAS threads while fitting and scoring; None leaves the pools alone), verbose (progress
    per epoch with loss and validation NDCG@10: None, the default, shows it once training runs
    over a few seconds, as a bar on a terminal and log lines otherwise; False never; see
    ``recsys_fast.progress``).

    After ``fit``: ``training_log_`` lists per-epoch loss, validation NDCG@10, wall and CPU seconds;
    ``best_epoch_`` is the epoch whose weights were kept (the last one without validation). To
    train on all of the data once early stopping has chosen: refit with
    ``validation_fraction=0, epochs=model.best_epoch_``.
    """

    sequential: ClassVar[bool] = False
    inference_chunk: ClassVar[int] = INFERENCE_CHUNK  # rows per forward pass when scoring
    optimizer: ClassVar[str] = "adam"
    decay_in_optimizer: ClassVar[bool] = True  # False: the model applies weight_decay in its loss

    def _check_params(self, p: dict) -> dict:
        """The shared hyper-parameters (those the model has); subclasses check their own after."""
        v = validation
        p = dict(p)
        for name in ("embedding_size", "epochs", "batch_size", "n_negatives"):
            if name in p:
                p[name] = v.integer(name, p[name], minimum=1)
        p["learning_rate"] = v.number("learning_rate", p["learning_rate"], minimum=0.0, min_inclusive=False)
        p["weight_decay"] = v.number("weight_decay", p["weight_decay"], minimum=0.0)
        p["seed"] = v.integer("seed", p["seed"], minimum=0, allow_none=True)
        p["device"] = v.choice("device", p["device"], DEVICES)
        p["early_stopping_patience"] = v.integer("early_stopping_patience", p["early_stopping_patience"], minimum=1,
                                                 allow_none=True)
        p["validation_fraction"] = v.number("validation_fraction", p["validation_fraction"], minimum=0.0,
                                            maximum=1.0, max_inclusive=False)
        p["n_threads"] = v.integer("n_threads", p["n_threads"], minimum=1, allow_none=True)
        p["verbose"] = None if p["verbose"] is None else v.boolean("verbose", p["verbose"])
        if "dropout" in p:
            p["dropout"] = v.number("dropout", p["dropout"], minimum=0.0, maximum=1.0, max_inclusive=False)
        if "negatives" in p:
            p["negatives"] = v.choice("negatives", p["negatives"], ("uniform", "popularity"))
        return p

    @property
    def history_(self):
        raise AttributeError(f"{type(self).__name__}.history_ was renamed training_log_ (the per-epoch "
                             "training log; history= is a user's items in recommend)")

    # ------------------------------------------------------------------ fitting
    def _fit(self, train: Interactions) -> None:
        self.n_users_, self.n_items_ = train.n_users, train.n_items
        t = torch()
        self.device_ = resolve_device(self.device)
        cuda = [self.device_.index or 0] if self.device_.type == "cuda" else []
        # fork_rng: seeding for this fit leaves the caller's global torch RNG state as it was
        with threads.limit(self.n_threads), t.random.fork_rng(devices=cuda):
            rng = seeded(self.seed)
            fit_data, validation = self._carve_validation(train)
            self._prepare(fit_data)
            module = self._build_module().to(self.device_)
            trainer = Trainer(self.epochs, self.learning_rate, self.weight_decay if self.decay_in_optimizer else 0.0,
                              self.optimizer, self.early_stopping_patience, self.verbose, type(self).__name__)
            self.training_log_ = trainer.run(self, module, rng, validation)
            self.best_epoch_ = best_epoch(self.training_log_)
            self.module_ = self._finalize(module, train)
            self.module_.eval()

    # ------------------------------------------------------------------ the feedback loop
    def _check_update(self, combined, user_pos, item_pos, new_in) -> None:
        """New items have no trained vectors: they are refused (refit to add them)."""
        from ...errors import DataError

        if combined.n_items != self.n_items_:
            fresh = np.setdiff1d(combined.item_map.ids, self.item_map_.ids)
            raise DataError(f"{type(self).__name__} has no trained vectors for {len(fresh)} new item(s) "
                            f"(e.g. {fresh[:5].tolist()}): refit to add them, or leave their events out",
                            source="update")
        if type(self)._update is NeuralRecommender._update:
            raise NotImplementedError(f"{type(self).__name__} has no update; refit it on the combined data")

    def _update(self, combined, user_pos, item_pos, new_in) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no update; refit it on the combined data")

    def _fold_in_update(self, combined, user_pos, new_in) -> None:
        """Fold-in for the dot-product scorers (``MF``: BPRMF, LightGCN's final embeddings): the
        item vectors (and biases) stay fixed; each touched user's vector is re-optimised on all of
        its interactions (old + new) with the BPR loss and the fitted ``weight_decay``, from its
        current vector (new users from zero), ``FOLD_IN_STEPS`` full-batch Adam steps with one
        uniform negative per positive per step, seeded. Other users keep their vectors."""
        from .nets import MF

        t = torch()
        old = self.module_
        users = np.unique(new_in.row_of_nnz()).astype(np.int64)
        d = old.item.weight.shape[1]
        table = np.zeros((combined.n_users, d), dtype=np.float32)
        table[user_pos] = to_numpy(old.user.weight.detach())
        with threads.limit(self.n_threads), t.random.fork_rng(devices=[]):
            rng = np.random.default_rng([0 if self.seed is None else int(self.seed), 11])
            if len(users):
                table[users] = self._bpr_fold_in(combined.matrix, users, table[users], old, rng)
        module = MF(combined.n_users, self.n_items_, d, item_bias=old.bias is not None)
        with t.no_grad():
            module.user.weight.copy_(t.from_numpy(table))
            module.item.weight.copy_(old.item.weight.detach().cpu())
            if old.bias is not None:
                module.bias.copy_(old.bias.detach().cpu())
        self.module_ = module.to(self.device_).eval()
        self.n_users_ = combined.n_users

    FOLD_IN_STEPS = 100
    FOLD_IN_LEARNING_RATE = 0.05

    def _bpr_fold_in(self, matrix, users, start, scorer, rng):
        t = torch()
        items = scorer.item.weight.detach().cpu()
        bias = scorer.bias.detach().cpu() if scorer.bias is not None else None
        lens = np.diff(matrix.indptr)[users]
        owner = t.as_tensor(np.repeat(np.arange(len(users)), lens))
        pos_np = np.concatenate([matrix.indices[matrix.indptr[u]:matrix.indptr[u + 1]] for u in users])
        pos = t.as_tensor(pos_np.astype(np.int64))
        u = t.tensor(start, requires_grad=True)
        opt = t.optim.Adam([u], lr=self.FOLD_IN_LEARNING_RATE)
        for _ in range(self.FOLD_IN_STEPS):
            neg = t.as_tensor(rng.integers(0, items.shape[0], size=len(pos_np)))
            uv = u[owner]
            diff = (uv * (items[pos] - items[neg])).sum(-1)
            if bias is not None:
                diff = diff + bias[pos] - bias[neg]
            loss = -t.nn.functional.logsigmoid(diff).mean() + self.weight_decay * u.pow(2).sum() / (2 * len(users))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return u.detach().numpy()

    def _carve_validation(self, train: Interactions):
        if self.validation_fraction <= 0 or train.nnz == 0:
            return train, None
        vrng = np.random.default_rng([0 if self.seed is None else int(self.seed), 7])
        if self.sequential:
            indptr, items = samplers.user_sequences(train.matrix, train.timestamps)
            keep, validation = last_item_validation(train.matrix, indptr, items, vrng)
        else:
            keep, validation = holdout_validation(train.matrix, self.validation_fraction, vrng)
        return train.select(keep), validation

    def _prepare(self, fit_data: Interactions) -> None:
        raise NotImplementedError

    def _build_module(self):
        raise NotImplementedError

    def _train_batches(self, rng: np.random.Generator, epoch: int):
        raise NotImplementedError

    def _batch_loss(self, module, batch, step: int):
        raise NotImplementedError

    def _validation_scores(self, module, users: np.ndarray) -> np.ndarray:
        """Scores of internal users against the validation-reduced training data."""
        return self._run_chunked(module, self._user_inputs(users), len(users))

    def _user_inputs(self, users: np.ndarray) -> tuple:
        """The scoring network's inputs for known internal users (state of the current data)."""
        t = torch()
        return (t.as_tensor(users, dtype=t.long, device=self.device_),)

    def _finalize(self, module, train: Interactions):
        """The scoring network after training (default: the training network itself)."""
        return module

    def _tensor(self, array, dtype=None):
        t = torch()
        return t.as_tensor(array, dtype=dtype or t.long, device=self.device_)

    # ------------------------------------------------------------------ scoring
    def scoring_module(self):
        """The fitted scoring network: a ``torch.nn.Module`` in eval mode whose ``forward`` takes
        the tensors of ``_scoring_inputs`` (user indices, a user row, or a left-padded item-id
        sequence; see the model's docstring) and returns float scores over all items."""
        self.check_fitted()
        return self.module_

    def _scoring_inputs(self, batch: RowBatch) -> tuple:
        users = np.maximum(batch.user_index, 0)  # -1 only on rows the base pads away
        return self._user_inputs(users)

    def _score_rows(self, batch: RowBatch) -> np.ndarray:
        t = torch()
        n = len(batch.user_index)
        # a request of a few rows runs on one thread: a parallel region costs more than it saves
        # there (and far more on a busy machine, where a pool thread may not be scheduled at once)
        n_threads = 1 if n <= SERIAL_MAX_ROWS else self.n_threads
        with threads.limit(n_threads), t.inference_mode():
            return self._run_chunked(self.module_, self._scoring_inputs(batch), n)

    def _run_chunked(self, module, inputs: tuple, n: int) -> np.ndarray:
        out = np.empty((n, self.n_items_), dtype=np.float32)
        step = self.inference_chunk
        for start in range(0, n, step):
            part = tuple(x[start:start + step] for x in inputs)
            out[start:start + step] = to_numpy(module(*part).float())
        return out

    # ------------------------------------------------------------------ persistence
    def _extra_state(self) -> dict[str, np.ndarray]:
        """Arrays besides the network weights (e.g. user sequences)."""
        return {}

    def _set_extra_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        pass

    def _build_scoring_module(self):
        """An untrained scoring network of the saved shape, from params and n_users_/n_items_
        (the weights are loaded after)."""
        return self._build_module()

    def _shape_params(self) -> str:
        return ", ".join(f"{n}={getattr(self, n)!r}" for n in self.param_names()
                         if n in ("embedding_size", "n_layers", "hidden_sizes", "max_len", "n_heads", "n_blocks",
                                  "latent_size", "layers", "n_filters"))

    def _get_state(self):
        state = self.module_.state_dict()
        arrays = {sanitise(key): to_numpy(value) for key, value in state.items()}
        if len(arrays) != len(state):
            raise RuntimeError(f"weight names collide once sanitised for the bundle: {sorted(state)}")
        arrays.update(self._extra_state())
        return arrays

    def _get_meta(self):
        state_keys = {sanitise(key): key for key in self.module_.state_dict()}
        return {"state_keys": state_keys, "n_users": int(self.n_users_), "n_items": int(self.n_items_),
                "training_log": getattr(self, "training_log_", [])}

    def _set_state(self, arrays, meta):
        t = torch()
        self.n_users_, self.n_items_ = int(meta["n_users"]), int(meta["n_items"])
        device = self.device
        if device == "cuda" and not t.cuda.is_available():
            device = "cpu"
        self.device_ = resolve_device(device)
        self.training_log_ = meta.get("training_log", [])
        self.best_epoch_ = best_epoch(self.training_log_)
        self._set_extra_state(arrays, meta)
        module = self._build_scoring_module()
        expected = module.state_dict()
        state = {key: t.from_numpy(np.array(arrays[name])) for name, key in meta["state_keys"].items()}
        if set(state) != set(expected):
            raise BundleError(f"the stored weights {sorted(set(state) ^ set(expected))} do not match the network "
                              f"that the manifest's parameters build")
        for key, value in state.items():
            if tuple(value.shape) != tuple(expected[key].shape) or value.dtype != expected[key].dtype:
                raise BundleError(f"weight {key!r} is stored as {tuple(value.shape)} {value.dtype} but the manifest's "
                                  f"parameters ({self._shape_params()}) build {tuple(expected[key].shape)} "
                                  f"{expected[key].dtype}; the parameters were edited or the arrays replaced")
        module.load_state_dict(state, strict=True)
        self.module_ = module.to(self.device_).eval()


class MFFactors(FactorModel):
    """``factors()`` of a model whose scoring network is ``nets.MF`` (user and item embeddings, an
    optional item bias): ranking then goes through ``FactorModel``'s sgemm + Numba top-k path, with
    the model's ``n_threads``. Mix in before ``NeuralRecommender``."""

    def factors(self):
        self.check_fitted()
        cached = getattr(self, "_factors_cache", None)
        if cached is None or cached[0] is not self.module_:  # refit or reloaded: new weights
            m = self.module_
            as32 = lambda t: np.ascontiguousarray(to_numpy(t), dtype=np.float32)  # noqa: E731
            arrays = (as32(m.user.weight), as32(m.item.weight), None if m.bias is None else as32(m.bias))
            self._factors_cache = (m, arrays)
            cached = self._factors_cache
        return cached[1]

    def _recommend_rows(self, batch: RowBatch, k: int):
        with threads.limit(self.n_threads):
            return super()._recommend_rows(batch, k)
