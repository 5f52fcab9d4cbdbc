"""The one module that owns thread pools: Numba, torch, onnxruntime intra-op and BLAS.

Nothing here changes a pool behind the caller's back: ``limit(n)`` is a scoped context
manager that restores every pool it touched. The only process-wide choice made on import of
the kernels is Numba's threading layer: the default (workqueue) aborts when two Python threads
launch parallel kernels at once, so we prefer tbb, then omp, both safe for concurrent calls,
unless the user set ``NUMBA_THREADING_LAYER`` themselves.
"""

from __future__ import annotations

import contextlib
import os
import sys

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


@contextlib.contextmanager
def limit(n_threads: int | None):
    """Run the body with at most ``n_threads`` threads in every pool we know; restore after.

    ``None`` changes nothing. Numba's count is per calling thread, so this is safe to use in
    one request handler while another runs with its own limit.
    """
    if n_threads is None:
        yield
        return
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    import numba
    from threadpoolctl import threadpool_limits

    old_numba = numba.get_num_threads()
    torch = sys.modules.get("torch")
    old_torch = torch.get_num_threads() if torch is not None else None
    try:
        numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
        if torch is not None:
            torch.set_num_threads(n_threads)
        with threadpool_limits(limits=n_threads):
            yield
    finally:
        numba.set_num_threads(old_numba)
        if torch is not None:
            torch.set_num_threads(old_torch)


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
