"""Numba kernels: pure functions over NumPy arrays (CSR as indptr, indices, data).

No classes, no pandas, no torch, no scipy objects. Public wrappers one layer up validate and
coerce inputs once and call these. Importing this package picks a thread-safe Numba threading
layer (see ``recsys_fast.threads``) and compiles nothing: kernels compile lazily on first call
and are cached on disk.
"""

from .. import threads as _threads

_threads.configure_numba()
