"""Clients that go away mid-request, and one that stalls, against a real uvicorn server on loopback.

Raw sockets send a request's headers and part (or all) of its JSON body, then close (FIN) or
reset (RST) the connection. After each: normal requests are answered 200, the admission slots
come back (``recsys_fast_in_flight_requests`` 0), the worker threads stay within the pool and the
sockets are closed. Bounded in count; waits have deadlines, nothing asserts a time.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("httpx")

from recsys_fast import serving  # noqa: E402
from recsys_fast.serving.http import CLIENT_GONE, ServiceLimits, create_app  # noqa: E402

from .live import GatedRuntime, as_lists, check_answers, live_server, metric, users_of, wait_ready  # noqa: E402


def request_bytes(body: dict, path: str = "/recommend") -> tuple[bytes, bytes]:
    """The head and the body of a JSON POST."""
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    return head, data


def connect(client, reset: bool = False) -> socket.socket:
    """A raw connection to the server; ``reset``: closing it sends RST instead of FIN."""
    sock = socket.create_connection(("127.0.0.1", client.base_url.port), timeout=30)
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return sock


def metrics(client) -> str:
    return client.get("/metrics").text


def in_flight(client) -> float:
    return metric(metrics(client), "recsys_fast_in_flight_requests")


def wait_in_flight(client, value: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (now := in_flight(client)) != value:
        assert time.monotonic() < deadline, f"in flight {now}, expected {value}"
        time.sleep(0.02)


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("recsys-fast-worker")]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


PARSERS = ("httptools", "h11")  # uvicorn's two HTTP/1.1 implementations tell a disconnect apart


@pytest.mark.parametrize("http", PARSERS)
def test_a_client_that_sends_part_of_a_body_and_leaves(knn, http):
    model, path = knn
    users = users_of(model, 2)
    expected = as_lists(model.recommend(users, k=5))
    head, data = request_bytes({"users": users, "k": 5})
    with live_server(create_app(serving.load(path)), http=http) as client:
        wait_ready(client)
        left = 0
        for reset in (False, True):
            for sent in (0, 1, len(data) // 2, len(data) - 1):  # the headers alone, then ever more body
                sock = connect(client, reset)
                sock.sendall(head + data[:sent])
                wait_in_flight(client, 1)  # admitted: the app has the request, waiting for its body
                sock.close()
                left += 1
                wait_in_flight(client, 0)
                check_answers(client.post("/recommend", json={"users": users, "k": 5}), expected)
        text = metrics(client)
        assert metric(text, "recsys_fast_requests_total", endpoint="/recommend", status=str(CLIENT_GONE)) == left
        assert metric(text, "recsys_fast_requests_total", endpoint="/recommend", status="200") == left
        assert "status=\"5" not in text and "status=\"400\"" not in text, text


@pytest.mark.parametrize("http", PARSERS)
def test_a_client_that_leaves_while_its_request_runs_or_waits(knn, http):
    """Held by the runtime: the slot comes back when the worker is done. Waiting for a worker: the
    call is dropped, it never runs."""
    model, path = knn
    users = users_of(model, 1)
    head, data = request_bytes({"users": users, "k": 5})
    gated = GatedRuntime(serving.load(path))
    with live_server(create_app(gated, limits=ServiceLimits(workers=1, max_concurrency=4)), http=http) as client:
        wait_ready(client)
        running, waiting = connect(client), connect(client, reset=True)
        running.sendall(head + data)
        assert gated.entered.wait(30)
        waiting.sendall(head + data)  # queued behind the held one (one worker)
        wait_in_flight(client, 2)
        running.close()
        waiting.close()
        wait_in_flight(client, 1)  # the queued call was dropped; the running one keeps its slot
        assert gated.calls == 1 and len(workers()) == 1
        gated.gate.set()
        wait_in_flight(client, 0)
        check_answers(client.post("/recommend", json={"users": users, "k": 5}), as_lists(model.recommend(users, k=5)))
        assert gated.calls == 2  # the held request and this one: the dropped call never ran
        text = metrics(client)
        assert metric(text, "recsys_fast_requests_total", endpoint="/recommend", status=str(CLIENT_GONE)) == 2
        assert metric(text, "recsys_fast_requests_total", endpoint="/recommend", status="200") == 1


def test_a_request_that_times_out_before_it_starts_never_runs(knn):
    model, path = knn
    users = users_of(model, 1)
    gated = GatedRuntime(serving.load(path))
    limits = ServiceLimits(workers=1, max_concurrency=4, timeout_s=0.5)
    with live_server(create_app(gated, limits=limits)) as client, ThreadPoolExecutor(1) as pool:
        wait_ready(client)
        held = pool.submit(client.post, "/recommend", json={"users": users, "k": 5})
        assert gated.entered.wait(30)
        r = client.post("/recommend", json={"users": users, "k": 5})  # waits for the one worker
        assert r.status_code == 504 and r.json()["error"] == "timeout", r.text
        assert held.result(30).status_code == 504
        wait_in_flight(client, 1)  # only the held call's thread still holds a slot
        gated.gate.set()
        wait_in_flight(client, 0)
        assert gated.calls == 1
        assert client.post("/recommend", json={"users": users, "k": 5}).status_code == 200


@pytest.mark.parametrize("http", PARSERS)
def test_a_body_that_stalls_is_answered_408_and_frees_its_slot(knn, http):
    model, path = knn
    users = users_of(model, 1)
    head, data = request_bytes({"users": users, "k": 5})
    with live_server(create_app(serving.load(path), limits=ServiceLimits(timeout_s=1.0)), http=http) as client:
        wait_ready(client)
        sock = connect(client)
        sock.sendall(head + data[:5])  # and then nothing, the connection left open
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        sock.close()
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split()[1] == b"408", answer
        error = json.loads(rest.partition(b"\r\n\r\n")[2])
        assert error["error"] == "body_timeout" and error["field"] == "body" and "timeout_s" in error["message"]
        wait_in_flight(client, 0)
        assert client.post("/recommend", json={"users": users, "k": 5}).status_code == 200


def test_many_clients_that_leave_mixed_with_normal_requests(knn):
    """200 clients that leave (part of a body then FIN or RST, a whole request then gone before
    the answer) interleaved with 100 normal requests on 4 connections: every normal one 200."""
    model, path = knn
    users = users_of(model, 20)
    expected = {u: as_lists(model.recommend([u], k=5)) for u in users}
    limits = ServiceLimits(max_concurrency=16)
    with live_server(create_app(serving.load(path), limits=limits)) as client:
        wait_ready(client)
        threads0, fds0 = threading.active_count(), open_fds()

        def leave(i):
            head, data = request_bytes({"users": [users[i % len(users)]], "k": 5})
            sock = connect(client, reset=i % 2 == 1)
            try:
                sock.sendall(head + data[:(0, len(data) // 2, len(data))[i % 3]])
            except OSError:
                pass  # a reset raced by the server: still a client that left
            sock.close()
            return None

        def normal(i):
            u = users[i % len(users)]
            return u, client.post("/recommend", json={"users": [u], "k": 5})

        with ThreadPoolExecutor(4) as pool:
            jobs = [pool.submit(leave if i % 3 else normal, i) for i in range(300)]
            answers = [job.result(60) for job in jobs]
        normals = [a for a in answers if a is not None]
        assert len(normals) == 100
        for u, r in normals:
            check_answers(r, expected[u])
        wait_in_flight(client, 0)
        assert len(workers()) <= limits.n_workers
        assert threading.active_count() <= threads0 + limits.n_workers
        deadline = time.monotonic() + 30
        while open_fds() > fds0 + 8:  # the server closed the sockets of the clients that left
            assert time.monotonic() < deadline, f"{open_fds()} fds open, {fds0} before"
            time.sleep(0.05)
        text = metrics(client)
        assert metric(text, "recsys_fast_requests_total", endpoint="/recommend", status="200") >= 100
        assert "status=\"5" not in text, text
        check_answers(client.post("/recommend", json={"users": users[:1], "k": 5}), expected[users[0]])
