"""threads.limit applies every limit it claims and restores it; the pools are scanned once;
onnxruntime sessions are sized by threads.onnxruntime_session_options."""

from __future__ import annotations

import threading

import numba
import numpy as np  # noqa: F401  (loads the BLAS that threadpoolctl controls)
import pytest

from recsys_fast import threads
from recsys_fast.errors import ParameterError

needs_two = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs NUMBA_NUM_THREADS >= 2")


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


@needs_two
def test_numba_limit_applied_and_restored():
    numba.set_num_threads(2)
    with threads.limit(1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == 2
    with pytest.raises(RuntimeError):
        with threads.limit(1):
            raise RuntimeError("body fails")
    assert numba.get_num_threads() == 2, "restored when the body raises"


@needs_two
def test_numba_limit_is_per_calling_thread():
    numba.set_num_threads(2)
    inside, outside = threading.Event(), threading.Event()
    seen = {}

    def worker():
        with threads.limit(1, process_wide=False):
            seen["worker"] = numba.get_num_threads()
            inside.set()
            outside.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(10)
    seen["main"] = numba.get_num_threads()
    outside.set()
    t.join()
    assert seen == {"worker": 1, "main": 2}


def test_torch_limit_applied_and_restored():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threads.limit(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with threads.limit(1, process_wide=False):  # per-thread only: torch untouched
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_blas_limit_applied_and_restored():
    from threadpoolctl import threadpool_limits

    if not _blas_threads():
        pytest.skip("no BLAS library visible to threadpoolctl")
    with threadpool_limits(limits=2, user_api="blas"):
        assert set(_blas_threads()) == {2}
        with threads.limit(1):
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {2}
        with threads.limit(1, process_wide=False):
            assert set(_blas_threads()) == {2}


def test_library_scan_runs_once(monkeypatch):
    import threadpoolctl

    real = threadpoolctl.ThreadpoolController
    scans = []

    def counting():
        scans.append(1)
        return real()

    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", counting)
    monkeypatch.setitem(threads._blas, "n_modules", -1)  # forget the earlier scan
    for _ in range(50):
        with threads.limit(1):
            pass
    assert len(scans) == 1


def test_blas_limit_skipped_when_already_within(monkeypatch):
    controller = threads._blas_controller()
    calls = []
    monkeypatch.setattr(type(controller), "limit", lambda self, **kw: calls.append(kw))
    big = max([lib.num_threads for lib in controller.lib_controllers] or [1])
    with threads.limit(big):
        pass
    assert calls == []


def test_none_changes_nothing_and_bad_counts_are_named():
    before = numba.get_num_threads()
    with threads.limit(None):
        assert numba.get_num_threads() == before
    with pytest.raises(ParameterError, match="n_threads must be an integer >= 1 or None, got 0"):
        with threads.limit(0):
            pass


def test_onnxruntime_session_options():
    ort = pytest.importorskip("onnxruntime")
    opts = threads.onnxruntime_session_options(3)
    assert opts.intra_op_num_threads == 3 and opts.inter_op_num_threads == 1
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    par = threads.onnxruntime_session_options(2, inter_op_threads=2)
    assert par.inter_op_num_threads == 2 and par.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert threads.onnxruntime_session_options().intra_op_num_threads == 0  # onnxruntime's default
    with pytest.raises(ParameterError, match="n_threads"):
        threads.onnxruntime_session_options(0)
