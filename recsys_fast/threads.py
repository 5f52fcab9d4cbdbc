"""The one module that owns thread pools: Numba, torch, onnxruntime and BLAS.

Nothing here changes a pool behind the caller's back: ``limit(n)`` is a scoped context manager
that restores every pool it touched, and ``onnxruntime_session_options(n)`` builds the options an
onnxruntime session is created with (its pools belong to the session, sized once).

Which limits are per calling thread and which are process-wide:

- **Numba** (``numba.set_num_threads``): per calling Python thread. ``limit`` in one request
  thread does not change what another thread's kernels use, so it is safe in a service.
- **torch** (``torch.set_num_threads``, the intra-op pool): process-wide. Two threads inside
  ``limit`` with different counts race, and the last restore wins.
- **BLAS/OpenMP** (through threadpoolctl: OpenBLAS, MKL, BLIS, libgomp): process-wide for the
  OpenBLAS builds numpy and scipy ship (pthreads pool); threadpoolctl calls it thread-local only
  where the library allows. Same caveat as torch.
- **onnxruntime**: per session (``intra_op_num_threads``, ``inter_op_num_threads``), fixed when
  the session is created; see ``onnxruntime_session_options``.

So a per-request path should use ``limit(n, process_wide=False)`` (Numba only) or none at all,
and size torch/BLAS once at start-up. ``limit`` costs little per call: threadpoolctl's scan of
the loaded libraries (a walk over every shared object of the process, about a millisecond) runs
once and again only after new modules were imported; the BLAS limit is skipped when every pool
is already within it, and Numba and torch are only set when their count differs.

The only process-wide choice made on import of the kernels is Numba's threading layer: the
default (workqueue) aborts when two Python threads launch parallel kernels at once, so we prefer
tbb, then omp, both safe for concurrent calls, unless the user set ``NUMBA_THREADING_LAYER``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

from . import validation
from .errors import MissingExtraError

_SAFE_LAYERS = ("tbb", "omp")


def _available_layers() -> list[str]:
    found = []
    for layer, module in (("tbb", "tbbpool"), ("omp", "omppool")):
        try:
            __import__(f"numba.np.ufunc.{module}")
            found.append(layer)
        except Exception:  # ImportError, or OSError from a broken shared library
            pass
    return found


def configure_numba() -> str | None:
    """Pick a thread-safe Numba threading layer before the first parallel launch.

    Returns the chosen layer, or None when the user chose one or no safe layer exists (then the
    serving paths use serial kernels; see ``parallel_calls_are_safe``).
    """
    import numba

    if os.environ.get("NUMBA_THREADING_LAYER"):
        return None
    available = _available_layers()
    if not available:
        return None
    numba.config.THREADING_LAYER_PRIORITY = list(_SAFE_LAYERS) + ["workqueue"]
    numba.config.THREADING_LAYER = "threadsafe"  # tbb if importable, else omp
    return available[0]


def parallel_calls_are_safe() -> bool:
    """True when parallel kernels may be launched from several Python threads at once."""
    import numba

    layer = os.environ.get("NUMBA_THREADING_LAYER") or numba.config.THREADING_LAYER
    return layer in ("threadsafe", "safe", "tbb", "omp") and bool(_available_layers())


_blas = {"controller": None, "n_modules": -1}
_blas_lock = threading.Lock()


def _blas_controller():
    """threadpoolctl's controller of the loaded BLAS/OpenMP libraries, scanned once and again only
    when modules were imported since (a new extension module may have loaded a new library)."""
    n_modules = len(sys.modules)
    if _blas["n_modules"] != n_modules:
        with _blas_lock:
            if _blas["n_modules"] != n_modules:
                from threadpoolctl import ThreadpoolController

                _blas["controller"] = ThreadpoolController()
                _blas["n_modules"] = len(sys.modules)  # after the import above
    return _blas["controller"]


_numba_fns: list = []


def _numba_pool():
    """``(get, set, maximum)`` of the calling thread's Numba thread count.

    ``numba.get_num_threads``/``set_num_threads`` start the pool and take a lock on every call
    (7-10 us each here); once the pool is started, the ctypes functions they call after their
    checks cost well under a microsecond, so a per-request ``limit`` uses those. ``limit``
    never passes a count outside ``[1, NUMBA_NUM_THREADS]``, which is what the checks ensure.
    """
    if not _numba_fns:
        import numba
        from numba.np.ufunc import parallel

        numba.get_num_threads()  # starts the pool: the ctypes functions exist from here on
        get = getattr(parallel, "_get_num_threads", None)
        set_ = getattr(parallel, "_set_num_threads", None)
        if get is None or set_ is None:  # another numba layout: the public, slower functions
            get, set_ = numba.get_num_threads, numba.set_num_threads
        _numba_fns[:] = [get, set_, int(numba.config.NUMBA_NUM_THREADS)]
    return _numba_fns


@contextlib.contextmanager
def limit(n_threads: int | None, process_wide: bool = True):
    """Run the body with at most ``n_threads`` threads in every pool we know; restore after.

    ``None`` changes nothing. Numba's count is per calling thread; with ``process_wide=True``
    (the default) torch's intra-op pool and the BLAS/OpenMP pools are limited too, and those are
    process-wide (see the module docstring), so do not rely on them from concurrent request
    threads: pass ``process_wide=False`` there.
    """
    if n_threads is None:
        yield
        return
    n_threads = validation.integer("n_threads", n_threads, minimum=1, allow_none=True)
    get_numba, set_numba, max_numba = _numba_pool()
    old_numba = get_numba()
    new_numba = min(n_threads, max_numba)
    torch = sys.modules.get("torch") if process_wide else None
    old_torch = torch.get_num_threads() if torch is not None else None
    blas_limiter = None
    try:
        if new_numba != old_numba:
            set_numba(new_numba)
        if torch is not None and old_torch != n_threads:
            torch.set_num_threads(n_threads)
        if process_wide:
            controller = _blas_controller()
            if any(lib.num_threads > n_threads for lib in controller.lib_controllers):
                blas_limiter = controller.limit(limits=n_threads)
        yield
    finally:
        if blas_limiter is not None:
            blas_limiter.restore_original_limits()
        if new_numba != old_numba:
            set_numba(old_numba)
        if torch is not None and old_torch != n_threads:
            torch.set_num_threads(old_torch)


@contextlib.contextmanager
def blas_limit(n_threads: int):
    """Run the body with the BLAS/OpenMP pools limited to ``n_threads`` (process-wide; restored
    after). For kernels whose Numba threads each call BLAS on their own tile."""
    n_threads = validation.integer("n_threads", n_threads, minimum=1)
    controller = _blas_controller()
    limiter = None
    if any(lib.num_threads > n_threads for lib in controller.lib_controllers):
        limiter = controller.limit(limits=n_threads)
    try:
        yield
    finally:
        if limiter is not None:
            limiter.restore_original_limits()


def onnxruntime_session_options(n_threads: int | None = None, inter_op_threads: int = 1):
    """``onnxruntime.SessionOptions`` whose pools are sized here: ``n_threads`` intra-op threads
    (None: onnxruntime's default, one per physical core) and ``inter_op_threads`` for running
    independent graph nodes at once (1: sequential execution, which a top-k scoring graph wants;
    more switches the session to parallel execution). Pass the result to
    ``onnxruntime.InferenceSession(path, sess_options=...)``; the pools are the session's own.
    """
    n_threads = validation.integer("n_threads", n_threads, minimum=1, allow_none=True)
    inter_op_threads = validation.integer("inter_op_threads", inter_op_threads, minimum=1)
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingExtraError("onnxruntime", "serve") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 0 if n_threads is None else n_threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = (ort.ExecutionMode.ORT_SEQUENTIAL if inter_op_threads == 1
                              else ort.ExecutionMode.ORT_PARALLEL)
    return options


def report() -> dict:
    """Versions and pool sizes, for ``recsys-fast doctor`` and CI logs."""
    import numba
    import numpy as np
    import scipy

    info = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "numba threading layers available": ", ".join(_available_layers() + ["workqueue"]),
        "numba threading layer configured": os.environ.get("NUMBA_THREADING_LAYER") or numba.config.THREADING_LAYER,
        "numba threads": numba.config.NUMBA_NUM_THREADS,
        "cpu count": os.cpu_count(),
    }
    try:
        from threadpoolctl import threadpool_info

        info["BLAS pools"] = ", ".join(f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info()) or "none"
    except Exception as exc:  # pragma: no cover - diagnostic only
        info["BLAS pools"] = f"unavailable ({exc})"
    for module in ("pandas", "pyarrow", "torch", "onnxruntime", "dask", "implicit"):
        try:
            mod = __import__(module)
            info[module] = getattr(mod, "__version__", "installed")
        except ImportError:
            info[module] = "not installed"
    if info["torch"] != "not installed":
        import torch

        info["torch threads"] = torch.get_num_threads()
        info["torch cuda"] = torch.cuda.is_available()
    if info["onnxruntime"] != "not installed":
        import onnxruntime

        info["onnxruntime providers"] = ", ".join(onnxruntime.get_available_providers())
    return info
