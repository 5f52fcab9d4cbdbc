"""The CLI's error policy: every mistake is one line on stderr naming the option or file, exit 2;
Ctrl-C exits 130 with earlier outputs intact; a closed pipe ends quietly; outputs checked first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recsys_fast import cli
from recsys_fast.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ratings_csv(events_csv, tmp_path):
    """conftest's events with the CLI's default column names (user, item) and rating, ts."""
    path = tmp_path / "ratings.csv"
    pd.read_csv(events_csv).rename(columns={"uid": "user", "iid": "item", "stars": "rating"}).to_csv(path, index=False)
    return path


@pytest.fixture
def bundle(ratings_csv, tmp_path):
    path = tmp_path / "pop"
    assert main(["train", str(ratings_csv), "--model", "popularity", "--out", str(path), "--quiet"]) == 0
    return path


def one_line_error(capsys, argv, *expected):
    """Run argv; assert exit 2 and exactly one line on stderr holding every expected text."""
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------ a bad option per sub-command
@pytest.mark.parametrize("argv, expected", [
    (["doctor", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["models", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["demo", "--users", "0"], ["--users", "expected an integer >= 1, got '0'"]),
])
def test_commands_without_files_bad_option(capsys, argv, expected):
    one_line_error(capsys, argv, *expected)


@pytest.mark.parametrize("extra, expected", [
    (["--model", "itemknn"], ["--model:", "model must be one of", "'item_knn'", "got 'itemknn'"]),
    (["--model", "item_knn", "--param", "k=0"], ["--param: item_knn: k must be an integer >= 1, got 0"]),
    (["--model", "item_knn", "--param", "similarity=foo"], ["--param: item_knn: similarity must be one of"]),
    (["--model", "item_knn", "--param", "k"], ["--param: expected KEY=VALUE, got 'k'"]),
    (["--model", "popularity", "--min-rating", "abc"], ["--min-rating", "expected a number, got 'abc'"]),
])
def test_train_bad_option(capsys, ratings_csv, tmp_path, extra, expected):
    one_line_error(capsys, ["train", str(ratings_csv), "--out", str(tmp_path / "m"), *extra], *expected)


@pytest.mark.parametrize("extra, expected", [
    (["--k", "abc"], ["--k", "comma-separated integers >= 1", "'abc'"]),
    (["--k", "10,0"], ["--k", "'10,0'"]),
    (["--test-fraction", "1.5"], ["--test-fraction:", "test_fraction must be a finite number > 0.0 and < 1.0, got 1.5"]),
    (["--split", "temporal", "--timestamp-col", "ts", "--cutoff", "garbage"], ["--cutoff:", "got 'garbage'"]),
    (["--split", "temporal", "--timestamp-col", "ts"], ["--cutoff:", "needs --cutoff"]),
    (["--split", "temporal", "--timestamp-col", "ts", "--cutoff", "1"], ["cannot fit on empty training data"]),
    (["--models", "popularity,itemknn"], ["--models:", "got 'itemknn'"]),
    (["--json", "/nonexistent/dir/r.json"], ["--json:", "folder /nonexistent/dir does not exist"]),
])
def test_evaluate_bad_option(capsys, ratings_csv, extra, expected):
    one_line_error(capsys, ["evaluate", str(ratings_csv), "--models", "popularity", *extra], *expected)


@pytest.mark.parametrize("extra, expected", [
    (["--k", "0"], ["--k", "expected an integer >= 1, got '0'"]),
    (["--k", "ten"], ["--k", "got 'ten'"]),
    (["--first", "0"], ["--first", "got '0'"]),
    (["--first", "-5"], ["--first", "got '-5'"]),
    (["--users", "1,,2"], ["--users: id number 2 of '1,,2' is empty"]),
    (["--users", "1,999,nobody"], ["--users: unknown user ids: 999, 'nobody'", "--on-unknown pad"]),
    (["--out", "/nonexistent/dir/r.csv"], ["--out:", "folder /nonexistent/dir does not exist"]),
    (["--out", "recs.xlsx"], ["--out:", "unknown output format '.xlsx'", ".csv", ".parquet", ".json"]),
])
def test_recommend_bad_option(capsys, bundle, extra, expected):
    line = one_line_error(capsys, ["recommend", str(bundle), *extra], *expected)
    assert "history=" not in line  # no Python-API advice for CLI users


def test_unknown_user_message_lists_only_unknown_ids_without_dtype_jargon(capsys, bundle):
    line = one_line_error(capsys, ["recommend", str(bundle), "--users", "1,nobody,2"], "'nobody'")
    assert "<U" not in line and "'1'" not in line and "'2'" not in line


# ------------------------------------------------------------------ a bad file per sub-command
def test_train_bad_file(capsys, tmp_path):
    bad = tmp_path / "mixed.csv"
    bad.write_text("user,item\n1,10\n2,20\nthree,30\n4,40\n")
    one_line_error(capsys, ["train", str(bad), "--model", "popularity", "--out", str(tmp_path / "m")],
                   "mixed.csv, row 2, column 'user'", "'three' is text")
    one_line_error(capsys, ["train", str(tmp_path / "nope.csv"), "--model", "popularity", "--out",
                            str(tmp_path / "m")], "nope.csv: no such file or directory")


def test_bad_csv_rows_are_0_based_data_rows_also_for_pandas_errors(capsys, tmp_path):
    bad = tmp_path / "ragged.csv"
    bad.write_text("user,item\n1,10\n2,20\n3,30,7,8\n")
    one_line_error(capsys, ["train", str(bad), "--model", "popularity", "--out", str(tmp_path / "m")],
                   "ragged.csv, row 2:", "Expected 2 fields")


def test_evaluate_bad_file(capsys, tmp_path):
    bad = tmp_path / "junk.parquet"
    bad.write_bytes(b"PAR1 not really parquet")
    one_line_error(capsys, ["evaluate", str(bad), "--models", "popularity"], "junk.parquet", "not a readable Parquet")


def test_dataset_name_not_found_says_where_it_looked(capsys, monkeypatch):
    monkeypatch.delenv("RECSYS_FAST_DATA", raising=False)
    one_line_error(capsys, ["evaluate", "no-such-set", "--models", "popularity"],
                   "data set 'no-such-set' not found; looked in:", "RECSYS_FAST_DATA")


def test_recommend_bad_file(capsys, tmp_path):
    one_line_error(capsys, ["recommend", str(tmp_path / "nope")], "nope: no such path")
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, ["recommend", str(tmp_path / "empty")], "empty is not a recsys_fast bundle")


def test_demo_bad_file(capsys, tmp_path):
    one_line_error(capsys, ["demo", "--data", str(tmp_path)], "unrecognised MovieLens layout")


def test_debug_shows_the_traceback(bundle):
    with pytest.raises(Exception, match="unknown output format"):
        main(["recommend", str(bundle), "--out", "r.xlsx", "--debug"])


# ------------------------------------------------------------------ outputs, formats, parameters
@pytest.mark.parametrize("name, read", [
    ("r.csv", pd.read_csv), ("r.tsv", lambda p: pd.read_csv(p, sep="\t")), ("r.parquet", pd.read_parquet),
    ("r.json", lambda p: pd.DataFrame(json.loads(Path(p).read_text()))),
    ("r.jsonl", lambda p: pd.read_json(p, lines=True)),
])
def test_output_format_follows_the_extension(capsys, bundle, tmp_path, name, read):
    out = tmp_path / name
    assert main(["recommend", str(bundle), "--users", "1,2", "--k", "3", "--out", str(out)]) == 0
    frame = read(out)
    assert list(frame.columns) == ["user", "rank", "item", "score"] and len(frame) == 6
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_output_file_gets_umask_permissions(bundle, tmp_path):
    out = tmp_path / "r.csv"
    assert main(["recommend", str(bundle), "--out", str(out), "--quiet"]) == 0
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask


def test_k_above_the_catalogue_is_clamped(capsys, bundle, tmp_path):
    out = tmp_path / "r.csv"
    assert main(["recommend", str(bundle), "--users", "1", "--k", "10000000", "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) <= 15  # the 15 items, not 10 million rows


@pytest.mark.parametrize("spelling", ["None", "null"])
def test_param_none_spellings(capsys, ratings_csv, tmp_path, spelling):
    out = tmp_path / "m"
    assert main(["train", str(ratings_csv), "--model", "item_knn", "--param", f"fill={spelling}",
                 "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "manifest.json").read_text())["params"]["fill"] is None


def test_parse_value():
    assert [cli.parse_value(v) for v in ("None", "null", "True", "false", "5", "0.5", "cosine", "[1, 2]")] == \
        [None, None, True, False, 5, 0.5, "cosine", [1, 2]]


def test_train_help_speaks_only_of_its_own_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--model " in out and "--models" not in out and "--quiet" in out and "--debug" in out


def test_quiet_prints_no_progress_or_info(capsys, ratings_csv, tmp_path):
    assert main(["train", str(ratings_csv), "--model", "popularity", "--out", str(tmp_path / "m"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_implicit_weights_report_no_rmse(capsys, ratings_csv, tmp_path):
    out = tmp_path / "res.json"
    argv = ["evaluate", str(ratings_csv), "--models", "item_knn", "--weight-col", "rating", "--k", "5",
            "--json", str(out), "--quiet"]
    assert main(argv) == 0
    assert "rmse" in json.loads(out.read_text())["item_knn"]["means"]
    assert main(argv + ["--implicit"]) == 0
    assert "rmse" not in json.loads(out.read_text())["item_knn"]["means"]


# ------------------------------------------------------------------ interrupts and pipes
def test_interrupt_exits_130_and_leaves_the_old_output(tmp_path, capsys):
    out = tmp_path / "r.csv"
    out.write_text("old\n")

    def interrupted_command(args):
        def write(tmp):
            tmp.write_text("half of the new")
            raise KeyboardInterrupt
        cli._atomic_write(out, write)

    import argparse

    assert cli.run(interrupted_command, argparse.Namespace(quiet=True, debug=False)) == 130
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]
    assert "interrupted" in capsys.readouterr().err


def test_closed_pipe_ends_quietly(ml_latest_small_path, tmp_path):
    bundle = tmp_path / "pop"
    assert main(["train", str(ml_latest_small_path), "--model", "popularity", "--out", str(bundle), "--quiet"]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "recsys_fast.cli", "recommend", str(bundle), "--first", "600",
                             "--k", "100"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert first.split() == [b"user", b"rank", b"item", b"score"]
    assert "Traceback" not in err and "BrokenPipe" not in err


# ------------------------------------------------------------------ sub-commands added by other modules
@pytest.mark.parametrize("argv, expected", [
    (["batch", "{bundle}", "--k", "0"], ["--k", "expected an integer >= 1, got '0'"]),
    (["batch", "{missing}"], ["no such path"]),
    (["serve", "{bundle}", "--port", "x"], ["--port", "'x'"]),
    (["serve", "{missing}"], ["no such path"]),
])
def test_batch_and_serve_errors(capsys, bundle, tmp_path, argv, expected):
    argv = [a.format(bundle=bundle, missing=tmp_path / "missing") for a in argv]
    one_line_error(capsys, argv, *expected)


def test_every_sub_command_has_quiet_and_debug():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))
    for name, p in sub.choices.items():
        assert {"--quiet", "--debug"} <= set(p._option_string_actions), name
