"""batch.score: the file holds what recommend answers, for every model kind and served bundle;
formats, atomic output, resume after kill -9, the fingerprint guard, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from recsys_fast import batch
from recsys_fast.errors import ParameterError, UnknownIdError

from .conftest import BLOCK_TORCH, tiny_model



@pytest.fixture(scope="module")
def knn(ml_small):
    from recsys_fast.models.knn import ItemKNN

    return ItemKNN(k=50).fit(ml_small)


@pytest.fixture(scope="module")
def knn_bundle(knn, tmp_path_factory):
    return knn.save(tmp_path_factory.mktemp("bundle") / "item_knn")


def expected_rows(model, users, k, exclude_seen=True):
    recs = model.recommend(users, k=k, exclude_seen=exclude_seen)
    return recs.to_pandas().rename(columns={"query": "user", "id": "item"})


def assert_rows_equal(table, expected, rtol=1e-6):
    got = table.to_pandas()
    assert list(got.columns) == ["user", "rank", "item", "score"]
    assert len(got) == len(expected)
    np.testing.assert_array_equal(got["user"].to_numpy(), expected["user"].to_numpy())
    np.testing.assert_array_equal(got["rank"].to_numpy(), expected["rank"].to_numpy())
    np.testing.assert_array_equal(got["item"].to_numpy(), expected["item"].to_numpy())
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=rtol)


def test_parquet_holds_every_users_top_k_with_a_row_group_per_chunk(knn, tmp_path):
    out = tmp_path / "recs.parquet"
    result = batch.score(knn, k=10, out=out, chunk_users=100, progress=False)
    assert_rows_equal(pq.read_table(out), expected_rows(knn, knn.user_map_.ids, 10))
    assert pq.ParquetFile(out).num_row_groups == 7 == result.n_chunks  # 610 users in chunks of 100
    assert (result.n_users, result.n_rows, result.bytes) == (610, 6100, out.stat().st_size)
    assert not (tmp_path / "recs.parquet.part").exists()  # the parts are gone once the file is in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recs.parquet"]
    assert "610 users, 6100 rows" in result.summary() and "users/s" in result.summary()


def test_csv_by_extension_and_a_users_subset_with_seen_items_kept(knn, tmp_path):
    users = knn.user_map_.ids[[5, 1, 300]]
    out = tmp_path / "recs.csv"
    batch.score(knn, users=users, k=7, out=out, exclude_seen=False, progress=False)
    assert_rows_equal(pacsv.read_csv(out), expected_rows(knn, users, 7, exclude_seen=False), rtol=1e-5)


def test_padding_is_left_out_when_fewer_than_k_items_qualify(ml_small, tmp_path):
    from recsys_fast.models.knn import ItemKNN

    small = ItemKNN(k=3, fill=None).fit(ml_small)  # 3 neighbours per item, no fill: short lists
    k = 400
    out = tmp_path / "recs.parquet"
    result = batch.score(small, k=k, out=out, progress=False)
    expected = expected_rows(small, small.user_map_.ids, k)
    assert result.n_rows == len(expected) < k * small.n_users
    assert_rows_equal(pq.read_table(out), expected)


def test_bad_extension_unknown_users_and_bad_arguments_are_refused(knn, tmp_path):
    with pytest.raises(ParameterError, match=r"\.parquet, \.pq or \.csv"):
        batch.score(knn, out=tmp_path / "recs.json")
    with pytest.raises(UnknownIdError, match="999999"):
        batch.score(knn, users=[1, 999999], out=tmp_path / "recs.parquet")
    with pytest.raises(ParameterError, match="chunk_users"):
        batch.score(knn, out=tmp_path / "recs.parquet", chunk_users=0)
    with pytest.raises(ParameterError, match="model_or_bundle"):
        batch.score(object(), out=tmp_path / "recs.parquet")
    assert list(tmp_path.iterdir()) == []  # nothing written on a refused call


@pytest.mark.parametrize("kind", ["Popularity", "UserKNN", "EASE", "BPRMF", "LightGCN", "MultVAE", "SASRec"])
def test_every_model_kind_in_memory(kind, ml_small, ml_small_popular, tmp_path):
    if kind == "Popularity":
        from recsys_fast.models.popularity import Popularity

        model = Popularity().fit(ml_small)
    elif kind == "UserKNN":
        from recsys_fast.models.knn import UserKNN

        model = UserKNN(k=30).fit(ml_small)
    else:
        model = tiny_model(kind, ml_small_popular if kind == "EASE" else ml_small)
    out = tmp_path / "recs.parquet"
    batch.score(model, k=5, out=out, chunk_users=256, progress=False)
    assert_rows_equal(pq.read_table(out), expected_rows(model, model.user_map_.ids, 5), rtol=1e-5)


def test_bundles_are_scored_through_serving_load_without_torch(exported, knn, knn_bundle, tmp_path):
    bpr, onnx_path = exported("BPRMF")
    outs = {"knn": tmp_path / "knn.parquet", "onnx": tmp_path / "onnx.parquet"}
    code = BLOCK_TORCH + textwrap.dedent(f"""
        from recsys_fast import batch
        batch.score({str(knn_bundle)!r}, k=10, out={str(outs['knn'])!r}, chunk_users=200, progress=False)
        batch.score({str(onnx_path)!r}, k=10, out={str(outs['onnx'])!r}, chunk_users=200, progress=False)
        assert "torch" not in sys.modules
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert_rows_equal(pq.read_table(outs["knn"]), expected_rows(knn, knn.user_map_.ids, 10))
    assert_rows_equal(pq.read_table(outs["onnx"]), expected_rows(bpr, bpr.user_map_.ids, 10), rtol=1e-4)


# ---------------------------------------------------------------------- resume
KILLABLE_JOB = textwrap.dedent("""
    import sys
    from recsys_fast import batch
    batch.score(sys.argv[1], k=10, out=sys.argv[2], chunk_users=2, progress=False)
""")


def _run_and_kill(bundle_path, out, min_chunks=5, timeout=240.0):
    """Start the job in a subprocess and SIGKILL it once ``min_chunks`` chunk files are on disk."""
    part = out.with_name(out.name + ".part")
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE_JOB, str(bundle_path), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if part.is_dir() and len([p for p in os.listdir(part) if p.startswith("chunk-")]) >= min_chunks:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.001)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(f"the job was not killed mid-run (exit {proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return len([p for p in os.listdir(part) if p.startswith("chunk-")])


def test_a_job_killed_with_sigkill_resumes_and_writes_the_same_bytes(knn_bundle, tmp_path):
    reference = tmp_path / "reference.parquet"
    batch.score(knn_bundle, k=10, out=reference, chunk_users=2, progress=False)

    out = tmp_path / "recs.parquet"
    done = _run_and_kill(knn_bundle, out)
    assert not out.exists()  # nothing half-written in place
    assert 0 < done < 305
    result = batch.score(knn_bundle, k=10, out=out, chunk_users=2, progress=False)
    assert result.resumed_chunks >= done - 1  # a chunk file may be in flight (a temp name) at the kill
    assert result.resumed_chunks > 0
    assert out.read_bytes() == reference.read_bytes()
    assert not out.with_name("recs.parquet.part").exists()


def test_a_different_job_or_resume_false_does_not_reuse_the_parts(knn, knn_bundle, tmp_path):
    out = tmp_path / "recs.parquet"
    part = out.with_name("recs.parquet.part")
    assert _run_and_kill(knn_bundle, out) > 0  # parts of a k=10 job left behind
    result = batch.score(knn_bundle, k=5, out=out, chunk_users=2, progress=False)  # another fingerprint
    assert result.resumed_chunks == 0
    assert_rows_equal(pq.read_table(out), expected_rows(knn, knn.user_map_.ids, 5))
    assert _run_and_kill(knn_bundle, out) > 0
    journal = json.loads((part / "_journal.json").read_text())
    assert journal["k"] == 10 and len(journal["fingerprint"]) == 64
    result = batch.score(knn_bundle, k=10, out=out, chunk_users=2, resume=False, progress=False)
    assert result.resumed_chunks == 0
    assert_rows_equal(pq.read_table(out), expected_rows(knn, knn.user_map_.ids, 10))


def test_a_foreign_part_directory_is_refused(knn, tmp_path):
    out = tmp_path / "recs.parquet"
    part = out.with_name("recs.parquet.part")
    part.mkdir()
    (part / "precious.txt").write_text("someone else's")
    with pytest.raises(ParameterError, match="without a journal"):
        batch.score(knn, out=out, progress=False)
    assert (part / "precious.txt").exists()


# ---------------------------------------------------------------------- CLI
def test_cli_batch_writes_the_file_and_prints_a_summary(knn, knn_bundle, tmp_path, capsys):
    from recsys_fast.cli import main

    users_file = tmp_path / "users.txt"
    users = knn.user_map_.ids[:25]
    users_file.write_text("\n".join(str(u) for u in users) + "\n")
    out = tmp_path / "recs.parquet"
    rc = main(["batch", str(knn_bundle), "--out", str(out), "--users-file", str(users_file), "--k", "4",
               "--chunk-users", "10", "--quiet"])
    assert rc == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("25 users, 100 rows in ") and "users/s" in line and str(out) in line
    assert_rows_equal(pq.read_table(out), expected_rows(knn, users, 4))
    assert pq.ParquetFile(out).num_row_groups == 3
    rc = main(["batch", str(knn_bundle), "--out", str(tmp_path / "recs.txt")])
    assert rc == 2 and "out" in capsys.readouterr().err
