"""Serving speed: every model kind's own ``recommend`` against its torch-free runtime, and the HTTP service.

Models are fitted on ml-latest-small (9,724 items; EASE on the full catalogue) with their default
architecture and one epoch (speed does not depend on how well they are trained), plus a synthetic
SASRec-small (20,000 items, d=64, 2 blocks, max_len 50). Neural models and EASE are exported with
``recsys_fast.export.to_onnx`` and loaded with ``recsys_fast.serving.load``; Popularity, ItemKNN,
UserKNN and ContentKNN are served as saved (``model.save`` bundles on the Numba kernels).

For each kind and each thread count (``--threads``, default 1 and 2): batch-1 latency
(``recommend([user], k=10)``, ``--requests`` calls over distinct training users, p50/p99, id mapping
and exclusion of seen items included) and batch-256 throughput (users/s, median of ``--repeats``
runs), of the trained model (torch eager for neural models, run under ``threads.limit``) and of the
runtime (onnxruntime with ``n_threads`` intra-op threads, or the kernels under the same limit).
Fitting, export and loading are outside the timed part; ``prepare()`` warms both first. The
contenders are timed in alternating blocks so that load from other processes hits both alike.

``--http``: a bounded loopback load (``--http-requests`` requests at ``--concurrency``, also bounded
by ``--http-seconds``) against ``recsys-fast serve`` for an ItemKNN and a SASRec bundle, and against a
FastAPI app with one endpoint returning a constant, run the same way (the HTTP stack's ceiling).

Writes ``--out`` .json and .png (default benches/results/serving).

    python benches/bench_serving.py [--kinds all] [--threads 1 2] [--requests 2000] [--http]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KINDS = ("popularity", "item_knn", "user_knn", "content_knn", "ease", "als", "bprmf", "neumf", "lightgcn", "multvae",
         "sasrec", "gru4rec", "caser", "sasrec_small")
NEURAL = {"bprmf": "BPRMF", "neumf": "NeuMF", "lightgcn": "LightGCN", "multvae": "MultVAE", "sasrec": "SASRec",
          "gru4rec": "GRU4Rec", "caser": "Caser", "sasrec_small": "SASRec"}
K = 10
HTTP_KINDS = ("item_knn", "sasrec")  # the bundles served over HTTP: a kernel model and an ONNX one


# ---------------------------------------------------------------------------------------- models
def _data(path):
    from recsys_fast.datasets import load_movielens

    return load_movielens(path)


def _fit(kind: str, data, items, small_data):
    """A fitted model of ``kind`` (default architecture, one epoch for neural models)."""
    if kind == "popularity":
        from recsys_fast.models.popularity import Popularity

        return Popularity().fit(data)
    if kind in ("item_knn", "user_knn"):
        from recsys_fast.models.knn import ItemKNN, UserKNN

        return (ItemKNN if kind == "item_knn" else UserKNN)(k=100).fit(data)
    if kind == "content_knn":
        from recsys_fast.data.features import ItemFeatures
        from recsys_fast.models.content import ContentKNN

        features = ItemFeatures.from_pandas(items, multi_label={"genres": "|"})
        return ContentKNN(k=100).fit(data, features=features)
    if kind == "ease":
        from recsys_fast.models.ease import EASE

        return EASE(weight_decay=500.0).fit(data)
    if kind == "als":
        from recsys_fast.models.als import ALS

        return ALS(seed=0).fit(data)
    from recsys_fast.models import neural

    params = dict(epochs=1, validation_fraction=0.0, seed=0, device="cpu", n_threads=2)
    if kind in ("sasrec", "gru4rec", "caser", "sasrec_small"):
        params.update(loss="sampled_ce", n_negatives=256)
    if kind == "sasrec_small":
        params.update(embedding_size=64, n_blocks=2, max_len=50)
        return neural.SASRec(**params).fit(small_data())
    return getattr(neural, NEURAL[kind])(**params).fit(data)


def _cached_fit(kind: str, data, items, small_data, cache: Path, refit: bool):
    """``_fit``, or the model saved by an earlier run in ``cache`` (``--refit`` fits again)."""
    from recsys_fast.models.registry import load

    saved = cache / f"{kind}_model"
    if saved.exists() and not refit:
        return load(saved)
    model = _fit(kind, data, items, small_data)
    model.save(saved)
    return model


def _sasrec_small_data():
    from recsys_fast.datasets import synthetic

    return synthetic(20_000, 20_000, 400_000, seed=0)


def _runtime_path(kind: str, model, cache: Path) -> Path:
    """Export (neural, EASE) or save (kNN, Popularity, ALS) the model; returns the bundle path."""
    path = cache / f"{kind}_served"
    if kind in NEURAL or kind == "ease":
        from recsys_fast.export import to_onnx

        to_onnx(model, path)
    else:
        model.save(path)
    return path


# ---------------------------------------------------------------------------------------- timing
def _latencies(fn, users, n: int) -> np.ndarray:
    out = np.empty(n)
    for c in range(n):
        u = users[c % len(users)]
        t0 = time.perf_counter()
        fn([u])
        out[c] = time.perf_counter() - t0
    return out


def _throughput(fn, users, batch: int, repeats: int) -> float:
    """Users per second of ``fn(users[i:i+batch])`` over consecutive batches, median of repeats."""
    n_batches = max(1, min(8, len(users) // batch))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in range(n_batches):
            fn(users[b * batch:(b + 1) * batch])
        rates.append(n_batches * batch / (time.perf_counter() - t0))
    return statistics.median(rates)


def _compare(contenders: dict, users, requests: int, batch: int, repeats: int, blocks: int = 4) -> dict:
    """Batch-1 p50/p99 (ms) and batch throughput of each contender, timed in alternating blocks."""
    lat = {name: [] for name in contenders}
    per_block = max(1, requests // blocks)
    for b in range(blocks):
        for name, fn in contenders.items():
            start = (b * per_block) % len(users)
            lat[name].append(_latencies(fn, np.roll(users, -start), per_block))
    tput = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            tput[name].append(_throughput(fn, users, batch, 1))
    out = {}
    for name in contenders:
        all_lat = np.concatenate(lat[name]) * 1e3
        out[name] = {"p50_ms": float(np.percentile(all_lat, 50)), "p99_ms": float(np.percentile(all_lat, 99)),
                     "mean_ms": float(all_lat.mean()), "requests": int(len(all_lat)),
                     f"batch{batch}_users_per_s": float(statistics.median(tput[name]))}
    return out


def bench_kind(kind: str, model, path: Path, n_threads: int, args) -> dict:
    from recsys_fast import serving, threads

    runtime = serving.load(path, n_threads=n_threads).prepare()
    if "n_threads" in model.param_names():  # the model's own pool setting, as a user would pass it
        model.set_params(n_threads=n_threads)
    model.prepare()
    users = model.user_map_.ids.copy()
    np.random.default_rng(0).shuffle(users)

    def trained(u):
        with threads.limit(n_threads):
            return model.recommend(u, k=K)

    def served(u):
        return runtime.recommend(u, k=K)

    # same answers before timing (ties aside): a quick guard that the two compute the same thing
    a, b = trained(users[:8]), served(users[:8])
    agree = float(np.mean([len(set(x) & set(y)) / K for x, y in zip(a.items, b.items)]))
    res = _compare({"model": trained, "runtime": served}, users, args.requests, args.batch, args.repeats)
    res["top10_agreement"] = agree
    res["runtime_speedup_p50"] = res["model"]["p50_ms"] / res["runtime"]["p50_ms"]
    return res


# ---------------------------------------------------------------------------------------- HTTP
CONSTANT_BODY = {"users": [1], "items": [list(range(K))], "scores": [[1.0] * K]}


def constant_app():
    """The HTTP stack's ceiling: FastAPI answering ``POST /recommend`` with a constant body of a
    real answer's shape, and ``GET /health``."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/recommend")
    async def recommend():
        return CONSTANT_BODY

    @app.get("/health")
    async def health():
        return {"status": "ready"}

    return app


def _serve_constant(port: int) -> None:
    import uvicorn

    uvicorn.run(constant_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(port: int, proc, timeout: float = 120.0) -> None:
    import urllib.request

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} not ready after {timeout} s")


async def _load(port: int, bodies: list, n_requests: int, seconds: float, concurrency: int) -> dict:
    """``n_requests`` POST /recommend over ``concurrency`` keep-alive connections (HTTP/1.1, one
    request in flight per connection), stopping early after ``seconds``. Latency is measured per
    request from send to the end of the body; an error is a non-200 status or a broken connection."""
    import asyncio

    deadline = time.perf_counter() + seconds
    sent = [0]
    lat, errors = [], {}

    def error(key):
        errors[key] = errors.get(key, 0) + 1

    async def connection():
        reader = writer = None
        while sent[0] < n_requests and time.perf_counter() < deadline:
            i = sent[0]
            sent[0] += 1
            body = bodies[i % len(bodies)]
            head = (f"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                t0 = time.perf_counter()
                writer.write(head + body)
                status = int((await reader.readline()).split()[1])
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                lat.append(time.perf_counter() - t0)
                if status != 200:
                    error(f"HTTP {status}")
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                error(type(exc).__name__)
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    ms = np.asarray(lat) * 1e3
    return {"requests": int(sent[0]), "completed": int(len(lat)), "errors": errors,
            "n_errors": int(sum(errors.values())), "seconds": wall, "requests_per_s": len(lat) / wall,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None}


def _run_server(cmd: list, port: int, bodies: list, args) -> dict:
    import asyncio
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_ready(port, proc)
        asyncio.run(_load(port, bodies[:64], min(500, args.http_requests), 10, args.concurrency))  # warm-up
        return asyncio.run(_load(port, bodies, args.http_requests, args.http_seconds, args.concurrency))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def bench_http(args, paths: dict) -> dict:
    """The service (``recsys-fast serve``) for each bundle in ``paths`` and the constant endpoint,
    each under the same bounded load; ratios are against the constant endpoint of this run."""
    from recsys_fast import serving

    out = {}
    port = _free_port()
    constant = [sys.executable, str(Path(__file__).resolve()), "--serve-constant", str(port)]
    const_bodies = [json.dumps({"users": [1], "k": K}).encode()]
    out["constant"] = _run_server(constant, port, const_bodies, args)
    print(f"http constant: {out['constant']}", flush=True)
    for kind, path in paths.items():
        runtime = serving.load(path)
        users = runtime.user_map_.ids.tolist()
        bodies = [json.dumps({"users": [u], "k": K}).encode() for u in users]
        port = _free_port()
        cmd = [sys.executable, "-m", "recsys_fast.cli", "serve", str(path), "--host", "127.0.0.1", "--port", str(port),
               "--threads", str(args.http_threads)]
        r = _run_server(cmd, port, bodies, args)
        r["vs_constant"] = r["requests_per_s"] / out["constant"]["requests_per_s"]
        out[kind] = r
        print(f"http {kind}: {r}", flush=True)
    return out


# ---------------------------------------------------------------------------------------- report
def _table(results: dict, batch: int) -> str:
    lines = ["| model | threads | model p50 ms | model p99 ms | runtime p50 ms | runtime p99 ms | "
             f"model b{batch} users/s | runtime b{batch} users/s | p50 ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, per_threads in results.items():
        for nt, r in per_threads.items():
            if "error" in r:
                lines.append(f"| {kind} | {nt} | error: {r['error']} |")
                continue
            m, s = r["model"], r["runtime"]
            key = f"batch{batch}_users_per_s"
            lines.append(f"| {kind} | {nt} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} | {s['p50_ms']:.3f} | "
                         f"{s['p99_ms']:.3f} | {m[key]:,.0f} | {s[key]:,.0f} | {r['runtime_speedup_p50']:.1f}x |")
    return "\n".join(lines)


def _http_table(http: dict) -> str:
    lines = ["| endpoint | requests | errors | requests/s | vs constant | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    for name, r in http.items():
        ratio = f"{r['vs_constant']:.0%}" if "vs_constant" in r else "(ceiling)"
        lines.append(f"| {name} | {r['completed']:,} | {r['n_errors']} | {r['requests_per_s']:,.0f} | {ratio} | "
                     f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    return "\n".join(lines)


def _plot(results: dict, png: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    kinds = [k for k in results if "1" in results[k] and "error" not in results[k]["1"]]
    x = np.arange(len(kinds))
    fig, ax = plt.subplots(figsize=(max(8, len(kinds)), 4.5))
    for off, who in ((-0.2, "model"), (0.2, "runtime")):
        ax.bar(x + off, [results[k]["1"][who]["p50_ms"] for k in kinds], 0.4, label=f"{who} p50 (1 thread)")
    ax.set_yscale("log")
    ax.set_xticks(x, kinds, rotation=30, ha="right")
    ax.set_ylabel("batch-1 recommend, ms (log)")
    ax.axhline(1.0, color="grey", ls="--", lw=0.8)
    ax.axhline(0.3, color="grey", ls=":", lw=0.8)
    ax.legend()
    ax.set_title("recommend([user], k=10): trained model vs runtime")
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def environment() -> dict:
    from recsys_fast import threads

    env = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
    env.update({k: str(v) for k, v in threads.report().items()})
    return env


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "ml-latest-small"))
    parser.add_argument("--kinds", nargs="+", default=["all"], help=f"any of {', '.join(KINDS)} (default all)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--requests", type=int, default=2000, help="batch-1 requests per contender")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", default="/tmp/recsys_fast_bench_serving", help="fitted models and bundles")
    parser.add_argument("--refit", action="store_true", help="fit again even when the cache has the model")
    parser.add_argument("--out", default=str(ROOT / "benches" / "results" / "serving"))
    parser.add_argument("--http", action="store_true", help="also the HTTP service under loopback load")
    parser.add_argument("--http-requests", type=int, default=20_000)
    parser.add_argument("--http-seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--http-threads", type=int, default=1, help="--threads of recsys-fast serve")
    parser.add_argument("--http-only", action="store_true", help="only the HTTP part (bundles from --cache)")
    parser.add_argument("--serve-constant", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_constant is not None:
        _serve_constant(args.serve_constant)
        return
    kinds = list(KINDS) if args.kinds == ["all"] else args.kinds
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; known: {', '.join(KINDS)}")

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    data, items = _data(args.data)
    small = {}

    def small_data():
        if "d" not in small:
            small["d"] = _sasrec_small_data()
        return small["d"]

    env = environment()
    print(json.dumps(env, indent=1))
    results = {}
    for kind in ([] if args.http_only else kinds):
        t0 = time.perf_counter()
        model = _cached_fit(kind, data, items, small_data, cache, args.refit)
        path = _runtime_path(kind, model, cache)
        print(f"{kind}: fitted and exported in {time.perf_counter() - t0:.1f} s", flush=True)
        results[kind] = {}
        for nt in args.threads:
            try:
                results[kind][str(nt)] = bench_kind(kind, model, path, nt, args)
            except Exception as exc:  # report and go on: one failing kind should not hide the others
                results[kind][str(nt)] = {"error": f"{type(exc).__name__}: {exc}"}
            r = results[kind][str(nt)]
            if "error" in r:
                print(f"  {nt} thread(s): {r['error']}")
            else:
                print(f"  {nt} thread(s): model p50 {r['model']['p50_ms']:.3f} ms p99 {r['model']['p99_ms']:.3f} | "
                      f"runtime p50 {r['runtime']['p50_ms']:.3f} ms p99 {r['runtime']['p99_ms']:.3f} | "
                      f"b{args.batch}: {r['model'][f'batch{args.batch}_users_per_s']:,.0f} vs "
                      f"{r['runtime'][f'batch{args.batch}_users_per_s']:,.0f} users/s", flush=True)
        del model
    http = None
    if args.http or args.http_only:
        paths = {}
        for kind in HTTP_KINDS:
            paths[kind] = cache / f"{kind}_served"
            if args.refit or not (paths[kind] / "manifest.json").exists():
                _runtime_path(kind, _cached_fit(kind, data, items, small_data, cache, args.refit), cache)
        http = bench_http(args, paths)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": "python benches/bench_serving.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": env, "k": K, "results": results, "http": http,
              "load_average_end": os.getloadavg()}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    table = _table(results, args.batch)
    print(table)
    if http:
        print(_http_table(http))
    _plot(results, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
