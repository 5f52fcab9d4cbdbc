"""Run a callable from many Python threads at once, as a service would."""

from __future__ import annotations

import threading


def run_in_threads(work, n_threads: int = 8) -> None:
    """Call ``work(t)`` for t in 0..n_threads-1, all released together; re-raise any failure."""
    errors = []
    barrier = threading.Barrier(n_threads)

    def run(t):
        try:
            barrier.wait()
            work(t)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(t,)) for t in range(n_threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert not errors, errors
