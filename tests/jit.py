"""Sizes for the kernel tests in both modes of CI.

With ``NUMBA_DISABLE_JIT=1`` the kernels run as plain Python, so that coverage can measure their
bodies; that is about two orders of magnitude slower, and the largest cases shrink (the same
code paths, fewer rows). ``size(compiled, python)`` picks the size for the mode in use.
"""

from __future__ import annotations

import numba

JIT_OFF = bool(numba.config.DISABLE_JIT)


def size(compiled: int, python: int) -> int:
    """``compiled`` rows (or repeats) normally, ``python`` with the JIT off."""
    return python if JIT_OFF else compiled
