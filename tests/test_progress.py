"""Progress: bars on a terminal, plain log lines otherwise, silence with verbose=False / --quiet."""

from __future__ import annotations

import logging
import os
import sys

import numpy as np
import pytest

from recsys_fast import progress as progress_module
from recsys_fast import split
from recsys_fast.datasets import synthetic
from recsys_fast.errors import DataError
from recsys_fast.evaluation import evaluate
from recsys_fast.models.popularity import Popularity
from recsys_fast.progress import progress


@pytest.fixture
def immediate(monkeypatch):
    """Report from the first unit of work on (the documented DELAY and LINE_EVERY set to 0)."""
    monkeypatch.setattr(progress_module, "DELAY", 0.0)
    monkeypatch.setattr(progress_module, "LINE_EVERY", 0.0)


def progress_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "recsys_fast.progress"]


def test_lines_when_not_a_terminal(immediate, caplog):
    caplog.set_level(logging.INFO, logger="recsys_fast")
    with progress(4, "work", "steps") as bar:
        for _ in range(4):
            bar.update(1, loss=0.5)
    lines = progress_lines(caplog)
    assert lines[0].startswith("work: 1/4 steps (25%), ") and lines[0].endswith("loss 0.5")
    assert lines[-1].startswith("work: 4/4 steps (100%)") and lines[-1].endswith(" done")
    assert not any("\r" in line for line in lines)


def test_short_work_and_disabled_progress_are_silent(caplog):
    caplog.set_level(logging.INFO, logger="recsys_fast")
    with progress(4, "quick", "steps") as bar:  # the real DELAY: nothing for work this short
        bar.update(4)
    with progress(4, "off", "steps", enabled=False) as bar:
        bar.update(4)
    assert progress_lines(caplog) == []


def test_bar_on_a_terminal(immediate, monkeypatch):
    import fcntl
    import select
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    with os.fdopen(slave, "w") as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        with progress(3, "bar test", "steps") as bar:
            bar.update(3)
        tty.flush()
        written = ""
        while select.select([master], [], [], 2.0)[0]:  # never block: a silent bar fails, not hangs
            written += os.read(master, 65536).decode(errors="replace")
            if "/3" in written:
                break
    os.close(master)
    assert "\rbar test:" in written and "/3 [" in written and "steps/s" in written


@pytest.fixture(scope="module")
def split_data():
    return split.holdout(synthetic(300, 80, 3000, seed=1), test_fraction=0.2, seed=0)


def test_evaluation_reports_users_by_default_and_not_when_asked(immediate, caplog, split_data):
    train, test = split_data
    model = Popularity().fit(train)
    caplog.set_level(logging.INFO, logger="recsys_fast")
    result = evaluate(model, train, test, k=10, batch_size=100)
    n = result.protocol["n_users_evaluated"]
    lines = progress_lines(caplog)
    assert lines[0].startswith(f"evaluating Popularity: 100/{n} users")  # users, not "1/1 batch"
    assert lines[-1].startswith(f"evaluating Popularity: {n}/{n} users (100%)")
    caplog.clear()
    evaluate(model, train, test, k=10, progress=False)
    assert progress_lines(caplog) == []


def test_training_epochs_are_reported(immediate, caplog):
    pytest.importorskip("torch")
    from recsys_fast import BPRMF

    caplog.set_level(logging.INFO, logger="recsys_fast")
    BPRMF(epochs=2, embedding_size=4, validation_fraction=0.0, n_threads=1).fit(synthetic(30, 20, 200, seed=2))
    lines = progress_lines(caplog)
    assert any(line.startswith("BPRMF: 2/2 epoch (100%)") and "loss" in line for line in lines), lines


def test_ease_fit_is_reported(immediate, caplog):
    from recsys_fast import EASE

    caplog.set_level(logging.INFO, logger="recsys_fast")
    EASE().fit(synthetic(30, 20, 200, seed=2))
    assert any(line.startswith("EASE fit (20 items): 3/3 steps") for line in progress_lines(caplog))


def test_evaluate_with_no_evaluable_users_is_a_data_error(split_data):
    from recsys_fast import Interactions

    train, _ = split_data
    model = Popularity().fit(train)
    strangers = Interactions.from_arrays(np.arange(1000, 1005), np.arange(5))
    with pytest.raises(DataError, match="no users to evaluate: of the 5 test users, 5 are unknown to the model"):
        evaluate(model, train, strangers)
