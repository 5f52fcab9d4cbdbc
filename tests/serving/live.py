"""Live-server helpers of the serving tests: a real uvicorn server on loopback in a thread, a
runtime that holds requests in flight, and answer checks."""

from __future__ import annotations

import contextlib
import re
import threading
import time

import httpx
import numpy as np
import pytest


@contextlib.contextmanager
def live_server(app, http: str = "auto"):
    """``app`` on 127.0.0.1 at a free port, in a thread; yields an httpx client for it. ``http``:
    uvicorn's HTTP parser (``auto``, ``httptools``, ``h11``)."""
    import uvicorn

    if http == "httptools":
        pytest.importorskip("httptools")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                           http=http))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (server.started and server.servers):
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        yield client
    finally:
        client.close()
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "server did not stop"


def wait_ready(client, timeout=120.0):
    deadline = time.monotonic() + timeout
    while True:
        r = client.get("/health")
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 503 and r.json()["status"] == "starting", r.text
        assert time.monotonic() < deadline, "never ready"
        time.sleep(0.05)


class GatedRuntime:
    """A real runtime whose ``recommend`` and ``prepare`` wait for an event first: it holds a
    request in flight so the tests can look at the service meanwhile."""

    def __init__(self, runtime, gate_prepare=False):
        self.inner = runtime
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.prepare_gate = threading.Event()
        self.calls = 0  # recommend calls that reached the runtime
        self._count_lock = threading.Lock()
        if not gate_prepare:
            self.prepare_gate.set()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def prepare(self):
        assert self.prepare_gate.wait(60)
        return self.inner.prepare()

    def recommend(self, *args, **kwargs):
        with self._count_lock:
            self.calls += 1
        self.entered.set()
        assert self.gate.wait(60)
        return self.inner.recommend(*args, **kwargs)


def users_of(model, n):
    return [int(u) for u in model.user_map_.ids[:n]]


def as_lists(recs):
    keep = np.isfinite(recs.scores)
    return [(recs.items[r][keep[r]].tolist(), recs.scores[r][keep[r]].tolist()) for r in range(len(recs.items))]


def check_answers(response, expected):
    assert response.status_code == 200, response.text
    got = response.json()["recommendations"]
    assert len(got) == len(expected)
    for row, (items, scores) in zip(got, expected):
        assert row["items"] == items
        np.testing.assert_allclose(row["scores"], scores, rtol=1e-6)


def metric(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)$"
    found = re.search(pattern, text, flags=re.M)
    return float(found.group(1)) if found else None
