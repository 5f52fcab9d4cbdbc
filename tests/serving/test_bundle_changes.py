"""A bundle deleted, overwritten, truncated or rewritten under a running service, on loopback.

The service keeps answering what it answered (a runtime holds its arrays and ONNX graph in
memory: nothing is memory-mapped), a reload of the damaged path fails with 422 ``reload_failed``
naming it while the old generation serves on and ``/metadata`` reports the failure, and once the
bundle is whole again a reload succeeds. A reload that races a rewrite (a file changed after the
manifest's hashes were checked) fails the same way. Also through SIGHUP of ``recsys-fast serve``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

from recsys_fast import bundle, serving  # noqa: E402
from recsys_fast.errors import BundleError  # noqa: E402
from recsys_fast.serving import loadtest  # noqa: E402
from recsys_fast.serving.http import create_app  # noqa: E402

from .live import as_lists, check_answers, live_server, metric, users_of, wait_ready  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


KINDS = ("item_knn", "onnx")


@pytest.fixture
def served(request, knn, tmp_path):
    """(trained model, pristine bundle, a copy of it that the test may damage)."""
    model, source = knn if request.param == "item_knn" else request.getfixturevalue("exported")("BPRMF")
    copy = tmp_path / "served"
    shutil.copytree(source, copy)
    return model, Path(source), copy


def largest(path: Path, suffix: str = ".npy") -> Path:
    return max((p for p in path.rglob(f"*{suffix}")), key=lambda p: (p.stat().st_size, p.name))


def overwrite_in_place(victim: Path, skip: int = 0) -> None:
    """Garbage over every byte after the first ``skip``, same size, same inode (what a
    memory-mapped reader would see)."""
    size = victim.stat().st_size
    with open(victim, "r+b") as fh:
        fh.seek(skip)
        fh.write(bytes((i * 7 + 13) % 256 for i in range(size - skip)))
        fh.flush()
        os.fsync(fh.fileno())


def damage(path: Path, how: str) -> None:
    if how == "deleted":
        shutil.rmtree(path)
    elif how == "array overwritten":
        overwrite_in_place(largest(path))
    elif how == "array truncated":
        victim = largest(path)
        os.truncate(victim, victim.stat().st_size // 2)
    elif how == "graph overwritten":
        overwrite_in_place(path / "model.onnx")
    elif how == "manifest rewritten":  # a parameter edited by hand, the digest left as it was
        manifest = json.loads((path / bundle.MANIFEST).read_text())
        manifest["params"]["edited"] = 1
        manifest["meta"]["note"] = "edited"
        (path / bundle.MANIFEST).write_text(json.dumps(manifest, indent=2))
    elif how == "manifest emptied":
        (path / bundle.MANIFEST).write_bytes(b"")
    else:
        raise AssertionError(how)


DAMAGES = ("deleted", "array overwritten", "array truncated", "graph overwritten", "manifest rewritten",
           "manifest emptied")


@pytest.mark.parametrize("served, how", [(kind, how) for kind in KINDS for how in DAMAGES
                                         if how != "graph overwritten" or kind == "onnx"], indirect=["served"])
def test_a_damaged_bundle_keeps_serving_and_its_reload_fails_cleanly(served, how):
    model, source, path = served
    users = users_of(model, 5)
    body = {"users": users, "k": 10}
    expected = as_lists(model.recommend(users, k=10))
    similar = None
    with live_server(create_app(serving.load(path, n_threads=1))) as client:
        wait_ready(client)
        check_answers(client.post("/recommend", json=body), expected)
        if hasattr(model, "similar_items"):
            similar = client.post("/similar-items", json={"items": [int(model.item_map_.ids[0])], "k": 5}).json()
        damage(path, how)
        check_answers(client.post("/recommend", json=body), expected)  # the loaded runtime is untouched
        for request in ({"json": {"path": str(path)}}, {}):  # the path named, and the current one
            r = client.post("/admin/reload", **request)
            assert r.status_code == 422, r.text
            error = r.json()
            assert error["error"] == "reload_failed" and error["field"] == "path", error
            assert str(path) in error["message"] and "still serving" in error["message"], error
        answer = client.post("/recommend", json=body)
        check_answers(answer, expected)
        assert answer.json()["generation"] == 1
        if similar is not None:
            assert client.post("/similar-items", json={"items": [int(model.item_map_.ids[0])], "k": 5}).json() == similar
        meta = client.get("/metadata").json()
        assert meta["generation"] == 1 and meta["path"] == str(path)
        assert meta["last_reload"]["ok"] is False and meta["last_reload"]["path"] == str(path)
        assert "BundleError" in meta["last_reload"]["error"], meta["last_reload"]
        text = client.get("/metrics").text
        assert metric(text, "recsys_fast_reloads_total", result="error") == 2
        assert metric(text, "recsys_fast_model_generation") == 1
        # the bundle whole again: the reload succeeds and answers the same
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(source, path)
        r = client.post("/admin/reload")
        assert r.status_code == 200 and r.json()["generation"] == 2, r.text
        answer = client.post("/recommend", json=body)
        check_answers(answer, expected)
        assert answer.json()["generation"] == 2 and client.get("/metadata").json()["last_reload"]["ok"] is True


@pytest.mark.parametrize("served", KINDS, indirect=True)
def test_a_reload_racing_a_rewrite_fails_cleanly(served, monkeypatch):
    """A file rewritten after ``read_manifest`` checked its hash and before it is read (an array's
    data behind an intact header: it would load, with other values): the bytes are checked again
    as they are read, so the reload fails instead of serving other numbers."""
    model, _, path = served
    if (path / "model.onnx").exists():
        victim = path / "model.onnx"
    else:  # float data: values that no structural check can tell from the right ones
        victim = max((p for p in path.glob("*.npy") if np.load(p, mmap_mode="r").dtype.kind == "f"),
                     key=lambda p: p.stat().st_size)
    original, checked = victim.read_bytes(), bundle.read_manifest

    def read_then_rewrite(where):  # whole for each check (kNN loads check twice), rewritten right after
        if Path(where) == path:
            victim.write_bytes(original)
        manifest = checked(where)
        if Path(where) == path:
            overwrite_in_place(victim, skip=0 if victim.suffix == ".onnx" else 128)  # .npy header: 128 bytes
        return manifest

    users = users_of(model, 3)
    expected = as_lists(model.recommend(users, k=10))
    with live_server(create_app(serving.load(path, n_threads=1))) as client:
        wait_ready(client)
        monkeypatch.setattr(bundle, "read_manifest", read_then_rewrite)
        r = client.post("/admin/reload")
        assert r.status_code == 422 and r.json()["error"] == "reload_failed", r.text
        assert f"file {victim.name} changed after the manifest was checked" in r.json()["message"], r.text
        answer = client.post("/recommend", json={"users": users, "k": 10})
        check_answers(answer, expected)
        assert answer.json()["generation"] == 1
    with pytest.raises(BundleError, match="changed after the manifest was checked"):
        serving.load(path)


def test_sighup_of_a_corrupted_bundle_fails_cleanly_and_serves_on(knn, tmp_path):
    model, source = knn
    path = tmp_path / "served"
    shutil.copytree(source, path)
    users = users_of(model, 3)
    body = json.dumps({"users": users, "k": 5}).encode()
    expected = as_lists(model.recommend(users, k=5))

    def answers(port):
        r = httpx.post(f"http://127.0.0.1:{port}/recommend", content=body,
                       headers={"content-type": "application/json"}, timeout=60)
        check_answers(r, expected)
        return r.json()["generation"]

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with loadtest.ServerProcess(path, ["--threads", "1"], env=env) as server:
        assert answers(server.port) == 1
        overwrite_in_place(largest(path))
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while (meta := json.loads(loadtest.get(server.port, "/metadata")[1]))["last_reload"] is None:
            assert time.monotonic() < deadline and server.proc.poll() is None, "".join(server.log)
            time.sleep(0.05)
        assert meta["last_reload"]["ok"] is False and meta["generation"] == 1, meta
        assert answers(server.port) == 1
        assert loadtest.get(server.port, "/health")[0] == 200
        assert 'recsys_fast_reloads_total{result="error"} 1.0' in loadtest.get(server.port, "/metrics")[1]
        log = "".join(server.log)
        assert f"reload of {path} failed, still serving {path}" in log and "sha256" in log, log
        assert server.proc.poll() is None
    assert server.proc.returncode in (0, -signal.SIGTERM), "".join(server.log)

