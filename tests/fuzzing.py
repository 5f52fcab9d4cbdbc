"""How long the fuzz tests run (``tests/test_fuzz.py``, the schemathesis test of the HTTP service).

- By default (CI): ``EXAMPLES`` = 25 examples per test, derandomized (the same examples each run).
- ``RECSYS_FAST_FUZZ_EXAMPLES=N``: N random examples per test.
- ``RECSYS_FAST_FUZZ_MINUTES=M``: each test draws random examples for M minutes of wall time, in
  rounds (fresh random seeds; a round is sized from the time an example took so far). pytest's
  summary then lists ``fuzz <test>: <examples> examples in <seconds> s (<rounds> rounds)`` per test
  (``tests/conftest.py``). Examples are calls of the test body (hypothesis' invalid draws included).
"""

from __future__ import annotations

import functools
import os
import time

from hypothesis import HealthCheck, given, settings

EXAMPLES = int(os.environ.get("RECSYS_FAST_FUZZ_EXAMPLES", "25"))
MINUTES = float(os.environ.get("RECSYS_FAST_FUZZ_MINUTES", "0"))
RANDOM = "RECSYS_FAST_FUZZ_EXAMPLES" in os.environ or MINUTES > 0
MAX_ROUND = 20_000  # examples in one hypothesis run of a timed test
REPORT: list[str] = []  # one line per timed test, printed in pytest's terminal summary
BASE = settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])


def fuzz(**strategies):
    """``@given(**strategies)`` under the budget above (use in place of ``@settings`` + ``@given``).

    Fixtures are passed through as usual; with ``RECSYS_FAST_FUZZ_MINUTES`` the test runs hypothesis
    again and again with fresh seeds until its time is spent.
    """
    def decorate(fn):
        if not MINUTES:
            return BASE(given(**strategies)(fn))

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            calls = [0]

            def counted(*a, **k):
                calls[0] += 1
                return fn(*a, **k)

            def one_round(n):
                test = settings(BASE, max_examples=n)(given(**strategies)(fn))
                test.hypothesis.inner_test = counted
                test(*args, **kwargs)

            run_for(fn.__name__, one_round, calls)

        # pytest asks only for the fixtures: the signature without the drawn arguments
        import inspect

        sig = inspect.signature(fn)
        timed.__signature__ = sig.replace(parameters=[p for name, p in sig.parameters.items()
                                                      if name not in strategies])
        return timed

    return decorate


def run_for(name: str, one_round, calls: list, minutes: float | None = None) -> int:
    """Call ``one_round(n)`` (n examples, counted in ``calls[0]``) until ``minutes`` (default
    ``MINUTES``) of wall time are spent; report and return the examples tried."""
    budget = 60.0 * (MINUTES if minutes is None else minutes)
    t0 = time.monotonic()
    n, rounds = 20, 0
    while True:
        start, before = time.monotonic(), calls[0]
        one_round(n)
        rounds += 1
        now = time.monotonic()
        left = t0 + budget - now
        if left <= 0:
            break
        per_example = max(now - start, 1e-3) / max(calls[0] - before, 1)
        n = int(min(MAX_ROUND, max(20, 0.8 * left / per_example)))
    seconds = time.monotonic() - t0
    REPORT.append(f"fuzz {name}: {calls[0]} examples in {seconds:.0f} s ({rounds} rounds)")
    return calls[0]
