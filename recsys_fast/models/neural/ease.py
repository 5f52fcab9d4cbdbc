"""EASE: the closed-form linear item-item autoencoder (Steck 2019). NumPy only, no torch."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ...data.interactions import Interactions
from ..base import Recommender, RowBatch


class EASE(Recommender):
    """Scores = user row x B, with B = I - P / diag(P), P = (X^T X + lambda I)^-1 and a zero
    diagonal (no item recommends itself).

    Memory: the Gram matrix, its inverse and B are dense n_items x n_items (``dtype`` floats,
    about 3 such matrices at the peak: 30,000 items in float64 is ~21 GB), and time grows as
    n_items^3. ``fit`` refuses catalogues above ``max_items`` with a clear error; raise it
    knowingly. ``regularization`` is lambda. Scores users unseen in training from a
    ``history=`` (the row is the history).
    """

    kind = "ease"
    supports_history = True

    def __init__(self, regularization: float = 500.0, max_items: int = 30_000, dtype: str = "float64"):
        if not regularization > 0:
            raise ValueError(f"regularization must be > 0, got {regularization!r}")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items!r}")
        self.regularization, self.max_items, self.dtype = float(regularization), int(max_items), dtype

    def _fit(self, train: Interactions) -> None:
        n = train.n_items
        if n > self.max_items:
            gb = 3 * n * n * np.dtype(self.dtype).itemsize / 1e9
            raise MemoryError(f"EASE needs dense {n} x {n} item matrices (~{gb:.1f} GB at the peak) and this "
                              f"data has {n} items > max_items={self.max_items}; filter rare items or pass a "
                              f"larger max_items if the memory is there")
        x = sp.csr_matrix(train.matrix, dtype=self.dtype, copy=True)
        x.data[:] = 1.0
        gram = (x.T @ x).toarray()
        gram[np.diag_indices(n)] += self.regularization
        p = _spd_inverse(gram)
        b = p / (-np.diag(p))[None, :]
        b[np.diag_indices(n)] = 0.0
        self.weights_ = b.astype(np.float32)

    def _score_rows(self, batch: RowBatch) -> np.ndarray:
        rows = sp.csr_matrix((np.ones(len(batch.hist_indices), np.float32), batch.hist_indices, batch.hist_indptr),
                             shape=(len(batch.user_index), self.n_items))
        rows.sum_duplicates()
        rows.data[:] = 1.0
        return np.asarray(rows @ self.weights_, dtype=np.float32)

    def scoring_module(self):
        """A torch ``nn.Module`` computing ``rows (b, n_items) float -> rows @ B`` (for ONNX export)."""
        self.check_fitted()
        from ._torch import torch

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
        self.weights_ = arrays["weights"].astype(np.float32)


def _spd_inverse(a: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix through Cholesky (about 2x faster than inv)."""
    import scipy.linalg

    c, lower = scipy.linalg.cho_factor(a, overwrite_a=True, check_finite=False)
    return scipy.linalg.cho_solve((c, lower), np.eye(a.shape[0], dtype=a.dtype), overwrite_b=True,
                                  check_finite=False)
