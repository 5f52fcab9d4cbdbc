"""``recsys-fast serve`` under more load than it can serve: every request is answered 200 or 503
(with ``Retry-After``), none is lost or left hanging, and the service recovers when the load drops.

A real server process on 127.0.0.1 and the stdlib load generator of
``recsys_fast.serving.loadtest``; bounded in requests and seconds. Only correctness facts are
asserted, never a time: the measured capacity only sizes the offered load (``benches/overload.py``
is the longer run, with the numbers).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from recsys_fast.serving import loadtest  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MAX_CONCURRENCY = 8
CLIENT_TIMEOUT = 60.0  # far beyond the service's --timeout: a request past it was left hanging


@pytest.fixture(scope="module")
def server(ml_small, tmp_path_factory):
    from recsys_fast.models.knn import ItemKNN

    model = ItemKNN(k=50).fit(ml_small)
    bundle = model.save(tmp_path_factory.mktemp("overload") / "item_knn")
    users = model.user_map_.ids.tolist()
    bodies = [json.dumps({"users": [users[i % len(users)]], "k": 10}).encode() for i in range(256)]
    args = ["--threads", "1", "--max-concurrency", str(MAX_CONCURRENCY), "--timeout", "10"]
    with loadtest.ServerProcess(bundle, args, env={**os.environ, "PYTHONPATH": str(REPO)}) as proc:
        yield proc, bodies


def check_answers(summary: dict, phase: str) -> None:
    assert summary["lost"] == 0, f"{phase}: requests lost or hung: {summary}"
    assert summary["unexpected"] == 0, f"{phase}: answers other than 200/503: {summary}"
    assert summary["503_without_retry_after"] == 0, f"{phase}: 503 without Retry-After: {summary}"


def test_twice_the_capacity_is_answered_200_or_503_and_the_service_recovers(server):
    proc, bodies = server
    port = proc.port
    # capacity: the best throughput of closed-loop clients (sizes the offered load; not asserted)
    rates = []
    for concurrency in (1, 2, 4):
        outcomes = asyncio.run(loadtest.closed_loop(port, bodies, concurrency, 1.0, max_requests=3000,
                                                    timeout=CLIENT_TIMEOUT))
        summary = loadtest.summarize(outcomes, 1.0)
        check_answers(summary, f"closed loop at {concurrency}")
        rates.append(summary["ok_per_s"])
    capacity = max(rates)
    assert capacity > 0
    # overload: an open-loop client at 2x (then 4x, 8x while no 503 shows that the limit was reached)
    shed = False
    for factor in (2, 4, 8):
        outcomes, client = asyncio.run(loadtest.open_loop(port, bodies, factor * capacity, 2.0,
                                                          timeout=CLIENT_TIMEOUT))
        summary = loadtest.summarize(outcomes)
        check_answers(summary, f"open loop at {factor}x {capacity:.0f}/s")
        assert summary["requests"] == len(outcomes) == int(factor * capacity * 2.0)
        if summary["counts"].get("503", 0):
            shed = True
            break
    assert shed, "no 503 even at 8x the measured capacity: the admission limit was never reached"
    # recovery: the load drops, every slot is free again: all 200
    outcomes = asyncio.run(loadtest.closed_loop(port, bodies, MAX_CONCURRENCY // 2, 60.0, max_requests=200,
                                                timeout=CLIENT_TIMEOUT))
    summary = loadtest.summarize(outcomes)
    assert summary["counts"] == {"200": 200}, summary
    status, health = loadtest.get(port, "/health")
    assert status == 200 and json.loads(health)["ready"] is True
    metrics = loadtest.get(port, "/metrics")[1]
    assert "recsys_fast_in_flight_requests 0.0" in metrics
    assert 'recsys_fast_requests_total{endpoint="/recommend",status="503"}' in metrics
    assert proc.proc.poll() is None  # still serving
