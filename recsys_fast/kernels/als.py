"""Implicit-feedback ALS (Hu, Koren and Volinsky 2008) half-steps in Numba.

Each row ``u`` of ``X`` (users, or items for the other half) minimises

    sum_i c_ui (p_ui - x_u . y_i)^2 + reg |x_u|^2,   p_ui = 1 on the row's entries, 0 elsewhere,
    c_ui = 1 + conf_ui on the entries, 1 elsewhere,

whose normal equations are ``(Y^T Y + reg I + sum_{i in u} conf_ui y_i y_i^T) x_u = sum_{i in u}
(1 + conf_ui) y_i``. The ``gram = Y^T Y + reg I`` part is shared by every row (computed once per
half-step by the caller: the "Y^T Y trick"), so a row costs O(nnz_u d + d^2) per product with A.

- ``cg_half_step``: ``cg_steps`` conjugate-gradient steps per row started from the current
  ``x_u`` (Takacs et al. 2011, as implicit does), in place, parallel over rows.
- ``solve_rows``: the exact solve (Cholesky) of given rows: fold-in of new users, and the
  reference the CG steps converge to.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._config import kernel

_ROWS_PER_BLOCK = 32  # small blocks: rows vary widely in length, and threads take blocks in turn
_TINY = 1e-20  # squared residual below which a row has converged
_ALIGN_FLOATS = 16  # 64 bytes: the work vectors' alignment (see _aligned_scratch)


@kernel
def _apply(gram, Y, indices, conf, lo, hi, v, out):
    """out = A v for the row whose entries are indices[lo:hi] (see module doc)."""
    d = len(v)
    for a in range(d):
        acc = np.float32(0.0)
        for b in range(d):
            acc += gram[a, b] * v[b]
        out[a] = acc
    for p in range(lo, hi):
        i = indices[p]
        yv = np.float32(0.0)
        for a in range(d):
            yv += Y[i, a] * v[a]
        w = conf[p] * yv
        for a in range(d):
            out[a] += w * Y[i, a]


@kernel(parallel=True)
def _cg_half_step(X, Y, gram, indptr, indices, conf, cg_steps, scratch):
    n, d = X.shape
    n_blocks = (n + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK
    for blk in prange(n_blocks):
        r = scratch[blk, 0, :d]
        p = scratch[blk, 1, :d]
        ap = scratch[blk, 2, :d]
        for u in range(blk * _ROWS_PER_BLOCK, min(n, (blk + 1) * _ROWS_PER_BLOCK)):
            lo, hi = indptr[u], indptr[u + 1]
            x = X[u]
            _apply(gram, Y, indices, conf, lo, hi, x, ap)  # r = b - A x
            for a in range(d):
                r[a] = -ap[a]
            for q in range(lo, hi):
                i = indices[q]
                w = np.float32(1.0) + conf[q]
                for a in range(d):
                    r[a] += w * Y[i, a]
            rs_old = np.float32(0.0)
            for a in range(d):
                p[a] = r[a]
                rs_old += r[a] * r[a]
            for _ in range(cg_steps):
                if rs_old < _TINY:
                    break
                _apply(gram, Y, indices, conf, lo, hi, p, ap)
                pap = np.float32(0.0)
                for a in range(d):
                    pap += p[a] * ap[a]
                if pap <= 0:
                    break
                step = rs_old / pap
                rs_new = np.float32(0.0)
                for a in range(d):
                    x[a] += step * p[a]
                    r[a] -= step * ap[a]
                    rs_new += r[a] * r[a]
                beta = rs_new / rs_old
                for a in range(d):
                    p[a] = r[a] + beta * p[a]
                rs_old = rs_new


@kernel
def _solve_rows(Y, gram, indptr, indices, conf):
    n = len(indptr) - 1
    d = Y.shape[1]
    out = np.zeros((n, d), np.float32)
    for u in range(n):
        a = gram.astype(np.float64)
        b = np.zeros(d, np.float64)
        for q in range(indptr[u], indptr[u + 1]):
            y = Y[indices[q]].astype(np.float64)
            c = np.float64(conf[q])
            a += c * np.outer(y, y)
            b += (1.0 + c) * y
        out[u] = np.linalg.solve(a, b).astype(np.float32)
    return out


def gram_matrix(Y: np.ndarray, reg: float) -> np.ndarray:
    """``Y^T Y + reg I`` as float32 (d, d), accumulated in float64."""
    g = Y.astype(np.float64).T @ Y.astype(np.float64)
    g[np.diag_indices_from(g)] += reg
    return g.astype(np.float32)


def _check(X, Y, indptr, indices, conf, n_rows):
    for name, a in (("Y", Y), ("conf", conf)) + ((("X", X),) if X is not None else ()):
        if a.dtype != np.float32 or not a.flags.c_contiguous:
            raise ValueError(f"{name} must be a C-contiguous float32 array, got {a.dtype}")
    if X is not None and X.shape[1] != Y.shape[1]:
        raise ValueError(f"X has {X.shape[1]} columns and Y {Y.shape[1]}")
    if len(indptr) != n_rows + 1 or len(indices) != len(conf) or indptr[-1] != len(indices):
        raise ValueError(f"CSR of {len(indptr) - 1} rows, {len(indices)} indices and {len(conf)} values does not "
                         f"describe {n_rows} rows")
    if len(indices) and (indices.min() < 0 or indices.max() >= Y.shape[0]):
        raise ValueError(f"column indices must lie in [0, {Y.shape[0]})")


def cg_half_step(X: np.ndarray, Y: np.ndarray, reg: float, indptr: np.ndarray, indices: np.ndarray,
                 conf: np.ndarray, cg_steps: int = 3) -> None:
    """Update every row of ``X`` (n, d) in place by ``cg_steps`` conjugate-gradient steps towards
    its least-squares solution against ``Y`` (m, d), with the rows' entries as CSR ``(indptr,
    indices, conf)`` over the m columns (``conf`` = c - 1 = alpha * weight)."""
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    _check(X, Y, indptr, indices, conf, X.shape[0])
    n_blocks = (X.shape[0] + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK
    scratch = _aligned_scratch(n_blocks, X.shape[1])
    _cg_half_step(X, Y, gram_matrix(Y, reg), indptr, indices, conf, np.int64(cg_steps), scratch)


def _aligned_scratch(n_blocks: int, d: int) -> np.ndarray:
    """(n_blocks, 3, >= d) float32 work vectors, each starting on a 64-byte boundary.

    The kernel's sums may be vectorised with reassociation, and the rounding of such a sum can
    depend on where its vectors lie in memory: with vectors from each thread's own allocations,
    the same seed gave models differing in the last bits between runs and thread counts. With
    the work vectors placed here, the addresses (mod 64) are the same on every run."""
    width = (d + _ALIGN_FLOATS - 1) // _ALIGN_FLOATS * _ALIGN_FLOATS
    size = n_blocks * 3 * width
    buf = np.empty(size + _ALIGN_FLOATS, dtype=np.float32)
    start = (-(buf.ctypes.data // 4)) % _ALIGN_FLOATS
    return buf[start:start + size].reshape(n_blocks, 3, width)


def solve_rows(Y: np.ndarray, reg: float, indptr: np.ndarray, indices: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """The exact least-squares rows (n, d) float32 for the CSR rows ``(indptr, indices, conf)``."""
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    conf = np.ascontiguousarray(conf, dtype=np.float32)
    _check(None, Y, indptr, indices, conf, len(indptr) - 1)
    return _solve_rows(Y, gram_matrix(Y, reg), indptr, indices, conf)
