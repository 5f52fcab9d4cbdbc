"""Shared fixtures: small deterministic data and the location of real data sets."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def events_csv(tmp_path):
    """A small ratings CSV: columns uid, iid, stars (1-5), ts; 20 users x 15 items, 2/3 filled."""
    import pandas as pd

    rows = [(u, i, 1 + (u * i) % 5, 1000 + u * 10 + i) for u in range(1, 21) for i in range(1, 16) if (u + i) % 3]
    path = tmp_path / "events.csv"
    pd.DataFrame(rows, columns=["uid", "iid", "stars", "ts"]).to_csv(path, index=False)
    return path


def _dataset_or_skip(name: str, where: str):
    from recsys_fast.datasets import find_dataset

    path = find_dataset(name)
    if path is None:
        pytest.skip(f"{name} not found (set RECSYS_FAST_DATA or {where})")
    return path


@pytest.fixture(scope="session")
def ml_latest_small_path():
    return _dataset_or_skip("ml-latest-small", "keep data/ml-latest-small")


@pytest.fixture(scope="session")
def ml_100k_path():
    return _dataset_or_skip("ml-100k", "place it at ../shared/data/ml-100k")


def pytest_terminal_summary(terminalreporter):
    """The example counts of timed fuzz runs (``RECSYS_FAST_FUZZ_MINUTES``, tests/fuzzing.py)."""
    import sys

    fuzzing = sys.modules.get("tests.fuzzing")
    if fuzzing is not None and fuzzing.REPORT:
        terminalreporter.section("fuzzing")
        for line in fuzzing.REPORT:
            terminalreporter.write_line(line)
