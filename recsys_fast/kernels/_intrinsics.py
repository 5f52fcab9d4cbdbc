"""Low-level helpers for kernels: a software prefetch (which Numba does not expose) and an
in-place element-wise maximum, each with a plain-Python form for ``NUMBA_DISABLE_JIT=1``.

Sparse kernels jump to a random CSR row for every stored entry they visit (row i's users, then
each user's items); the first cache lines of that row come from DRAM. Asking for them a few
rows ahead hides most of that latency (measured here: 2-4x on rows of 30-100 entries).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import config, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._config import kernel


def _prefetch_python(arr, index):
    """``prefetch`` with the JIT off (``NUMBA_DISABLE_JIT=1``): the kernels run as Python, and a
    cache hint has nothing to do."""


@intrinsic
def _prefetch_intrinsic(typingctx, arr, index):
    """Hint the CPU to load ``arr[index]``'s cache line (read, keep in all cache levels).

    A hint only: no effect on results, no fault on any address, so ``index`` may be anything
    within the array.
    """
    if not isinstance(arr, types.Array) or not isinstance(index, types.Integer):
        return None
    sig = types.void(arr, index)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        idx = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = builder.gep(ary.data, [idx])
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [i8p, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


# An intrinsic cannot be called from Python: with the JIT off the kernels call the no-op instead.
prefetch = _prefetch_python if config.DISABLE_JIT else _prefetch_intrinsic


def _maximum_into_python(out, x):
    np.maximum(out, x, out=out)


@kernel(inline=True)
def _maximum_into_compiled(out, x):
    np.maximum(out, x, out)  # Numba takes the output positionally only (NumPy deprecates that)


# ``out = max(out, x)`` element-wise, in place, without a temporary (the loop vectorises)
maximum_into = _maximum_into_python if config.DISABLE_JIT else _maximum_into_compiled
