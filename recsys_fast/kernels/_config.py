"""One compile policy for every kernel.

``FASTMATH`` allows reassociation and contraction but never ``nnan``/``ninf``: a ``-inf`` score is
how kernels mark an excluded item, and it must stay a mask. Metric kernels use no fastmath, and
neither do the similarity graph kernels (``similarity._topk_similarity`` and its scoring helpers,
``similarity_update``): reassociation there let the compiler round one score formula differently
in different callers, and ``update_topk_similarity`` recomputes those scores bit for bit.
"""

from __future__ import annotations

import types
from typing import Any, NamedTuple

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


class KernelPair(NamedTuple):
    """One ``prange`` kernel compiled twice: ``parallel`` for batches, ``serial`` (``prange`` runs
    as ``range``) for a request's few rows, which then pay no parallel launch."""

    parallel: Any
    serial: Any

    def __call__(self, *args, parallel: bool = True):
        return (self.parallel if parallel else self.serial)(*args)


def kernel_pair(fn=None, *, fastmath: bool = True):
    """``kernel`` twice over one function body: see ``KernelPair``. The serial form compiles a
    copy of the function under its own qualified name, because Numba's on-disk cache keys a
    function by its name and line, not by its compile options."""
    if fn is None:
        return lambda f: kernel_pair(f, fastmath=fastmath)
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__, fn.__closure__)
    twin.__qualname__ = fn.__qualname__ + "_serial"
    twin.__doc__ = fn.__doc__
    return KernelPair(kernel(fn, parallel=True, fastmath=fastmath), kernel(twin, fastmath=fastmath))
