"""The HTTP service (FastAPI + uvicorn, extra ``serve``): a loaded runtime behind JSON endpoints.

``create_app(runtime)`` returns a FastAPI app for users who mount it in their own service;
``serve(bundle, ...)`` (``recsys-fast serve BUNDLE``) loads a bundle and runs the app with uvicorn.

Endpoints: ``POST /recommend``, ``POST /similar-items``, ``GET /health`` (200 once ``prepare()``
ran, 503 before), ``GET /metadata``, ``GET /metrics`` (Prometheus text format),
``POST /admin/reload`` and the OpenAPI schema (``/openapi.json``, ``/docs``).

How a request runs:

- the body is refused with 413 above ``ServiceLimits.max_body_bytes`` (by the Content-Length
  header, or by counting a streamed body) and with 408 when it is not complete ``timeout_s``
  after the request arrived (a client that sends part of a body and stalls does not keep its
  slot), and validated by pydantic models whose bounds come
  from ``ServiceLimits`` (422 naming the field: wrong types, k <= 0 or above the limit, too many
  users, malformed JSON); k above the loaded catalogue is a 422 too, unknown ids a 404;
- a ``/recommend`` or ``/similar-items`` request is admitted only while fewer than
  ``max_concurrency`` of them are in the service (from the moment the app sees it, before its
  body is read or validated, until its answer is sent and its worker thread is done); beyond
  that it is answered at once with a fixed 503 and ``Retry-After``, ahead of FastAPI's own
  middleware and routing, which costs the event loop little, so a flood of requests is shed
  instead of queueing without bound (``benches/overload.py``: twice the measured capacity is
  answered 200 or 503, none lost). ``/recommend`` and ``/similar-items`` with a JSON body are
  answered by that front door itself (``_ServiceMiddleware._direct``: the body parsed once by the
  endpoint's pydantic model, the answer serialised directly); a body that does not validate goes
  on to the FastAPI endpoint, which answers the 422. An admitted request runs on a worker
  thread, except a small one on a runtime measured fast, which runs on the event loop
  (``InlinePolicy``: the hop to a thread cost more than such a call); one on a worker that
  takes longer than ``timeout_s`` is answered 504, and one whose client closes the connection
  first is counted 499 (``CLIENT_GONE``, nginx's code; no one reads it). A call still waiting
  for a worker then never runs; one already running finishes and frees the slot after;
- it takes the runtime current when it starts on its worker and finishes on it: a reload (``POST
  /admin/reload`` or SIGHUP under ``serve``) builds and prepares the new runtime aside and swaps
  one reference, and a bundle that fails to load leaves the old one serving (DESIGN: "a reload
  builds a new one aside and swaps one reference").

Errors are JSON ``{"error": code, "message": text, "field": name or null, "errors": [...]}``;
nothing a client sends stops the process. Padding of the runtime's rectangular results (id -1,
score -inf) is dropped: each list holds only the items that qualified.
"""

# no ``from __future__ import annotations``: FastAPI reads the endpoint annotations, and the request
# models are built per app (their bounds are the app's limits)

import asyncio
import concurrent.futures
import contextvars
import functools
import json
import logging
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass
from typing import Annotated, Literal, Optional, Union

import numpy as np

from ..errors import MissingExtraError, ParameterError, UnknownIdError
from .. import validation

logger = logging.getLogger("recsys_fast.serving")

ENDPOINTS = ("/recommend", "/similar-items", "/health", "/metadata", "/metrics", "/admin/reload",
             "/openapi.json", "/docs")  # metric labels; any other path is counted as "other"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INT64 = (-(2**63), 2**63 - 1)
ADMITTED = frozenset({"/recommend", "/similar-items"})  # the endpoints that take a slot
RETRY_AFTER_S = 1
CLIENT_GONE = 499  # the status counted for a request whose client left before its answer (nginx's)


@dataclass(frozen=True)
class ServiceLimits:
    """Bounds of the HTTP service; every one is enforced before the runtime is called.

    ``max_users``: users (or items, for /similar-items) per request; ``max_k``: list length (also
    capped by the catalogue); ``max_items``: ids in a request's ``items`` candidate filter;
    ``max_history``: items per user in ``history``; ``max_body_bytes``: request body size (413
    above); ``max_concurrency``: requests running at once (503 with ``Retry-After`` beyond);
    ``workers``: threads that call the runtime (None: ``min(32, cpu count + 4)``);
    ``timeout_s``: seconds before a request is answered 504, and before its body must be
    complete (408). ``inline_max_s`` and ``inline_max_users``: a request of at most
    ``inline_max_users`` users (items, for /similar-items) and no ``history`` runs on the event
    loop itself, without the hop to a worker thread, while the loaded runtime's such calls take
    at most ``inline_max_s`` seconds of CPU on average (see ``InlinePolicy``); ``inline_max_s=0``
    or ``inline_max_users=0`` sends every call to a worker.
    """

    max_users: int = 1000
    max_k: int = 1000
    max_items: int = 100_000
    max_history: int = 10_000
    max_body_bytes: int = 1 << 20
    max_concurrency: int = 64
    workers: Optional[int] = None
    timeout_s: float = 10.0
    inline_max_s: float = 0.001
    inline_max_users: int = 8

    def __post_init__(self):
        for name in ("max_users", "max_k", "max_items", "max_history", "max_body_bytes", "max_concurrency"):
            validation.integer(name, getattr(self, name), minimum=1)
        validation.integer("workers", self.workers, minimum=1, allow_none=True)
        validation.number("timeout_s", self.timeout_s, minimum=0, min_inclusive=False)
        validation.number("inline_max_s", self.inline_max_s, minimum=0)
        validation.integer("inline_max_users", self.inline_max_users, minimum=0)
        if self.inline_max_s >= self.timeout_s:
            raise ParameterError("inline_max_s", self.inline_max_s, f"below timeout_s ({self.timeout_s:g})",
                                 hint="a call run on the event loop cannot be timed out")

    @property
    def n_workers(self) -> int:
        return self.workers or min(32, (os.cpu_count() or 1) + 4)


INLINE_WARM_CALLS = 16  # calls measured (on workers) before calls may run on the event loop; the mean's span
INLINE_SPIKE = 10  # one call over this many times inline_max_s sends calls to workers again
INLINE_SAMPLE = 8  # inline calls measured: one in this many (every call on a worker is)


class InlinePolicy:
    """Which calls run on the event loop itself instead of a worker thread.

    The hop to a worker (``submit``, waking the thread, the GIL handed back and forth, the
    future's callback waking the loop, the timeout and disconnect watch) costs the service more
    than a kNN or SASRec call itself (~50-150 us on a quiet machine), so a call known to be short
    is cheaper inline. An inline call blocks the loop while it runs and cannot be timed out (504)
    or noticed as abandoned (499), so it is bounded:

    - only recsys_fast's own runtimes (``OnnxRuntime``, ``ModelRuntime``: pure computation, no
      I/O, no lock that a request could hold), never a wrapper or another object;
    - only small requests: ``inline_max_users`` users (or items) or fewer and no ``history``
      (whose fold-in cost grows with its length);
    - only while such calls are measured short: the calling thread's CPU time
      (``time.thread_time``: preemption by other processes and waits for the GIL do not count)
      of each one on a worker and of one in ``INLINE_SAMPLE`` inline feeds a running mean over
      about ``INLINE_WARM_CALLS`` measured calls; calls go inline once ``INLINE_WARM_CALLS`` were measured and while the mean is at
      most ``inline_max_s``. One call over ``INLINE_SPIKE`` x ``inline_max_s`` sends the next
      ones to workers until ``INLINE_WARM_CALLS`` more were measured.

    An inline call first yields to the loop once, so that requests arriving meanwhile are admitted
    or shed (503) by the front door: ``max_concurrency`` still bounds the backlog.

    A new runtime (reload) starts on workers. The state is updated without a lock from the loop
    and the workers; a lost update only shifts the mean by one call.
    """

    def __init__(self, max_s: float, max_users: int, warm_calls: int = INLINE_WARM_CALLS):
        self.max_s = max_s
        self.max_users = max_users if max_s > 0 else 0
        self.warm_calls = warm_calls
        self.generation = None
        self.capable = False
        self.count = 0
        self.mean = 0.0
        self.tick = 0

    def reset(self, generation: int, runtime) -> None:
        """A new runtime: inline only for recsys_fast's runtimes, and only after calls were measured."""
        from .runtime import ModelRuntime, OnnxRuntime

        self.capable = type(runtime) in (ModelRuntime, OnnxRuntime)
        self.count, self.mean = 0, 0.0
        self.generation = generation

    def candidate(self, n: int, history) -> bool:
        """Whether a request of ``n`` users (or items) is small enough to be measured and run inline."""
        return 0 < n <= self.max_users and history is None

    def inline(self, generation: int) -> bool:
        """Whether a candidate request on ``generation``'s runtime runs on the loop now."""
        return (self.capable and generation == self.generation and self.count >= self.warm_calls
                and self.mean <= self.max_s)

    def sample(self) -> bool:
        """Whether this inline call is measured: one in ``INLINE_SAMPLE`` (reading the thread's CPU
        clock is a system call, and under load the one where the process gets descheduled)."""
        self.tick = (self.tick + 1) % INLINE_SAMPLE
        return self.tick == 0

    def record(self, generation: int, seconds: float) -> None:
        """A candidate call on ``generation``'s runtime took ``seconds`` of CPU."""
        if generation != self.generation:
            return
        if seconds > INLINE_SPIKE * self.max_s:
            self.count, self.mean = 0, 0.0
            return
        self.mean = seconds if self.count == 0 else self.mean + (seconds - self.mean) / self.warm_calls
        self.count += 1


class ServiceError(Exception):
    """An error answered as JSON with ``status``; ``field`` names the request field at fault."""

    def __init__(self, status: int, code: str, message: str, field: Optional[str] = None,
                 headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers


class Service:
    """The app's state: the current runtime (swapped whole on reload), the worker threads, the
    admission slots and the metrics. ``app.state.service`` of ``create_app``."""

    def __init__(self, runtime, limits: ServiceLimits, n_threads: Optional[int], providers, registry):
        from prometheus_client import Counter, Gauge, Histogram

        self.current = (runtime, 1)  # (runtime, generation), swapped as one reference
        self.limits = limits
        self.n_threads = n_threads
        self.providers = providers
        self.loaded_at = time.time()
        self.ready = False
        self.prepare_error: Optional[str] = None
        self.last_reload: Optional[dict] = None
        self._preparing = False
        self._reload_lock = asyncio.Lock()
        self._slots = threading.BoundedSemaphore(limits.max_concurrency)
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._executor_lock = threading.Lock()
        self.registry = registry
        self.requests = Counter("recsys_fast_requests", "HTTP requests by endpoint and status code",
                                ("endpoint", "status"), registry=registry)
        self.latency = Histogram("recsys_fast_request_duration_seconds", "HTTP request latency (s) by endpoint",
                                 ("endpoint",), buckets=LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge("recsys_fast_in_flight_requests", "requests admitted to the runtime and not done",
                               registry=registry)
        self.reloads = Counter("recsys_fast_reloads", "bundle reloads by result (ok, error)", ("result",),
                               registry=registry)
        self.generation_gauge = Gauge("recsys_fast_model_generation", "how many bundles were loaded (1 = the first)",
                                      registry=registry)
        self.generation_gauge.set(1)
        calls = Counter("recsys_fast_runtime_calls", "runtime calls by where they ran: on the event loop (loop, "
                        "see InlinePolicy) or a worker thread (worker)", ("where",), registry=registry)
        self.loop_calls, self.worker_calls = calls.labels("loop"), calls.labels("worker")
        self.inline = InlinePolicy(limits.inline_max_s, limits.inline_max_users)
        self.inline.reset(1, runtime)

    @property
    def runtime(self):
        return self.current[0]

    @property
    def generation(self) -> int:
        return self.current[1]

    # ------------------------------------------------------------------ warm-up
    def start_prepare(self) -> None:
        """Run the runtime's ``prepare()`` in the background once; /health is ready when it is done."""
        if self.ready or self._preparing:
            return
        self._preparing = True
        runtime = self.runtime

        def work():
            try:
                runtime.prepare()
            except Exception as exc:  # noqa: BLE001 - reported by /health, the service stays up
                logger.exception("prepare() of %s failed", self.runtime_path())
                self.prepare_error = f"{type(exc).__name__}: {exc}"
            else:
                self.ready = True
            finally:
                self._preparing = False

        threading.Thread(target=work, name="recsys-fast-prepare", daemon=True).start()

    # ------------------------------------------------------------------ admission and running requests
    def admit(self) -> Optional["_Ticket"]:
        """A slot for one request (None when all ``max_concurrency`` are taken); released when the
        ticket's holders are all done (the request's answer, and a worker thread if it started one)."""
        if not self._slots.acquire(blocking=False):
            return None
        self.in_flight.inc()
        return _Ticket(self._release)

    def overloaded_message(self) -> str:
        return (f"the service is running {self.limits.max_concurrency} requests (max_concurrency); "
                f"retry after {RETRY_AFTER_S} s")

    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            with self._executor_lock:
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        self.limits.n_workers, thread_name_prefix="recsys-fast-worker")
        return self._executor

    def shutdown(self) -> None:
        with self._executor_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None

    async def call(self, fn, n: int, history=None):
        """``fn(runtime, generation)`` with the runtime current now: on the event loop when the
        request (``n`` users or items, ``history``) is small and the runtime has been fast
        (``InlinePolicy``), else on a worker thread (``run``)."""
        policy = self.inline
        if not policy.candidate(n, history):
            return await self.run(fn)
        runtime, generation = self.current
        if not policy.inline(generation):
            return await self.run(fn, generation_record=True)
        # one turn of the loop first: the requests that arrived meanwhile reach the front door and
        # take a slot (or are shed with a 503) before this one runs, so the admission limit still
        # sees the queue; without it every inline request would run to completion at once and the
        # backlog would wait uncounted in the loop (benches/overload.py: nothing shed at 8x)
        await asyncio.sleep(0)
        self.loop_calls.inc()
        if not policy.sample():
            return fn(runtime, generation)
        t0 = time.thread_time()
        try:
            return fn(runtime, generation)
        finally:
            policy.record(generation, time.thread_time() - t0)

    async def run(self, fn, generation_record: bool = False):
        """``fn(runtime, generation)`` on a worker thread with the runtime current now, under the
        request's slot (taken by the middleware; taken here when there is none: 503 if every slot is
        taken). 504 after ``timeout_s``; a client that goes away meanwhile is answered 499 (which
        no one reads: it is what the metrics count). Either way a call still waiting for a worker
        never runs, and one already running frees the slot when its thread is done, not before."""
        ticket = _TICKET.get()
        own = ticket is None
        if own:
            ticket = self.admit()
            if ticket is None:
                raise ServiceError(503, "overloaded", self.overloaded_message(),
                                   headers={"Retry-After": str(RETRY_AFTER_S)})
        runtime, generation = self.current
        ticket.hold()
        if own:
            ticket.done()  # the worker's hold is what keeps the slot now
        if generation_record:
            fn = functools.partial(_timed, fn, self.inline.record)
        self.worker_calls.inc()
        try:
            future = self.executor().submit(fn, runtime, generation)
        except BaseException:
            ticket.done()
            raise
        future.add_done_callback(lambda _future: ticket.done())  # also when it is cancelled unstarted
        answer = asyncio.wrap_future(future)
        body = ticket.body
        gone = asyncio.ensure_future(body.disconnected()) if body is not None and body.complete else None
        try:
            done, _ = await asyncio.wait((answer,) if gone is None else (answer, gone), timeout=self.limits.timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            if gone is not None:
                gone.cancel()
        if answer in done:
            return answer.result()
        answer.cancel()  # cancels the worker's call too if it has not started
        if gone is not None and gone in done:
            raise ServiceError(CLIENT_GONE, "client_closed_request", "the client closed the connection before "
                               "its answer")
        raise ServiceError(504, "timeout", f"the request took longer than {self.limits.timeout_s:g} s "
                           "(timeout_s)") from None

    def _release(self) -> None:
        self.in_flight.dec()
        self._slots.release()

    # ------------------------------------------------------------------ reload
    def runtime_path(self) -> str:
        return str(self.runtime.metadata.get("path", ""))

    async def reload(self, path: Optional[str] = None, wait: bool = False) -> dict:
        """Load ``path`` (default: the current bundle's path) aside, prepare it, swap it in.

        A reload already running answers 409 (``wait``: queue behind it instead, as SIGHUP does);
        a bundle that fails to load raises a 422 ``ServiceError`` and the old runtime keeps serving.
        """
        if self._reload_lock.locked() and not wait:
            raise ServiceError(409, "reload_running", "a reload is already running; retry when it is done")
        async with self._reload_lock:
            target = path or self.runtime_path()
            t0 = time.perf_counter()
            loop = asyncio.get_running_loop()
            try:
                new = await loop.run_in_executor(None, self._load_prepared, target)
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old runtime serving
                self.reloads.labels("error").inc()
                message = f"{type(exc).__name__}: {exc}"
                self.last_reload = {"ok": False, "path": target, "error": message, "at": time.time()}
                logger.error("reload of %s failed, still serving %s: %s", target, self.runtime_path(), message)
                raise ServiceError(422, "reload_failed", f"could not load {target!r}, still serving "
                                   f"{self.runtime_path()!r}: {message}", field="path") from None
            generation = self.generation + 1
            self.inline.reset(generation, new)  # before the swap: the new runtime starts on workers
            self.current = (new, generation)  # the swap: requests admitted from now on use it
            self.loaded_at = time.time()
            self.ready = True
            self.prepare_error = None
            self.generation_gauge.set(self.generation)
            self.reloads.labels("ok").inc()
            seconds = time.perf_counter() - t0
            self.last_reload = {"ok": True, "path": target, "error": None, "at": self.loaded_at}
            logger.info("reloaded %s (generation %d) in %.2f s", target, self.generation, seconds)
            return {"status": "reloaded", "path": target, "generation": self.generation,
                    "seconds": round(seconds, 4), "metadata": _plain_json(new.metadata)}

    def _load_prepared(self, path: str):
        from . import load

        return load(path, n_threads=self.n_threads, providers=self.providers).prepare()

    def on_reload_signal(self) -> None:
        """SIGHUP: reload the current bundle; a failure is logged and counted, the old one serves on."""
        async def reload():
            try:
                await self.reload(wait=True)
            except ServiceError:
                pass  # logged and counted by reload()

        asyncio.ensure_future(reload())


def _timed(fn, record, runtime, generation: int):
    """``fn(runtime, generation)`` on a worker, its CPU time given to ``record(generation, seconds)``."""
    t0 = time.thread_time()
    try:
        return fn(runtime, generation)
    finally:
        record(generation, time.thread_time() - t0)


class _Ticket:
    """One admitted request's slot: held by the request until its answer is sent and by the worker
    thread running it, if any (which may outlive a 504); ``release`` runs once, when the last is done."""

    def __init__(self, release):
        self._release = release
        self._holders = 1
        self._lock = threading.Lock()
        self.body: Optional[_Body] = None  # the request's receive channel, set by the middleware

    def hold(self) -> None:
        with self._lock:
            self._holders += 1

    def done(self) -> None:
        with self._lock:
            self._holders -= 1
            last = self._holders == 0
        if last:
            self._release()


_TICKET: contextvars.ContextVar[Optional[_Ticket]] = contextvars.ContextVar("recsys_fast_ticket", default=None)


# ---------------------------------------------------------------------------- the app
def create_app(runtime, *, limits: Optional[ServiceLimits] = None, n_threads: Optional[int] = None,
               providers=None, admin: bool = True, reload_signal: Optional[int] = None):
    """A FastAPI app serving ``runtime`` (from ``recsys_fast.serving.load``).

    ``limits``: the service's bounds (``ServiceLimits()`` by default). ``n_threads`` and
    ``providers``: how a reload loads the new bundle (default: as the current one was loaded).
    ``admin=False`` leaves out ``POST /admin/reload``. ``reload_signal`` (e.g. ``signal.SIGHUP``,
    as ``serve`` does): a signal that reloads the bundle; it needs the app to run in the main
    thread's event loop. The app prepares the runtime in the background when it starts (its
    lifespan, or the first ``/health`` call when it is mounted in another app).
    """
    try:
        from fastapi import Body, FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse, Response
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from starlette.exceptions import HTTPException as StarletteHTTPException
    except ImportError as exc:
        raise MissingExtraError(exc.name or "fastapi", "serve") from None
    import contextlib

    limits = limits or ServiceLimits()
    if not isinstance(limits, ServiceLimits):
        raise ParameterError("limits", limits, "a recsys_fast.serving.http.ServiceLimits")
    meta = runtime.metadata
    if n_threads is None:
        n_threads = meta.get("n_threads")
    if providers is None and meta.get("kind") == "onnx":
        providers = meta.get("providers")
    service = Service(runtime, limits, n_threads, providers, CollectorRegistry(auto_describe=True))
    models = _request_models(limits)
    RecommendRequest, SimilarRequest, ReloadRequest = models["recommend"], models["similar"], models["reload"]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.start_prepare()
        installed = False
        if reload_signal is not None:
            try:
                asyncio.get_running_loop().add_signal_handler(reload_signal, service.on_reload_signal)
                installed = True
            except (ValueError, RuntimeError, NotImplementedError) as exc:
                logger.warning("reload signal %s not installed: %s", reload_signal, exc)
        try:
            yield
        finally:
            if installed:
                asyncio.get_running_loop().remove_signal_handler(reload_signal)
            service.shutdown()

    app = _front_door_app(FastAPI)(title="recsys_fast", version=_version(), lifespan=lifespan,
                  description="Top-k recommendations from a recsys_fast bundle (kNN, popularity, EASE or an "
                              "exported neural model). Errors are JSON objects naming the field at fault.")
    app.state.service = service
    app.front_door = _ServiceMiddleware(functools.partial(FastAPI.__call__, app), service)
    app.front_door.direct = {"/recommend": (RecommendRequest, _recommend, _recommend_size),
                             "/similar-items": (SimilarRequest, _similar, _similar_size)}
    errors = {status: {"model": models["error"], "description": text} for status, text in (
        (404, "unknown id, or the model has no such scores"), (413, "request body too large"),
        (408, "the request body did not arrive within the timeout"),
        (422, "invalid request: the field is named"), (503, "overloaded: retry after Retry-After seconds"),
        (504, "the request took longer than the service's timeout"))}

    # ------------------------------------------------------------------ errors as JSON
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError):
        return _error(exc.status, exc.code, exc.message, exc.field, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        details = _field_errors(exc.errors())
        first = details[0] if details else {"field": None, "message": "invalid request"}
        message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        if len(details) > 1:
            message += f" (and {len(details) - 1} more)"
        return _error(422, "invalid_request", message, first["field"], errors=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return _http_exception(exc, limits.max_body_bytes)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        return _internal(request.url.path, exc)

    # ------------------------------------------------------------------ endpoints
    @app.post("/recommend", response_model=models["recommend_response"], responses=errors,
              summary="top-k items for each user")
    async def recommend(body: RecommendRequest):
        return JSONResponse(await service.call(lambda rt, gen: _recommend(rt, gen, body), *_recommend_size(body)))

    @app.post("/similar-items", response_model=models["similar_response"], responses=errors,
              summary="the k most similar items of each item (kNN bundles)")
    async def similar_items(body: SimilarRequest):
        return JSONResponse(await service.call(lambda rt, gen: _similar(rt, gen, body), *_similar_size(body)))

    @app.get("/health", responses={503: {"description": "not ready: the runtime is still being prepared"}},
             summary="200 once the runtime is prepared (warm), 503 before")
    async def health():
        if not service.ready:
            service.start_prepare()
        body = {"status": "ready" if service.ready else "starting", "ready": service.ready,
                "generation": service.generation, "model_kind": service.runtime.metadata.get("model_kind"),
                "prepare_error": service.prepare_error}
        return JSONResponse(body, status_code=200 if service.ready else 503)

    @app.get("/metadata", summary="what is loaded, the service limits and the last reload")
    async def metadata():
        return JSONResponse(_plain_json({**service.runtime.metadata, "generation": service.generation,
                                         "loaded_at": service.loaded_at, "last_reload": service.last_reload,
                                         "limits": asdict(limits), "service_version": _version()}))

    @app.get("/metrics", summary="Prometheus metrics (text format)", response_class=Response)
    async def metrics():
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    if admin:
        @app.post("/admin/reload", responses={409: {"model": models["error"], "description": "a reload is running"},
                                              422: {"model": models["error"],
                                                    "description": "the bundle did not load; the old one serves on"}},
                  summary="load the bundle again (or the one at `path`) and swap it in atomically")
        async def reload(body: Annotated[Optional[ReloadRequest], Body()] = None):
            return JSONResponse(await service.reload(body.path if body is not None else None))

    return app


def _request_models(limits: ServiceLimits) -> dict:
    """The pydantic request/response models, bounded by ``limits`` (so the OpenAPI schema shows them)."""
    from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

    Id = Union[Annotated[StrictInt, Field(ge=INT64[0], le=INT64[1])], Annotated[StrictStr, Field(max_length=256)]]

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class RecommendRequest(Strict):
        users: list[Id] = Field(min_length=1, max_length=limits.max_users, description="external user ids")
        k: StrictInt = Field(10, ge=1, le=limits.max_k, description="list length (at most the catalogue size)")
        exclude_seen: bool = Field(True, description="leave out the items each user interacted with")
        items: Optional[list[Id]] = Field(None, min_length=1, max_length=limits.max_items,
                                          description="recommend only among these item ids")
        history: Optional[dict[Annotated[str, Field(max_length=256)],
                               Annotated[list[Id], Field(max_length=limits.max_history)]]] = Field(
            None, max_length=limits.max_users,
            description="user id -> item ids: score these users from the given items (fold-in models)")
        on_unknown: Literal["raise", "pad"] = Field(
            "raise", description="unknown users: 404 (raise) or an empty list (pad)")
        on_unknown_items: Literal["raise", "ignore"] = Field(
            "raise", description="unknown item ids in a history: 404 (raise) or left out (ignore)")

    class SimilarRequest(Strict):
        items: list[Id] = Field(min_length=1, max_length=limits.max_users, description="external item ids")
        k: StrictInt = Field(10, ge=1, le=limits.max_k)

    class ReloadRequest(Strict):
        path: Optional[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
            None, description="bundle directory to load instead of the current one")

    class UserRecommendations(BaseModel):
        user: Id
        items: list[Id]
        scores: list[float]

    class RecommendResponse(BaseModel):
        recommendations: list[UserRecommendations]
        generation: int

    class ItemNeighbours(BaseModel):
        item: Id
        items: list[Id]
        scores: list[float]

    class SimilarResponse(BaseModel):
        similar: list[ItemNeighbours]
        generation: int

    class FieldError(BaseModel):
        field: Optional[str]
        message: str
        type: str

    class ErrorResponse(BaseModel):
        error: str
        message: str
        field: Optional[str] = None
        errors: list[FieldError] = []

    return {"recommend": RecommendRequest, "similar": SimilarRequest, "reload": ReloadRequest,
            "recommend_response": RecommendResponse, "similar_response": SimilarResponse, "error": ErrorResponse}


# ---------------------------------------------------------------------------- request handlers (worker threads)
def _recommend(runtime, generation: int, body) -> dict:
    n_items = runtime.n_items
    if body.k > n_items:
        raise ServiceError(422, "invalid_request", f"k: must be <= the catalogue size {n_items}, got {body.k}", "k")
    user_map = runtime.user_map_
    users = [_normal_id(u, user_map) for u in body.users]
    history = None
    if body.history is not None:
        history = {_normal_id(key, user_map): value for key, value in body.history.items()}
    if body.on_unknown == "pad" and not user_map.is_string:
        users = _pad_non_integer(users, user_map)
    try:
        recs = runtime.recommend(users, k=body.k, exclude_seen=body.exclude_seen, items=body.items,
                                 history=history, on_unknown=body.on_unknown, on_unknown_items=body.on_unknown_items)
    except UnknownIdError as exc:
        field = "users" if exc.kind == "user" else ("items" if _names_any(body.items, exc.ids) else "history")
        raise ServiceError(404, "unknown_id", exc.message, field) from None
    except (ParameterError, ValueError) as exc:
        field = getattr(exc, "name", None) or ("history" if body.history else None)
        raise ServiceError(422, "invalid_request", str(exc), field) from None
    rows = _rows(recs.ids, recs.scores)
    return {"recommendations": [{"user": u, "items": i, "scores": s} for u, (i, s) in zip(body.users, rows)],
            "generation": generation}


def _recommend_size(body) -> tuple[int, Optional[dict]]:
    return len(body.users), body.history


def _similar_size(body) -> tuple[int, None]:
    return len(body.items), None


def _similar(runtime, generation: int, body) -> dict:
    n_items = runtime.n_items
    if body.k > n_items:
        raise ServiceError(422, "invalid_request", f"k: must be <= the catalogue size {n_items}, got {body.k}", "k")
    try:
        out = runtime.similar_items(body.items, k=body.k)
    except UnknownIdError as exc:
        raise ServiceError(404, "unknown_id", exc.message, "items") from None
    except TypeError as exc:  # the model has no item-item scores
        raise ServiceError(404, "not_supported", str(exc)) from None
    except (ParameterError, ValueError) as exc:
        raise ServiceError(422, "invalid_request", str(exc), getattr(exc, "name", None)) from None
    rows = _rows(out.ids, out.scores)
    return {"similar": [{"item": q, "items": i, "scores": s} for q, (i, s) in zip(body.items, rows)],
            "generation": generation}


def _names_any(given, ids) -> bool:
    """Whether the request list ``given`` holds any of ``ids`` (compared as text)."""
    wanted = {str(i) for i in ids}
    return given is not None and any(str(g) in wanted for g in given)


def _rows(ids: np.ndarray, scores: np.ndarray) -> list[tuple[list, list]]:
    """Each row's qualifying (finite-score) ids and scores as plain lists: padding is dropped."""
    valid = np.isfinite(scores)
    if valid.all():
        return list(zip(ids.tolist(), scores.tolist()))
    return [(ids[r][valid[r]].tolist(), scores[r][valid[r]].tolist()) for r in range(len(ids))]


def _normal_id(value, id_map):
    """An id from JSON as the id map holds it: integer maps take ints and integer strings (JSON
    object keys are always strings), string maps take strings."""
    if id_map.is_string:
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text.startswith("-") else text
        # ASCII digits only: str.isdigit() also holds for "³" or "٣", which int() refuses or reads
        if digits.isascii() and digits.isdigit() and INT64[0] <= int(text) <= INT64[1]:
            return int(text)
    return value


def _pad_non_integer(users: list, user_map) -> list:
    """For ``on_unknown="pad"`` on an integer id map: a non-integer id cannot be looked up (the map
    refuses the batch), so it is replaced by an integer the map does not hold, which pads."""
    if all(isinstance(u, int) for u in users):
        return users
    ids = user_map.ids
    absent = int(ids[0]) - 1 if len(ids) and int(ids[0]) > INT64[0] else (int(ids[-1]) + 1 if len(ids) else 0)
    return [u if isinstance(u, int) else absent for u in users]


# ---------------------------------------------------------------------------- plumbing
_FRONT_DOOR_APPS: dict = {}


def _front_door_app(fastapi_class):
    """A FastAPI subclass that hands every request to its ``front_door`` (the service's
    ``_ServiceMiddleware``) before anything of FastAPI runs: a request beyond ``max_concurrency``
    is shed ahead of FastAPI's own middleware stack and routing, which would otherwise cost the
    event loop more than the shedding itself, and the metrics see every answer, 500s included."""
    cls = _FRONT_DOOR_APPS.get(fastapi_class)
    if cls is None:
        class ServiceApp(fastapi_class):
            front_door = None

            async def __call__(self, scope, receive, send):
                if self.front_door is None:
                    await super().__call__(scope, receive, send)
                else:
                    await self.front_door(scope, receive, send)

        cls = _FRONT_DOOR_APPS.setdefault(fastapi_class, ServiceApp)
    return cls


class _ServiceMiddleware:
    """Pure ASGI middleware in front of the app (``_front_door_app``): refuses oversized bodies (413, by Content-Length before
    anything is read, or by counting a streamed body as it is read) and bodies that take longer
    than ``timeout_s`` to arrive (408), admits ``/recommend`` and ``/similar-items`` requests (a
    fixed 503 with ``Retry-After`` when every slot is taken), and counts and times every HTTP
    request by endpoint and status (``CLIENT_GONE`` for a client that left before its answer)."""

    def __init__(self, app, service: Service):
        self.app = app
        self.service = service
        self.known = frozenset(ENDPOINTS)
        self.max_body = service.limits.max_body_bytes
        self.timeout_s = service.limits.timeout_s
        body = json.dumps({"error": "overloaded", "message": service.overloaded_message(), "field": None,
                           "errors": []}).encode()
        self.overloaded_start = {"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(RETRY_AFTER_S).encode())]}
        self.overloaded_body = {"type": "http.response.body", "body": body, "more_body": False}
        self.shed_metrics: dict = {}  # path -> its (503 count, latency) children, bound at the first 503
        self.bound: dict = {}  # (endpoint, status) -> its (count, latency) children, bound at the first answer
        self.direct: dict = {}  # path -> (request model, handler, size) of the endpoints answered by _direct

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path = scope.get("path", "")
        ticket = None
        if path in ADMITTED and scope.get("method") == "POST":
            ticket = self.service.admit()
            if ticket is None:  # shed at once: no body read, no validation, a fixed answer, its metrics bound
                await send(self.overloaded_start)
                await send(self.overloaded_body)
                bound = self.shed_metrics.get(path)
                if bound is None:
                    bound = self.shed_metrics[path] = (self.service.requests.labels(path, "503"),
                                                       self.service.latency.labels(path))
                count, latency = bound
                count.inc()
                latency.observe(time.perf_counter() - t0)
                return
        await self._answer(scope, receive, send, path, ticket, t0)

    async def _answer(self, scope, receive, send, path: str, ticket: Optional["_Ticket"], t0: float) -> None:
        endpoint = path if path in self.known else "other"
        status = [500]
        body = _Body(receive, self.max_body, self.timeout_s)

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = CLIENT_GONE if body.gone else message["status"]
            await send(message)

        token = None
        try:
            length, json_body = _body_headers(scope)
            if length > self.max_body:
                await _too_large(self.max_body)(scope, receive, send_status)
                return
            if ticket is not None:
                ticket.body = body
                token = _TICKET.set(ticket)
            direct = self.direct.get(path) if ticket is not None and json_body else None
            if direct is None:
                await self.app(scope, body, send_status)
            else:
                await self._direct(direct, scope, body, send_status)
        finally:
            if token is not None:
                _TICKET.reset(token)
            if ticket is not None:
                ticket.done()
            if body.gone and status[0] == 500:  # nothing was answered: the client had left
                status[0] = CLIENT_GONE
            self._observe(endpoint, status[0], time.perf_counter() - t0)

    def _observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Count and time one answer (the metric children bound once per endpoint and status)."""
        key = (endpoint, status)
        bound = self.bound.get(key)
        if bound is None:
            bound = self.bound[key] = (self.service.requests.labels(endpoint, str(status)),
                                       self.service.latency.labels(endpoint))
        bound[0].inc()
        bound[1].observe(seconds)

    async def _direct(self, route, scope, body: "_Body", send) -> None:
        """``POST /recommend`` or ``/similar-items`` with a JSON body, answered here instead of by
        FastAPI's routing and dependency solving: the body is read (bounded as ever), validated
        once by the endpoint's pydantic model straight from the bytes, the runtime called
        (``Service.call``) and the answer sent as a ``JSONResponse``. A body that does
        not validate is handed, as received, to the FastAPI endpoint, which answers the same 422
        naming the field as it does for every request that comes that way."""
        model, handler, size = route
        from fastapi.responses import JSONResponse
        from pydantic import ValidationError
        from starlette.exceptions import HTTPException

        chunks = []
        try:
            while True:
                message = await body()
                if message["type"] != "http.request":
                    return  # the client left: nothing to answer (counted CLIENT_GONE)
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        except HTTPException as exc:  # 413 or 408 while reading
            await _http_exception(exc, self.max_body)(scope, body, send)
            return
        raw = b"".join(chunks)
        try:
            request = model.model_validate_json(raw)
        except ValidationError:
            await self.app(scope, _Replay(raw, body), send)
            return
        n, history = size(request)
        try:
            result = await self.service.call(lambda rt, gen: handler(rt, gen, request), n, history)
        except ServiceError as exc:
            response = _error(exc.status, exc.code, exc.message, exc.field, headers=exc.headers)
        except Exception as exc:  # noqa: BLE001 - answered 500 as the app's handler does
            response = _internal(scope.get("path", ""), exc)
        else:
            response = JSONResponse(result)
        await response(scope, body, send)


class _Body:
    """A request's ``receive`` as the app sees it: counts the body against ``max_body`` (413),
    bounds the time until it is complete to ``timeout_s`` from the request's arrival (408: a client
    that sends part of a body and stalls would otherwise hold its admission slot for good), and
    notes a client that went away (``gone``); ``disconnected()`` waits for that once the body is in."""

    __slots__ = ("receive", "max_body", "timeout_s", "deadline", "size", "complete", "gone")

    def __init__(self, receive, max_body: int, timeout_s: float):
        self.receive = receive
        self.max_body = max_body
        self.timeout_s = timeout_s
        self.deadline = asyncio.get_running_loop().time() + timeout_s
        self.size = 0
        self.complete = False
        self.gone = False

    async def __call__(self):
        message = await (self.receive() if self.complete else self._before_deadline())
        kind = message["type"]
        if kind == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.max_body:
                from starlette.exceptions import HTTPException

                raise HTTPException(413)  # FastAPI passes it to the app's handler: a JSON 413
            if not message.get("more_body", False):
                self.complete = True
        elif kind == "http.disconnect":
            self.gone = self.complete = True
        return message

    async def _before_deadline(self):
        task = asyncio.current_task()
        expired = []
        timer = asyncio.get_running_loop().call_at(self.deadline, lambda: (expired.append(True), task.cancel()))
        try:
            return await self.receive()
        except asyncio.CancelledError:
            if not expired:
                raise
            if hasattr(task, "uncancel"):
                task.uncancel()
            from starlette.exceptions import HTTPException

            raise HTTPException(408, f"the request body did not arrive within {self.timeout_s:g} s (timeout_s)",
                                headers={"connection": "close"}) from None
        finally:
            timer.cancel()

    async def disconnected(self) -> None:
        """Returns once the client has gone (after the body is in, an ASGI server's ``receive``
        waits for that); never, should the server answer anything else."""
        if (await self.receive())["type"] == "http.disconnect":
            self.gone = True
            return
        await asyncio.get_running_loop().create_future()


def _body_headers(scope) -> tuple[int, bool]:
    """The request's Content-Length (-1 when absent or not a number) and whether its
    Content-Type is ``application/json`` (parameters aside)."""
    length, json_body = -1, False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = -1
        elif name == b"content-type":
            json_body = value.split(b";", 1)[0].strip().lower() == b"application/json"
    return length, json_body


class _Replay:
    """A ``receive`` that gives a body already read once more, then the request's own channel."""

    __slots__ = ("raw", "receive")

    def __init__(self, raw: bytes, receive):
        self.raw, self.receive = raw, receive

    async def __call__(self):
        if self.raw is not None:
            raw, self.raw = self.raw, None
            return {"type": "http.request", "body": raw, "more_body": False}
        return await self.receive()


def _http_exception(exc, max_body: int):
    """The JSON answer to a starlette ``HTTPException`` (413, 408, 404, 405, ...)."""
    if exc.status_code == 413:
        return _too_large(max_body)
    code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
            408: "body_timeout"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, str(exc.detail), "body" if exc.status_code == 408 else None,
                  headers=getattr(exc, "headers", None))


def _internal(path: str, exc: Exception):
    logger.exception("unexpected error answering %s", path)
    return _error(500, "internal_error", f"{type(exc).__name__}: {exc}")


def _too_large(max_body: int):
    return _error(413, "body_too_large", f"request body larger than {max_body} bytes (max_body_bytes)", "body")


def _error(status: int, code: str, message: str, field: Optional[str] = None, errors=None, headers=None):
    from fastapi.responses import JSONResponse

    body = {"error": code, "message": message, "field": field,
            "errors": errors if errors is not None else ([{"field": field, "message": message, "type": code}]
                                                        if field else [])}
    return JSONResponse(_plain_json(body), status_code=status, headers=headers)


_UNION_MEMBERS = frozenset({"int", "str", "constrained-int", "constrained-str"})  # pydantic's loc tags of Id


def _field_errors(errors) -> list[dict]:
    """pydantic's errors as ``{"field", "message", "type"}``, one per field: the members of an id
    union (an id is an int or a string) are merged into one entry."""
    out: dict = {}
    for e in errors:
        loc = tuple(p for p in e.get("loc", ()) if not (isinstance(p, str) and p in _UNION_MEMBERS))
        field = _field_name(loc)
        if field in out:
            if e.get("msg") and e.get("msg") not in out[field]["message"]:
                out[field]["message"] += " or " + e["msg"][0].lower() + e["msg"][1:]
        else:
            out[field] = {"field": field, "message": e.get("msg", ""), "type": e.get("type", "")}
    return list(out.values())


def _field_name(loc) -> Optional[str]:
    """("body", "users", 3) -> "users[3]"; ("body", "history", "42", 0) -> "history.42[0]"."""
    parts = [p for p in loc if p != "body"] if loc and loc[0] == "body" else list(loc)
    if not parts:
        return "body"
    name = str(parts[0])
    if isinstance(parts[0], int):  # a position in malformed JSON
        return "body"
    for p in parts[1:]:
        name += f"[{p}]" if isinstance(p, int) else f".{p}"
    return name


def _plain_json(value):
    """``value`` with numpy scalars/arrays, tuples and non-finite floats made JSON-safe."""
    return json.loads(json.dumps(value, default=_json_default, allow_nan=True),
                      parse_constant=lambda c: None)


def _json_default(obj):
    if isinstance(obj, np.generic):
        value = obj.item()
        return None if isinstance(value, float) and not math.isfinite(value) else value
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _version() -> str:
    from .. import __version__

    return __version__


# ---------------------------------------------------------------------------- recsys-fast serve
def serve(bundle, host: str = "127.0.0.1", port: int = 8000, n_threads: Optional[int] = None,
          limits: Optional[ServiceLimits] = None, providers=None, admin: bool = True,
          log_level: str = "info", access_log: bool = False, http: str = "auto") -> None:
    """Load ``bundle`` and serve it with uvicorn until SIGINT/SIGTERM (graceful: requests in
    flight finish); SIGHUP reloads the bundle. ``port=0`` picks a free port (logged).
    ``n_threads`` bounds each request (onnxruntime intra-op, Numba) and, once for the server's
    life, the process-wide BLAS pools. ``http``: uvicorn's HTTP/1.1 parser, ``"auto"`` (httptools
    when installed, as the ``serve`` extra does, else h11), ``"httptools"`` or ``"h11"``."""
    try:
        import uvicorn
    except ImportError:
        raise MissingExtraError("uvicorn", "serve") from None
    from . import load

    port = validation.integer("port", port, minimum=0, maximum=65535)
    http = validation.choice("http", http, ("auto", "httptools", "h11"))
    try:
        import httptools  # noqa: F401
    except ImportError:
        if http == "httptools":
            raise MissingExtraError("httptools", "serve") from None
        http = "h11"
    if not logger.handlers:  # the service's own lines (reloads, failures) beside uvicorn's
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(log_level.upper())
    if http == "h11":  # benches/overload.py: h11 loses requests under a sustained 2x overload on 2 cores
        logger.warning("serving with the pure-Python h11 parser: shedding an overload costs it about 2.5x the "
                       "CPU of httptools (pip install httptools, part of the serve extra)")
    runtime = load(bundle, n_threads=n_threads, providers=providers)
    app = create_app(runtime, limits=limits, n_threads=n_threads, providers=providers, admin=admin,
                     reload_signal=getattr(signal, "SIGHUP", None))
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            timeout_graceful_shutdown=30, lifespan="on", http=http)
    from .. import threads

    with threads.limit(n_threads):  # the process-wide pools (BLAS, torch), once, for the server's life
        uvicorn.Server(config).run()
