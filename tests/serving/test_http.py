"""The HTTP service against a real uvicorn server on loopback, with real bundles (ml-latest-small).

Servers run in a thread (``uvicorn.Server``) or as the ``recsys-fast serve`` process; requests go
through httpx. Load is bounded in count; nothing here asserts a time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

from recsys_fast import serving  # noqa: E402
from recsys_fast.serving.http import ServiceLimits, create_app  # noqa: E402

from .live import GatedRuntime, as_lists, check_answers, live_server, metric, users_of, wait_ready  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pop_bundle(ml_small, tmp_path_factory):
    from recsys_fast.models.popularity import Popularity

    return Popularity().fit(ml_small).save(tmp_path_factory.mktemp("http") / "popularity")


@pytest.fixture(scope="module")
def knn_client(knn):
    with live_server(create_app(serving.load(knn[1]))) as client:
        wait_ready(client)
        yield client


# ---------------------------------------------------------------------------- answers
def test_recommend_answers_what_the_runtime_answers(knn, knn_client):
    model, _ = knn
    users = users_of(model, 5)
    r = knn_client.post("/recommend", json={"users": users, "k": 10})
    check_answers(r, as_lists(model.recommend(users, k=10)))
    assert [row["user"] for row in r.json()["recommendations"]] == users
    # candidates, seen items kept, and a history fold-in (JSON keys are strings, ids here are ints)
    items = [int(i) for i in model.item_map_.ids[:200]]
    r = knn_client.post("/recommend", json={"users": users[:2], "k": 5, "items": items, "exclude_seen": False})
    check_answers(r, as_lists(model.recommend(users[:2], k=5, items=items, exclude_seen=False)))
    r = knn_client.post("/recommend", json={"users": [-7], "k": 5, "history": {"-7": [items[0], 999_999_999]}})
    assert r.status_code == 404 and r.json()["field"] == "history" and "999999999" in r.json()["message"], r.text
    r = knn_client.post("/recommend", json={"users": [-7], "k": 5, "history": {"-7": [items[0], 999_999_999]},
                                            "on_unknown_items": "ignore"})
    check_answers(r, as_lists(model.recommend([-7], k=5, history={-7: [items[0]]})))
    history = {"-7": items[:10]}
    r = knn_client.post("/recommend", json={"users": [-7], "k": 5, "history": history})
    check_answers(r, as_lists(model.recommend([-7], k=5, history={-7: items[:10]})))
    # k above the qualifying items: the list is shorter, padding is not sent
    r = knn_client.post("/recommend", json={"users": users[:1], "k": 20, "items": items[:3], "exclude_seen": False})
    assert len(r.json()["recommendations"][0]["items"]) == 3


def test_similar_items_and_metadata(knn, knn_client):
    model, path = knn
    items = [int(i) for i in model.item_map_.ids[:3]]
    r = knn_client.post("/similar-items", json={"items": items, "k": 5})
    assert r.status_code == 200, r.text
    expected = model.similar_items(items, k=5)
    assert [row["items"] for row in r.json()["similar"]] == expected.ids.tolist()
    meta = knn_client.get("/metadata").json()
    assert meta["kind"] == "item_knn" and meta["n_items"] == model.n_items and meta["path"] == str(path)
    assert meta["limits"]["max_users"] == ServiceLimits().max_users


def test_onnx_bundle_is_served(exported, ml_small):
    model, path = exported("BPRMF")
    with live_server(create_app(serving.load(path, n_threads=1))) as client:
        assert wait_ready(client)["model_kind"] == "bprmf"
        users = users_of(model, 4)
        check_answers(client.post("/recommend", json={"users": users, "k": 10}), as_lists(model.recommend(users, k=10)))
        r = client.post("/similar-items", json={"items": [int(model.item_map_.ids[0])], "k": 5})
        assert r.status_code == 404 and r.json()["error"] == "not_supported"
        many = users_of(model, 24)  # one session shared by concurrent request threads
        expected = {u: as_lists(model.recommend([u], k=10)) for u in many}
        with ThreadPoolExecutor(6) as pool:
            for u, resp in pool.map(lambda u: (u, client.post("/recommend", json={"users": [u], "k": 10})), many * 2):
                check_answers(resp, expected[u])
        r = client.post("/recommend", json={"users": [users[0]], "k": 5, "history": {str(users[0]): [1, 2]}})
        assert r.status_code == 422 and r.json()["field"] == "history", r.text


def test_concurrent_requests_get_the_sequential_answers(knn, knn_client):
    model, _ = knn
    users = users_of(model, 40)
    expected = {u: as_lists(model.recommend([u], k=10)) for u in users}

    def ask(u):
        return u, knn_client.post("/recommend", json={"users": [u], "k": 10})

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, users * 3))
    for u, r in results:
        check_answers(r, expected[u])


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("body, status, field", [
    ({"users": [999_999_999], "k": 5}, 404, "users"),
    ({"users": ["not-a-user"], "k": 5}, 404, "users"),
    ({"users": ["\u00b3"], "k": 5}, 404, "users"),  # a digit to str.isdigit, not to int() (found by schemathesis)
    ({"users": ["--5"], "k": 5}, 404, "users"),
    ({"users": [1], "k": 5, "items": [999_999_999]}, 404, "items"),
    ({"users": [1], "k": 0}, 422, "k"),
    ({"users": [1], "k": -3}, 422, "k"),
    ({"users": [1], "k": 1001}, 422, "k"),
    ({"users": [1], "k": "10"}, 422, "k"),
    ({"users": [1], "k": 2.5}, 422, "k"),
    ({"users": [1], "k": True}, 422, "k"),
    ({"users": [], "k": 5}, 422, "users"),
    ({"users": list(range(1001)), "k": 5}, 422, "users"),
    ({"users": [1.5], "k": 5}, 422, "users[0]"),
    ({"users": [2**70], "k": 5}, 422, "users[0]"),
    ({"users": 1, "k": 5}, 422, "users"),
    ({"k": 5}, 422, "users"),
    ({"users": [1], "k": 5, "on_unknown": "ignore"}, 422, "on_unknown"),
    ({"users": [1], "k": 5, "colour": "red"}, 422, "colour"),
    ({"users": [1], "k": 5, "history": {"1": "abc"}}, 422, "history.1"),
    ([1, 2], 422, "body"),
])
def test_bad_requests_name_the_field(knn_client, body, status, field):
    r = knn_client.post("/recommend", json=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["field"] == field and err["message"], err
    assert err["error"] == ("unknown_id" if status == 404 else "invalid_request")


def test_malformed_bodies_and_sizes(knn, knn_client):
    r = knn_client.post("/recommend", content=b'{"users": [1,', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "body" and r.json()["errors"][0]["type"] == "json_invalid"
    r = knn_client.post("/recommend", content=b"users=1", headers={"content-type": "text/plain"})
    assert r.status_code == 422 and r.json()["field"] == "body"
    r = knn_client.post("/similar-items", json={"items": [1], "k": knn[0].n_items + 1})
    assert r.status_code == 422 and r.json()["field"] == "k"
    # above the catalogue but within max_k: the service checks the loaded catalogue
    with live_server(create_app(serving.load(knn[1]), limits=ServiceLimits(max_k=100_000, max_body_bytes=4096))) as c:
        r = c.post("/recommend", json={"users": [1], "k": knn[0].n_items + 1})
        assert r.status_code == 422 and r.json()["field"] == "k" and str(knn[0].n_items) in r.json()["message"]
        big = json.dumps({"users": [1] * 3000, "k": 5}).encode()
        r = c.post("/recommend", content=big, headers={"content-type": "application/json"})  # Content-Length
        assert r.status_code == 413 and r.json()["error"] == "body_too_large", r.text

        def chunks():  # no Content-Length: counted while streaming
            yield b'{"users": ['
            for _ in range(2000):
                yield b"1, "
            yield b'1], "k": 5}'

        r = c.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["field"] == "body", r.text
        assert c.post("/recommend", json={"users": [1], "k": 5}).status_code == 200  # still serving


def test_unknown_users_pad_on_request(knn, knn_client):
    model, _ = knn
    u = users_of(model, 1)[0]
    r = knn_client.post("/recommend", json={"users": [u, 999_999_999, "nobody"], "k": 5, "on_unknown": "pad"})
    assert r.status_code == 200, r.text
    rows = r.json()["recommendations"]
    assert [row["user"] for row in rows] == [u, 999_999_999, "nobody"]
    assert rows[0]["items"] == as_lists(model.recommend([u], k=5))[0][0]
    assert rows[1]["items"] == rows[2]["items"] == [] and rows[1]["scores"] == []


def test_other_paths_and_methods_are_json_errors(knn_client):
    r = knn_client.get("/nothing-here")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = knn_client.get("/recommend")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


# ---------------------------------------------------------------------------- overload, timeout, health
def test_overload_answers_503_and_timeout_504(knn):
    gated = GatedRuntime(serving.load(knn[1]))
    limits = ServiceLimits(max_concurrency=1, workers=2, timeout_s=0.5)
    body = {"users": users_of(knn[0], 1), "k": 5}
    with live_server(create_app(gated, limits=limits)) as client, ThreadPoolExecutor(1) as pool:
        wait_ready(client)
        first = pool.submit(client.post, "/recommend", json=body)
        assert gated.entered.wait(30)
        busy = client.post("/recommend", json=body)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
        assert busy.json()["error"] == "overloaded"
        timed_out = first.result(30)  # held past timeout_s
        assert timed_out.status_code == 504 and timed_out.json()["error"] == "timeout"
        assert client.post("/recommend", json=body).status_code == 503  # its thread still holds the slot
        gated.gate.set()
        deadline = time.monotonic() + 30
        while (r := client.post("/recommend", json=body)).status_code == 503:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert r.status_code == 200
        assert client.get("/health").status_code == 200  # health is never held by the limit


def test_health_is_ready_only_after_prepare(knn):
    gated = GatedRuntime(serving.load(knn[1]), gate_prepare=True)
    gated.gate.set()
    with live_server(create_app(gated)) as client:
        r = client.get("/health")
        assert r.status_code == 503 and r.json() == {**r.json(), "status": "starting", "ready": False}
        gated.prepare_gate.set()
        assert wait_ready(client)["ready"] is True


# ---------------------------------------------------------------------------- reload
def test_reload_swaps_atomically_and_a_failed_one_keeps_the_old(knn, pop_bundle, tmp_path):
    model, path = knn
    body = {"users": users_of(model, 2), "k": 5}
    knn_answer = as_lists(model.recommend(body["users"], k=5))
    gated = GatedRuntime(serving.load(path))
    gated.gate.set()
    with live_server(create_app(gated)) as client, ThreadPoolExecutor(1) as pool:
        wait_ready(client)
        # a request in flight during a reload finishes on the old runtime
        gated.gate.clear()
        in_flight = pool.submit(client.post, "/recommend", json=body)
        assert gated.entered.wait(30)
        r = client.post("/admin/reload", json={"path": str(pop_bundle)})
        assert r.status_code == 200 and r.json()["generation"] == 2 and r.json()["path"] == str(pop_bundle)
        gated.gate.set()
        old = in_flight.result(30)
        check_answers(old, knn_answer)
        assert old.json()["generation"] == 1
        new = client.post("/recommend", json=body)
        assert new.json()["generation"] == 2 and client.get("/metadata").json()["kind"] == "popularity"
        # failed reloads: no bundle there, a tampered one; the popularity bundle serves on
        bad = tmp_path / "tampered"
        import shutil

        shutil.copytree(pop_bundle, bad)
        victim = next(p for p in sorted(bad.iterdir()) if p.suffix == ".npy")
        victim.write_bytes(victim.read_bytes()[:-8] + b"\0" * 8)
        for target in (tmp_path / "missing", bad):
            r = client.post("/admin/reload", json={"path": str(target)})
            assert r.status_code == 422 and r.json()["error"] == "reload_failed" and r.json()["field"] == "path"
            assert str(target) in r.json()["message"]
        again = client.post("/recommend", json=body)
        assert again.json() == new.json()
        meta = client.get("/metadata").json()
        assert meta["generation"] == 2 and meta["last_reload"]["ok"] is False
        # a reload without a body loads the current path again
        r = client.post("/admin/reload")
        assert r.status_code == 200 and r.json()["generation"] == 3 and r.json()["path"] == str(pop_bundle)
        r = client.post("/admin/reload", json={"path": 3})
        assert r.status_code == 422 and r.json()["field"] == "path"
        metrics = client.get("/metrics").text
        assert 'recsys_fast_reloads_total{result="ok"} 2.0' in metrics
        assert 'recsys_fast_reloads_total{result="error"} 2.0' in metrics
        assert "recsys_fast_model_generation 3.0" in metrics


def test_admin_can_be_left_out(knn):
    with live_server(create_app(serving.load(knn[1]), admin=False)) as client:
        assert client.post("/admin/reload").status_code == 404


# ---------------------------------------------------------------------------- metrics
def test_metrics_count_requests_by_endpoint_and_status(knn):
    with live_server(create_app(serving.load(knn[1]))) as client:
        wait_ready(client)
        u = users_of(knn[0], 1)
        for _ in range(7):
            assert client.post("/recommend", json={"users": u, "k": 3}).status_code == 200
        for _ in range(3):
            assert client.post("/recommend", json={"users": u, "k": 0}).status_code == 422
        client.post("/recommend", json={"users": [999_999_999], "k": 3})
        client.get("/no-such-page")
        r = client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        text = r.text
        assert metric(text, "recsys_fast_requests_total", endpoint="/recommend", status="200") == 7
        assert metric(text, "recsys_fast_requests_total", endpoint="/recommend", status="422") == 3
        assert metric(text, "recsys_fast_requests_total", endpoint="/recommend", status="404") == 1
        assert metric(text, "recsys_fast_requests_total", endpoint="other", status="404") == 1
        assert metric(text, "recsys_fast_request_duration_seconds_count", endpoint="/recommend") == 11
        assert metric(text, "recsys_fast_request_duration_seconds_bucket", endpoint="/recommend", le="+Inf") == 11
        assert metric(text, "recsys_fast_in_flight_requests") == 0
        assert "# TYPE recsys_fast_request_duration_seconds histogram" in text


# ---------------------------------------------------------------------------- the command
def test_recsys_fast_serve_reloads_on_sighup_and_stops_on_sigterm(knn):
    model, path = knn
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "recsys_fast.cli", "serve", str(path), "--port", "0",
                             "--threads", "1"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        port = None
        deadline = time.monotonic() + 120
        while port is None:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else None
            assert time.monotonic() < deadline, "".join(lines)
        threading.Thread(target=lambda: [lines.append(x) for x in proc.stderr], daemon=True).start()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            wait_ready(client)
            users = users_of(model, 3)
            check_answers(client.post("/recommend", json={"users": users, "k": 5}),
                          as_lists(model.recommend(users, k=5)))
            assert client.get("/metadata").json()["n_threads"] == 1
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 60
            while client.get("/metadata").json()["generation"] != 2:
                assert time.monotonic() < deadline, "".join(lines)
                time.sleep(0.05)
            check_answers(client.post("/recommend", json={"users": users, "k": 5}),
                          as_lists(model.recommend(users, k=5)))
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status says SIGTERM
        assert proc.wait(60) in (0, -signal.SIGTERM), "".join(lines)
        time.sleep(0.2)
        text = "".join(lines)
        assert "reloaded" in text and "Application shutdown complete" in text and "Finished server process" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_recsys_fast_serve_refuses_a_bad_bundle(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "recsys_fast.cli", "serve", str(tmp_path / "none"), "--port", "0"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "none: no such path" in res.stderr, res.stderr


# ---------------------------------------------------------------------------- schema-driven fuzzing
schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def fuzzed_server(knn, pop_bundle):
    limits = ServiceLimits(max_users=50, max_k=50, max_items=200, max_history=50, timeout_s=30)
    with live_server(create_app(serving.load(knn[1]), limits=limits)) as client:
        wait_ready(client)
        yield str(client.base_url)


def test_openapi_fuzzing_finds_no_server_error(fuzzed_server):
    """Requests generated from the app's own OpenAPI schema, valid and invalid ones, for every
    operation: none may get a 5xx. Bounded: 25 examples per operation and mode (derandomized);
    ``RECSYS_FAST_FUZZ_EXAMPLES`` / ``RECSYS_FAST_FUZZ_MINUTES`` run longer (``tests/fuzzing.py``)."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    from tests.fuzzing import BASE, EXAMPLES, MINUTES, run_for

    schema = schemathesis.openapi.from_url(f"{fuzzed_server}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/recommend", "/similar-items", "/health", "/metadata", "/metrics",
                                              "/admin/reload"}
    calls = [0]

    def one_round(n):  # n examples per operation and mode
        for op in operations:
            modes = [schemathesis.GenerationMode.POSITIVE]
            if op.method.upper() == "POST":  # the GET endpoints take no input to get wrong
                modes.append(schemathesis.GenerationMode.NEGATIVE)
            for mode in modes:
                @given(case=op.as_strategy(mode))
                @settings(BASE, max_examples=n, suppress_health_check=list(HealthCheck))
                def check(case):
                    calls[0] += 1
                    case.call_and_validate(base_url=fuzzed_server, checks=[not_a_server_error])

                check()

    if MINUTES:
        run_for("test_openapi_fuzzing_finds_no_server_error", one_round, calls)
    else:
        one_round(EXAMPLES)
    with httpx.Client(base_url=fuzzed_server) as client:
        text = client.get("/metrics").text
    assert metric(text, "recsys_fast_request_duration_seconds_count", endpoint="/recommend") >= min(EXAMPLES, 20)
    assert metric(text, "recsys_fast_requests_total", endpoint="/recommend", status="422") > 0
    assert not re.search(r'status="5\d\d"', text), text


def test_the_service_runs_where_torch_cannot_be_imported(knn):
    from .test_runtime import BLOCK_TORCH

    code = BLOCK_TORCH + (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from recsys_fast import serving\n"
        "from recsys_fast.serving.http import create_app\n"
        f"with TestClient(create_app(serving.load({str(knn[1])!r}))) as client:\n"
        "    r = client.post('/recommend', json={'users': [1], 'k': 3})\n"
        "    assert r.status_code == 200, r.text\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr
