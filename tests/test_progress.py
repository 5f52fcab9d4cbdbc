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


@pytest.fixture(scope="module")
def many_users():
    """More users than one step of recommend (PROGRESS_CHUNK_ROWS), with a few items each."""
    from recsys_fast.models.base import PROGRESS_CHUNK_ROWS

    n = PROGRESS_CHUNK_ROWS * 2 + 100
    return synthetic(n, 40, n * 3, seed=4)


def test_large_recommend_runs_report_users_and_match_one_step(immediate, caplog, many_users, monkeypatch):
    from recsys_fast import ItemKNN
    from recsys_fast.models import base

    model = ItemKNN(k=10).fit(many_users)
    users = model.user_map_.ids
    caplog.set_level(logging.INFO, logger="recsys_fast")
    recs = model.recommend(users, k=5)
    n = len(users)
    lines = progress_lines(caplog)
    assert lines[0].startswith(f"recommending ItemKNN: {base.PROGRESS_CHUNK_ROWS}/{n} users"), lines
    assert lines[-1].startswith(f"recommending ItemKNN: {n}/{n} users (100%)") and lines[-1].endswith(" done")
    caplog.clear()
    quiet = model.recommend(users, k=5, progress=False)  # silent, and one step: the same answers
    assert progress_lines(caplog) == []
    np.testing.assert_array_equal(recs.items, quiet.items)
    np.testing.assert_array_equal(recs.scores, quiet.scores)
    small = model.recommend(users[:50], k=5)  # one step: nothing to report
    assert progress_lines(caplog) == [] and small.items.shape == (50, 5)
    with pytest.raises(ValueError, match="progress"):
        model.recommend(users[:2], k=5, progress="yes")


def test_cli_recommend_reports_progress_unless_quiet(many_users, tmp_path):
    """`recsys-fast recommend` over many users (in a fresh process: log lines, stderr is not a TTY)."""
    import subprocess

    from recsys_fast import ItemKNN

    bundle = ItemKNN(k=10).fit(many_users).save(tmp_path / "b")
    code = ("import sys; from recsys_fast import progress; progress.DELAY = progress.LINE_EVERY = 0.0; "
            "from recsys_fast.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    n = many_users.n_users
    for quiet in (False, True):
        out = tmp_path / f"r{quiet}.csv"
        res = subprocess.run([sys.executable, "-c", code, "recommend", str(bundle), "--first", str(n), "--k", "3",
                              "--out", str(out)] + (["--quiet"] if quiet else []),
                             capture_output=True, text=True, timeout=300, env=env)
        assert res.returncode == 0, res.stderr
        lines = [line for line in res.stderr.splitlines() if line.startswith("recommending ItemKNN")]
        if quiet:
            assert lines == [], res.stderr
        else:
            assert lines and lines[-1].startswith(f"recommending ItemKNN: {n}/{n} users (100%)"), res.stderr
            assert "\r" not in res.stderr


def test_batch_scoring_reports_lines_not_carriage_returns(immediate, caplog, many_users, tmp_path):
    from recsys_fast import ItemKNN, batch

    bundle = ItemKNN(k=10).fit(many_users).save(tmp_path / "b")
    caplog.set_level(logging.INFO, logger="recsys_fast")
    batch.score(bundle, k=3, out=tmp_path / "r.parquet", chunk_users=5000)
    lines = progress_lines(caplog)
    n = many_users.n_users
    assert lines[0].startswith(f"batch: 5000/{n} users") and lines[-1].startswith(f"batch: {n}/{n} users (100%)")
    caplog.clear()
    batch.score(bundle, k=3, out=tmp_path / "q.parquet", chunk_users=5000, progress=False)
    assert progress_lines(caplog) == []
