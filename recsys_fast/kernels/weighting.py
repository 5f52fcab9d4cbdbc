"""Row weighting of a CSR matrix before similarity: TF-IDF, BM25 and L2 row normalisation.

Each function returns new float32 ``data`` for the same ``indptr``/``indices`` structure, so
the caller keeps its CSR layout. Rows are the "documents" and columns the "terms": for
item-kNN pass items x users, as implicit does (its ``TFIDFRecommender`` weights
``counts.T``). The arithmetic is done in float64 and rounded once, and follows
``implicit.nearest_neighbours.tfidf_weight`` / ``bm25_weight`` exactly:

- ``idf[c] = log(n_rows) - log1p(df[c])``, ``df[c]`` = stored entries in column ``c``
  (may be negative when a column is in every row, as in implicit);
- TF-IDF: ``sqrt(x) * idf[c]``;
- BM25: ``x * (k1 + 1) / (k1 * length_norm[r] + x) * idf[c]`` with
  ``length_norm[r] = (1 - b) + b * row_sum[r] / mean(row_sum)`` (mean over all rows,
  empty ones included).
"""

from __future__ import annotations

import numpy as np

from .. import validation
from ._config import kernel
from ._csr_checks import check_csr


@kernel
def _idf(indices, n_rows, n_cols):
    df = np.zeros(n_cols, dtype=np.float64)
    for p in range(indices.shape[0]):
        df[indices[p]] += 1.0
    idf = np.empty(n_cols, dtype=np.float64)
    log_n = np.log(np.float64(n_rows))
    for c in range(n_cols):
        idf[c] = log_n - np.log1p(df[c])
    return idf


@kernel
def _tfidf(indices, data, idf):
    out = np.empty(data.shape[0], dtype=np.float32)
    for p in range(data.shape[0]):
        out[p] = np.float32(np.sqrt(np.float64(data[p])) * idf[indices[p]])
    return out


@kernel
def _row_sums(indptr, data):
    n_rows = indptr.shape[0] - 1
    row_sum = np.zeros(n_rows, dtype=np.float64)
    for r in range(n_rows):
        s = 0.0
        for p in range(indptr[r], indptr[r + 1]):
            s += data[p]
        row_sum[r] = s
    return row_sum


@kernel
def _bm25(indptr, indices, data, idf, average, k1, b):
    row_sum = _row_sums(indptr, data)
    out = np.empty(data.shape[0], dtype=np.float32)
    for r in range(indptr.shape[0] - 1):
        ratio = row_sum[r] / average if average > 0.0 else 1.0  # all-zero data: no length signal
        length_norm = (1.0 - b) + b * ratio
        for p in range(indptr[r], indptr[r + 1]):
            x = np.float64(data[p])
            out[p] = np.float32(x * (k1 + 1.0) / (k1 * length_norm + x) * idf[indices[p]])
    return out


@kernel
def _l2_normalize(indptr, data):
    n_rows = indptr.shape[0] - 1
    out = np.empty(data.shape[0], dtype=np.float32)
    for r in range(n_rows):
        s = 0.0
        for p in range(indptr[r], indptr[r + 1]):
            s += np.float64(data[p]) * data[p]
        inv = 1.0 / np.sqrt(s) if s > 0.0 else 0.0
        for p in range(indptr[r], indptr[r + 1]):
            out[p] = np.float32(data[p] * inv)
    return out


def idf_weights(indptr, indices, n_rows: int, n_cols: int) -> np.ndarray:
    """``idf[c] = log(n_rows) - log1p(df[c])`` (float64) of a CSR structure's columns."""
    indptr, indices, _ = check_csr(indptr, indices, np.ones(len(indices), np.float32), n_rows, n_cols,
                                   name="idf_weights")
    return _idf(indices, int(n_rows), int(n_cols))


def row_sum_mean(indptr, data) -> float:
    """The mean of the row sums over all rows, empty ones included: BM25's average length."""
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    n_rows = len(indptr) - 1
    return float(_row_sums(indptr, np.ascontiguousarray(data, np.float32)).mean()) if n_rows > 0 else 0.0


def _statistics(idf, n_cols: int, name: str) -> np.ndarray:
    idf = np.ascontiguousarray(idf, dtype=np.float64)
    if idf.shape != (n_cols,):
        from ..errors import DataError

        raise DataError(f"idf must hold one weight per column ({n_cols}), got shape {idf.shape}", source=name)
    return idf


def tfidf_weight(indptr, indices, data, n_rows: int, n_cols: int, idf=None) -> np.ndarray:
    """TF-IDF weights ``sqrt(x) * idf[column]`` (implicit's definition); float32 data.

    ``idf``: the column weights to use (e.g. a training matrix's ``idf_weights``, to weight new
    rows as the training rows were); None computes them from this matrix."""
    indptr, indices, data = check_csr(indptr, indices, data, n_rows, n_cols, name="tfidf_weight")
    if data.size and float(data.min()) < 0:
        raise _negative("tfidf_weight", data)
    idf = _idf(indices, int(n_rows), int(n_cols)) if idf is None else _statistics(idf, int(n_cols), "tfidf_weight")
    return _tfidf(indices, data, idf)


def bm25_weight(indptr, indices, data, n_rows: int, n_cols: int, k1: float = 100.0,
                b: float = 0.8, idf=None, average_length: float | None = None, **renamed) -> np.ndarray:
    """BM25 weights (implicit's definition and defaults: its ``K1=100, B=0.8`` are ``k1``, ``b``
    here); float32 data. ``idf`` and ``average_length`` (the mean row sum): the statistics to
    use, e.g. a training matrix's (``idf_weights``, ``row_sum_mean``) to weight new rows as the
    training rows were; None computes them from this matrix."""
    validation.renamed("bm25_weight", renamed, {"K1": "k1", "B": "b"})
    k1 = validation.number("k1", k1, minimum=0.0)
    b = validation.number("b", b, minimum=0.0, maximum=1.0)
    indptr, indices, data = check_csr(indptr, indices, data, n_rows, n_cols, name="bm25_weight")
    if data.size and float(data.min()) < 0:
        raise _negative("bm25_weight", data)
    idf = _idf(indices, int(n_rows), int(n_cols)) if idf is None else _statistics(idf, int(n_cols), "bm25_weight")
    if average_length is None:
        average_length = row_sum_mean(indptr, data)
    average_length = validation.number("average_length", average_length, minimum=0.0)
    return _bm25(indptr, indices, data, idf, float(average_length), k1, b)


def l2_normalize_rows(indptr, indices, data, n_rows: int, n_cols: int) -> np.ndarray:
    """Each row divided by its L2 norm (all-zero rows stay zero); float32 data."""
    indptr, indices, data = check_csr(indptr, indices, data, n_rows, n_cols, name="l2_normalize_rows")
    return _l2_normalize(indptr, data)


def _negative(name, data):
    from ..errors import DataError

    at = int(np.argmax(data < 0))
    return DataError(f"weights must be >= 0 for {name}, got {float(data[at])} at entry {at}",
                     source=name)
