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
