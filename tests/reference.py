"""Plain NumPy/Python references, written straight from the formulas in the README.

Every kernel is compared against one of these on random inputs. They are slow on purpose:
clarity over speed.
"""

from __future__ import annotations

import numpy as np


def topk_reference(scores: np.ndarray, k: int, excluded: list[set] | None = None, allowed=None):
    """Row-wise top-k by score desc, ties by lower index; padding -1/-inf."""
    n, m = scores.shape
    out_i = np.full((n, k), -1, dtype=np.int64)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    for r in range(n):
        cands = [j for j in range(m) if not np.isnan(scores[r, j])
                 and (excluded is None or j not in excluded[r]) and (allowed is None or allowed[j])]
        cands.sort(key=lambda j: (-scores[r, j], j))
        for pos, j in enumerate(cands[:k]):
            out_i[r, pos] = j
            out_s[r, pos] = scores[r, j]
    return out_i, out_s


def knn_topk_reference(a_rows, b_rows, n_items: int, k: int, excluded=None, allowed=None, fill_order=None):
    """kNN scoring from the definition: rows of A and B as lists of (column, value) pairs.

    Candidates of row r: items j with A[r, s] and B[s, j] both stored, not excluded, allowed;
    score = sum_s A[r, s] * B[s, j] (float64). Best k by (score desc, index asc); then items of
    ``fill_order`` not excluded, allowed and not chosen, scored base-1, base-2, ... with
    base = min(0, lowest chosen score); then padding -1 / -inf.
    """
    n = len(a_rows)
    out_i = np.full((n, k), -1, dtype=np.int64)
    out_s = np.full((n, k), -np.inf, dtype=np.float64)
    for r in range(n):
        excl = set() if excluded is None else set(excluded[r])
        scores: dict[int, float] = {}
        for s, w in a_rows[r]:
            for j, v in b_rows[s]:
                if j in excl or (allowed is not None and not allowed[j]):
                    continue
                scores[j] = scores.get(j, 0.0) + float(w) * float(v)
        chosen = sorted(scores, key=lambda j: (-scores[j], j))[:k]
        for pos, j in enumerate(chosen):
            out_i[r, pos] = j
            out_s[r, pos] = scores[j]
        if fill_order is not None and len(chosen) < k:
            base = min(0.0, out_s[r, len(chosen) - 1]) if chosen else 0.0
            taken = set(scores)
            pos = len(chosen)
            for j in fill_order:
                if pos == k:
                    break
                if j in excl or j in taken or (allowed is not None and not allowed[j]):
                    continue
                taken.add(j)
                out_i[r, pos] = j
                out_s[r, pos] = base - (pos - len(chosen) + 1)
                pos += 1
    return out_i, out_s


def csr_rows(matrix) -> list[list[tuple[int, float]]]:
    """A scipy CSR matrix as a list of rows of (column, value) pairs, in stored order."""
    out = []
    for r in range(matrix.shape[0]):
        lo, hi = matrix.indptr[r], matrix.indptr[r + 1]
        out.append(list(zip(matrix.indices[lo:hi].tolist(), matrix.data[lo:hi].tolist())))
    return out


def topk_similarity_reference(matrix, k: int, exclude_self: bool = True):
    """Cosine top-k neighbour graph of the rows of a scipy CSR matrix, dense NumPy (tests' stand-in).

    Row i holds at most k rows j != i with nonzero co-occurrence, by similarity desc, ties by lower j.
    Returns (indptr int64, indices int32, data float32).
    """
    x = np.asarray(matrix.todense(), dtype=np.float64)
    norms = np.sqrt((x * x).sum(axis=1))
    dots = x @ x.T
    co = (x != 0).astype(np.float64) @ (x != 0).T.astype(np.float64)
    indptr = [0]
    indices, data = [], []
    for i in range(x.shape[0]):
        cands = [j for j in range(x.shape[0]) if co[i, j] > 0 and not (exclude_self and i == j)]
        sims = {j: dots[i, j] / (norms[i] * norms[j]) if norms[i] > 0 and norms[j] > 0 else 0.0 for j in cands}
        cands.sort(key=lambda j: (-sims[j], j))
        for j in cands[:k]:
            indices.append(j)
            data.append(sims[j])
        indptr.append(len(indices))
    return (np.asarray(indptr, np.int64), np.asarray(indices, np.int32), np.asarray(data, np.float32))
