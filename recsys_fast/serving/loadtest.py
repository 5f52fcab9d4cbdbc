"""A loopback load generator for the HTTP service: capacity, overload and recovery.

Used by ``tests/serving/test_overload.py`` (bounded) and ``benches/overload.py`` (longer); it
needs only the standard library (asyncio streams speaking HTTP/1.1 with keep-alive), so the
client costs far less per request than the server it drives, which matters when both share a
small machine.

- ``closed_loop(port, bodies, concurrency, seconds)``: ``concurrency`` connections, each sending
  its next request when the last one is answered: the service's throughput at that concurrency.
- ``open_loop(port, bodies, rate, seconds)``: requests sent at fixed times (``rate`` per second),
  whatever the service does; each takes an idle keep-alive connection or opens a new one. This
  is what an overloaded service meets: clients that do not slow down.
- ``summarize(outcomes, seconds)``: counts per status, 503s without ``Retry-After``, lost
  requests (no response within ``timeout`` or a broken connection), latency percentiles.

Every request is bounded by ``timeout`` seconds, from the time it was due to be sent (so a
client that falls behind its schedule is counted against the service, as a real client would
see it) to the end of the response body.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class Outcome:
    """One request: ``status`` None when it was lost (``error`` says how); ``latency`` seconds from
    when it was due to the end of its response (or to the failure)."""

    due: float
    latency: float
    status: Optional[int] = None
    retry_after: Optional[str] = None
    error: Optional[str] = None


class _Connections:
    """Idle keep-alive connections to one port; a request takes one or opens a new one."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.idle: list = []
        self.opened = 0
        self.peak_open = 0
        self.open_now = 0
        self.stale_retries = 0

    async def take(self) -> tuple[tuple, bool]:
        """A connection and whether it was reused; idle ones the server has closed meanwhile (its
        keep-alive timeout) are dropped, as an HTTP client's pool does."""
        while self.idle:
            conn = self.idle.pop()
            if conn[0].at_eof() or conn[1].is_closing():
                self.drop(conn)
                continue
            return conn, True
        return await self.open(), False

    async def open(self) -> tuple:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened += 1
        self.open_now += 1
        self.peak_open = max(self.peak_open, self.open_now)
        return reader, writer

    def give(self, conn, reusable: bool) -> None:
        if reusable:
            self.idle.append(conn)
        else:
            self.drop(conn)

    def drop(self, conn) -> None:
        self.open_now -= 1
        try:
            conn[1].close()
        except Exception:  # noqa: BLE001 - the connection is gone either way
            pass

    def close(self) -> None:
        while self.idle:
            self.drop(self.idle.pop())


class _Stale(Exception):
    """A reused keep-alive connection was closed by the server before it sent a byte."""


async def _exchange(pool: _Connections, path: str, body: bytes) -> tuple[int, Optional[str]]:
    """One POST on a pooled connection: (status, Retry-After header or None). A reused connection
    that the server closed as the request went out (the keep-alive race every HTTP client meets)
    is retried once on a new connection, as HTTP clients do; ``pool.stale_retries`` counts them."""
    try:
        return await _exchange_once(pool, path, body)
    except _Stale:
        pool.stale_retries += 1
        return await _exchange_once(pool, path, body, fresh=True)


async def _exchange_once(pool: _Connections, path: str, body: bytes, fresh: bool = False):
    conn, reused = await pool.take() if not fresh else (await pool.open(), False)
    reader, writer = conn
    reusable = False
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {pool.host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        try:
            status_line = await reader.readline()
        except ConnectionResetError:
            if reused:
                raise _Stale() from None
            raise
        if not status_line:
            if reused:
                raise _Stale()
            raise ConnectionResetError("connection closed before the response")
        status = int(status_line.split()[1])
        length, retry_after, keep = 0, None, True
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"retry-after":
                retry_after = value.strip().decode()
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
        await reader.readexactly(length)
        reusable = keep
        return status, retry_after
    finally:
        pool.give(conn, reusable)


async def _one(pool: _Connections, path: str, body: bytes, due: float, timeout: float) -> Outcome:
    try:
        status, retry_after = await asyncio.wait_for(_exchange(pool, path, body),
                                                     max(due + timeout - time.perf_counter(), 1e-3))
        return Outcome(due, time.perf_counter() - due, status, retry_after)
    except asyncio.TimeoutError:
        return Outcome(due, time.perf_counter() - due, error="timeout")
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        return Outcome(due, time.perf_counter() - due, error=type(exc).__name__)


async def closed_loop(port: int, bodies: list[bytes], concurrency: int, seconds: float,
                      max_requests: Optional[int] = None, timeout: float = 30.0, host: str = "127.0.0.1",
                      path: str = "/recommend") -> list[Outcome]:
    """``concurrency`` connections each sending one request after another for ``seconds`` (or
    until ``max_requests`` were sent in all)."""
    pool = _Connections(host, port)
    stop = time.perf_counter() + seconds
    sent = [0]
    out: list[Outcome] = []

    async def worker():
        while time.perf_counter() < stop and (max_requests is None or sent[0] < max_requests):
            i = sent[0]
            sent[0] += 1
            out.append(await _one(pool, path, bodies[i % len(bodies)], time.perf_counter(), timeout))

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        pool.close()
    return out


async def open_loop(port: int, bodies: list[bytes], rate: float, seconds: float, timeout: float = 30.0,
                    host: str = "127.0.0.1", path: str = "/recommend") -> tuple[list[Outcome], dict]:
    """Requests due every ``1 / rate`` s for ``seconds``, each sent when due whatever the service
    does (an idle connection or a new one); returns the outcomes and the client's own figures
    (connections opened, most open at once, how late the client sent the requests)."""
    pool = _Connections(host, port)
    n = max(1, int(rate * seconds))
    tasks = []
    lateness = []
    t0 = time.perf_counter()
    try:
        for i in range(n):
            due = t0 + i / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            lateness.append(time.perf_counter() - due)
            tasks.append(asyncio.ensure_future(_one(pool, path, bodies[i % len(bodies)], due, timeout)))
        out = list(await asyncio.gather(*tasks))
    finally:
        pool.close()
    late = np.asarray(lateness) * 1e3
    return out, {"connections_opened": pool.opened, "connections_peak": pool.peak_open,
                 "stale_keepalive_retries": pool.stale_retries,
                 "send_lateness_p50_ms": float(np.percentile(late, 50)),
                 "send_lateness_p99_ms": float(np.percentile(late, 99)),
                 "send_lateness_max_ms": float(late.max())}


def summarize(outcomes: list[Outcome], seconds: Optional[float] = None) -> dict:
    """Counts per status (``"lost"`` for no response), 503s without Retry-After, the causes of
    lost requests, throughput of 200s over ``seconds`` (default: first due to last answer) and
    latency percentiles (ms) of the 200s and of every answered request."""
    counts: dict = {}
    errors: dict = {}
    for o in outcomes:
        key = str(o.status) if o.status is not None else "lost"
        counts[key] = counts.get(key, 0) + 1
        if o.error:
            errors[o.error] = errors.get(o.error, 0) + 1
    if seconds is None and outcomes:
        seconds = max(o.due + o.latency for o in outcomes) - min(o.due for o in outcomes)
    ok = np.array([o.latency for o in outcomes if o.status == 200]) * 1e3
    answered = np.array([o.latency for o in outcomes if o.status is not None]) * 1e3

    def pct(a, q):
        return round(float(np.percentile(a, q)), 3) if len(a) else None

    return {"requests": len(outcomes), "counts": dict(sorted(counts.items())), "lost": counts.get("lost", 0),
            "lost_causes": errors, "unexpected": sum(v for k, v in counts.items() if k not in ("200", "503", "lost")),
            "503_without_retry_after": sum(1 for o in outcomes if o.status == 503 and not o.retry_after),
            "seconds": round(seconds, 3) if seconds else None,
            "ok_per_s": round(len(ok) / seconds, 1) if seconds else None,
            "p50_ms_200": pct(ok, 50), "p99_ms_200": pct(ok, 99), "max_ms_200": pct(ok, 100),
            "p50_ms_all": pct(answered, 50), "p99_ms_all": pct(answered, 99), "max_ms_all": pct(answered, 100)}


# ---------------------------------------------------------------------------- a server process
class ServerProcess:
    """``recsys-fast serve BUNDLE --port 0 ARGS`` as a subprocess on 127.0.0.1: ``start()`` waits
    until uvicorn says where it listens and ``/health`` is 200; ``stop()`` sends SIGTERM (then
    kills after ``grace`` s). ``log`` holds its stderr lines. A context manager."""

    def __init__(self, bundle, args=(), env: Optional[dict] = None, ready_timeout: float = 180.0, grace: float = 30.0):
        self.cmd = [_python(), "-m", "recsys_fast.cli", "serve", str(bundle), "--host", "127.0.0.1", "--port", "0",
                    "--log-level", "info", *map(str, args)]
        self.env, self.ready_timeout, self.grace = env, ready_timeout, grace
        self.proc = None
        self.port: Optional[int] = None
        self.log: list[str] = []

    def start(self) -> "ServerProcess":
        import re
        import subprocess
        import threading

        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        deadline = time.monotonic() + self.ready_timeout
        while self.port is None:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"recsys-fast serve exited with {self.proc.returncode}: {''.join(self.log)}")
            self.log.append(line)
            found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
            self.port = int(found.group(1)) if found else None
            if time.monotonic() > deadline:
                raise RuntimeError(f"recsys-fast serve did not start: {''.join(self.log)}")
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()
        while get(self.port, "/health")[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"recsys-fast serve never became ready: {''.join(self.log)}")
            time.sleep(0.1)
        return self

    def stop(self) -> Optional[int]:
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(self.grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def get(port: int, path: str, timeout: float = 10.0, host: str = "127.0.0.1") -> tuple[Optional[int], str]:
    """A plain GET (status, body text); status None when the service did not answer."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None, ""


def _python() -> str:
    import sys

    return sys.executable
