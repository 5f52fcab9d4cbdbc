"""EASE: the closed-form linear item-item autoencoder (Steck 2019). NumPy only, no torch."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .. import validation
from ..errors import LimitError
from ..progress import progress
from ..data.interactions import Interactions
from .base import Recommender, RowBatch


class EASE(Recommender):
    """Scores = user row x B, with B = I - P / diag(P), P = (X^T X + lambda I)^-1 and a zero
    diagonal (no item recommends itself).

    Memory: the Gram matrix, its inverse and B are dense n_items x n_items (``dtype`` floats,
    about 3 such matrices at the peak: 30,000 items in float64 is ~21 GB), and time grows as
    n_items^3. ``fit`` refuses catalogues above ``max_items`` with a clear error; raise it
    knowingly. ``weight_decay`` is lambda, the L2 penalty on B (the same name as the L2 penalty
    of the neural models; it was ``regularization``). Scores users unseen in training from a
    ``history=`` (the row is the history). ``verbose``: progress of fits that take over a few
    seconds (None, the default; False: never; see ``recsys_fast.progress``).
    """

    kind = "ease"
    supports_history = True
    _RENAMED = {"regularization": "weight_decay"}

    def __init__(self, weight_decay: float = 500.0, max_items: int = 30_000, dtype: str = "float64",
                 verbose: bool | None = None, **renamed):
        self._init_params(locals(), renamed)

    def _check_params(self, p: dict) -> dict:
        return {
            "weight_decay": validation.number("weight_decay", p["weight_decay"], minimum=0.0, min_inclusive=False),
            "max_items": validation.integer("max_items", p["max_items"], minimum=1),
            "dtype": validation.choice("dtype", p["dtype"], ("float32", "float64")),
            "verbose": None if p["verbose"] is None else validation.boolean("verbose", p["verbose"]),
        }

    def _fit(self, train: Interactions) -> None:
        n = train.n_items
        if n > self.max_items:
            gb = 3 * n * n * np.dtype(self.dtype).itemsize / 1e9
            raise LimitError(f"EASE items (dense {n} x {n} matrices, ~{gb:.1f} GB at the peak)", n,
                             f"max_items={self.max_items}",
                             "filter rare items, or pass a larger max_items if the memory is there")
        with progress(3, f"EASE fit ({n} items)", "steps", enabled=self.verbose) as bar:
            x = sp.csr_matrix(train.matrix, dtype=self.dtype, copy=True)
            x.data[:] = 1.0
            gram = (x.T @ x).toarray()
            gram[np.diag_indices(n)] += self.weight_decay
            bar.update(1, step="gram")
            p = _spd_inverse(gram)
            bar.update(1, step="inverse")
            b = p / (-np.diag(p))[None, :]
            b[np.diag_indices(n)] = 0.0
            # C order: the Cholesky solve returns Fortran order, and a row x B product with a Fortran
            # B makes scipy copy all of B (n_items^2 floats) on every call
            self.weights_ = np.ascontiguousarray(b, dtype=np.float32)
            bar.update(1, step="weights")

    def _update(self, combined, user_pos, item_pos, new_in) -> None:
        """Recomputes B from the Gram matrix of old + new data: a refit, exactly. The Gram update
        itself is cheap, but every entry of B depends on the inverse, and a low-rank update of
        the inverse (Woodbury, rank = the touched users) is no cheaper once more than a few
        hundred users are touched and loses accuracy in float32; so EASE refits. New items join."""
        self._fit(combined)

    def _score_rows(self, batch: RowBatch) -> np.ndarray:
        rows = sp.csr_matrix((np.ones(len(batch.hist_indices), np.float32), batch.hist_indices, batch.hist_indptr),
                             shape=(len(batch.user_index), self.n_items))
        rows.sum_duplicates()
        rows.data[:] = 1.0
        return np.asarray(rows @ self.weights_, dtype=np.float32)

    def scoring_module(self):
        """A torch ``nn.Module`` computing ``rows (b, n_items) float -> rows @ B`` (for ONNX export)."""
        self.check_fitted()
        from .neural._torch import torch

        t = torch()

        class EASEScorer(t.nn.Module):
            def __init__(self, weights):
                super().__init__()
                self.register_buffer("weights", t.from_numpy(weights))

            def forward(self, rows):
                return rows @ self.weights

        return EASEScorer(self.weights_).eval()

    def _get_state(self):
        return {"weights": self.weights_}

    def _set_state(self, arrays, meta):
        self.weights_ = np.ascontiguousarray(arrays["weights"], dtype=np.float32)


def _spd_inverse(a: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix through Cholesky (about 2x faster than inv)."""
    import scipy.linalg

    c, lower = scipy.linalg.cho_factor(a, overwrite_a=True, check_finite=False)
    return scipy.linalg.cho_solve((c, lower), np.eye(a.shape[0], dtype=a.dtype), overwrite_b=True,
                                  check_finite=False)
