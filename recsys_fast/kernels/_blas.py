"""BLAS ``sgemm`` callable from Numba kernels, with on-disk caching kept.

``np.dot`` inside a jitted function works but bakes the BLAS function pointer into the code, so
Numba refuses to cache it and every process compiles again. Here SciPy's ``cython_blas.sgemm``
is registered with LLVM under a fixed symbol name and declared as an external function: the
cached code refers to the name, which this module registers again on import (a dictionary
entry; nothing is compiled).
"""

from __future__ import annotations

import llvmlite.binding as _ll
import numpy as np
from numba import types
from numba.core.extending import get_cython_function_address

from ._config import kernel

_SYMBOL = "recsys_fast_sgemm"
_ll.add_symbol(_SYMBOL, get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))
_P = types.voidptr
_sgemm = types.ExternalFunction(_SYMBOL, types.void(_P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P))


@kernel
def gemm_into(a, bt, c):
    """``c[:] = a @ bt`` for float32 ``a`` (n, d), ``bt`` (d, m) and ``c`` (n, m) whose rows are
    each contiguous (row strides may exceed the width). Runs on the calling thread when the BLAS
    pool is limited to one thread."""
    n, d = a.shape
    m = bt.shape[1]
    if n == 0 or m == 0:
        return
    # row-major c = a @ bt is column-major c^T = bt^T @ a^T: sgemm("N", "N", m, n, d, ...)
    no_trans = np.array([78], np.uint8)  # "N"
    dims = np.array([m, n, d, _lead(bt), _lead(a), _lead(c)], np.int32)
    scal = np.array([1.0, 0.0], np.float32)
    _sgemm(no_trans.ctypes, no_trans.ctypes, dims[0:].ctypes, dims[1:].ctypes, dims[2:].ctypes, scal[0:].ctypes,
           bt.ctypes, dims[3:].ctypes, a.ctypes, dims[4:].ctypes, scal[1:].ctypes, c.ctypes, dims[5:].ctypes)


@kernel
def _lead(x):
    """Leading dimension (elements between rows) of a 2-d float32 array with contiguous rows; a
    single row may carry any stride (NumPy's relaxed strides), so its width is used."""
    if x.shape[0] <= 1:
        return max(1, x.shape[1])
    return x.strides[0] // 4
