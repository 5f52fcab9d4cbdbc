"""One compile policy for every kernel.

``FASTMATH`` allows reassociation and contraction but never ``nnan``/``ninf``: a ``-inf`` score is
how kernels mark an excluded item, and it must stay a mask. Metric kernels use no fastmath.
"""

from __future__ import annotations

import numba

FASTMATH = {"nsz", "arcp", "contract", "reassoc", "afn"}



def kernel(fn=None, *, parallel: bool = False, fastmath: bool = True, inline: bool = False):
    """``@njit`` with the project's options; ``parallel=True`` for ``prange`` kernels;
    ``inline=True`` for small helpers inlined into every caller (Numba IR), so that kernels can
    share them on their hot loops at no call cost."""
    options = dict(cache=True, nogil=True, parallel=parallel)
    if inline:
        options["inline"] = "always"
    if fastmath:
        options["fastmath"] = FASTMATH
    if fn is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(fn)
