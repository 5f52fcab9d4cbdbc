"""The HTTP service under twice its capacity: every request answered 200 or 503, none lost, recovery.

Starts ``recsys-fast serve`` as a subprocess on 127.0.0.1 for an ItemKNN bundle fitted on the
shipped ml-latest-small (``--bundle`` serves another), then, with the stdlib load generator of
``recsys_fast.serving.loadtest``:

1. capacity: closed-loop clients at each ``--concurrencies`` for ``--step-seconds``; the capacity
   is the highest throughput (200s per second), and the saturating concurrency the lowest that
   reaches 90 % of it;
2. overload: an open-loop client sending ``--factor`` x capacity requests per second for
   ``--overload-seconds`` (each sent when due, on an idle connection or a new one; every request
   bounded by ``--client-timeout``);
3. recovery: once every overload request is settled, ``--recovery-factor`` x capacity for
   ``--recovery-seconds``: every request should be 200 again.

The whole protocol runs once per ``--parsers`` (``recsys-fast serve --http``: httptools, then h11).
Each phase records counts per status, 503s without ``Retry-After``, lost requests (no answer
within the client timeout, or a broken connection), p50/p99 latency and the load average of the
machine before and after it (the machine may be shared: the ratios within one run are what
compares). Writes ``--out`` (default benches/results/overload.json).

    python benches/overload.py [--users-per-request 1] [--overload-seconds 30] [--factor 2] [--parsers httptools h11]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from recsys_fast.serving import loadtest  # noqa: E402


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def build_bundle(data_path: str, k: int, out: Path) -> Path:
    from recsys_fast.datasets import load_movielens
    from recsys_fast.models.knn import ItemKNN

    data, _ = load_movielens(data_path)
    return ItemKNN(k=k).fit(data).save(out / "item_knn")


def request_bodies(bundle: Path, users_per_request: int, k: int, n: int = 512) -> list[bytes]:
    from recsys_fast import serving

    users = serving.load(bundle).user_map_.ids.tolist()
    return [json.dumps({"users": [users[(i * users_per_request + j) % len(users)] for j in range(users_per_request)],
                        "k": k}).encode() for i in range(n)]


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of process ``pid`` (None: this one) so far."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phase(name: str, run, server_pid: int) -> dict:
    """``run()``'s result with the wall time, the CPU seconds of the server and of this client,
    and the load average before and after."""
    before = load_average()
    t0, server0, client0 = time.perf_counter(), cpu_seconds(server_pid), cpu_seconds()
    result = run()
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    result["server_cpu_s"] = round(cpu_seconds(server_pid) - server0, 2)
    result["client_cpu_s"] = round(cpu_seconds() - client0, 2)
    result["load_average_before"], result["load_average_after"] = before, load_average()
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


def measure_capacity(port: int, bodies: list, concurrencies: list[int], seconds: float, timeout: float,
                     server_pid: int) -> dict:
    curve = []
    for c in concurrencies:
        cpu0 = cpu_seconds(server_pid)
        outcomes = asyncio.run(loadtest.closed_loop(port, bodies, c, seconds, timeout=timeout))
        curve.append({"concurrency": c, **loadtest.summarize(outcomes, seconds),
                      "server_cpu_s": round(cpu_seconds(server_pid) - cpu0, 2), "load_average": load_average()})
        print(f"  concurrency {c}: {curve[-1]['ok_per_s']} req/s, p50 {curve[-1]['p50_ms_200']} ms, "
              f"counts {curve[-1]['counts']}, server cpu {curve[-1]['server_cpu_s']} s, load {load_average()}",
              flush=True)
    best = max(r["ok_per_s"] for r in curve)
    saturating = next(r for r in curve if r["ok_per_s"] >= 0.9 * best)
    return {"capacity_per_s": best, "saturating_concurrency": saturating["concurrency"], "curve": curve}


def metric_lines(port: int) -> list[str]:
    status, text = loadtest.get(port, "/metrics")
    return [line for line in text.splitlines() if line.startswith(("recsys_fast_requests_total{endpoint=\"/recommend\"",
                                                                    "recsys_fast_in_flight"))]


def run_one(bundle: Path, bodies: list, serve_args: list, env: dict, args) -> dict:
    """Capacity, overload and recovery against one ``recsys-fast serve`` process."""
    with loadtest.ServerProcess(bundle, serve_args, env=env) as server:
        port, pid = server.port, server.proc.pid
        asyncio.run(loadtest.closed_loop(port, bodies, 4, 3.0, timeout=args.client_timeout))  # warm-up
        capacity = phase("capacity", lambda: measure_capacity(port, bodies, args.concurrencies, args.step_seconds,
                                                              args.client_timeout, pid), pid)

        def open_loop(rate: float, seconds: float) -> dict:
            outcomes, client = asyncio.run(loadtest.open_loop(port, bodies, rate, seconds,
                                                              timeout=args.client_timeout))
            return {"offered_per_s": round(rate, 1), **loadtest.summarize(outcomes), "client": client}

        over = phase("overload", lambda: open_loop(args.factor * capacity["capacity_per_s"],
                                                   args.overload_seconds), pid)
        rec = phase("recovery", lambda: open_loop(args.recovery_factor * capacity["capacity_per_s"],
                                                  args.recovery_seconds), pid)
        rec["health_after"] = loadtest.get(port, "/health")[0]
        metrics = metric_lines(port)
        exit_status = server.stop()
    return {"serve_args": serve_args, "capacity": capacity, "overload": over, "recovery": rec,
            "server_metrics": metrics, "server_exit_status": exit_status,
            "verdict": {"overload_only_200_or_503": over["unexpected"] == 0 and over["lost"] == 0,
                        "every_503_has_retry_after": over["503_without_retry_after"] == 0,
                        "lost": over["lost"] + rec["lost"],
                        "recovered_all_200": rec["counts"] == {"200": rec["requests"]},
                        "overload_goodput_vs_capacity": round(over["ok_per_s"] / capacity["capacity_per_s"], 3)}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "ml-latest-small"))
    parser.add_argument("--bundle", default=None, help="serve this bundle instead of fitting ItemKNN")
    parser.add_argument("--knn-k", type=int, default=50, help="ItemKNN neighbours (default 50)")
    parser.add_argument("--users-per-request", type=int, default=1)
    parser.add_argument("--k", type=int, default=10, help="list length asked (default 10)")
    parser.add_argument("--threads", type=int, default=1, help="recsys-fast serve --threads (default 1)")
    parser.add_argument("--serve-args", default="", help="more recsys-fast serve options, space-separated")
    parser.add_argument("--parsers", nargs="+", default=["httptools", "h11"], choices=("httptools", "h11", "auto"),
                        help="run the whole protocol once per recsys-fast serve --http (default: httptools h11)")
    parser.add_argument("--concurrencies", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--step-seconds", type=float, default=5.0)
    parser.add_argument("--factor", type=float, default=2.0, help="overload: this many times the capacity")
    parser.add_argument("--overload-seconds", type=float, default=30.0)
    parser.add_argument("--recovery-factor", type=float, default=0.25)
    parser.add_argument("--recovery-seconds", type=float, default=10.0)
    parser.add_argument("--client-timeout", type=float, default=15.0,
                        help="seconds a client waits for an answer before the request counts as lost "
                             "(default 15: the service's own --timeout is 10)")
    parser.add_argument("--out", default=str(ROOT / "benches" / "results" / "overload.json"))
    args = parser.parse_args(argv)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(args.bundle) if args.bundle else build_bundle(args.data, args.knn_k, Path(tmp))
        bodies = request_bodies(bundle, args.users_per_request, args.k)
        for http in args.parsers:
            serve_args = ["--threads", str(args.threads), "--http", http, *args.serve_args.split()]
            print(f"=== recsys-fast serve {' '.join(serve_args)}", flush=True)
            runs[http] = run_one(bundle, bodies, serve_args, env, args)
    result = {
        "environment": {"python": platform.python_version(), "machine": platform.machine(),
                        "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
        "setup": {"bundle": "ItemKNN(k=%d) on ml-latest-small" % args.knn_k if not args.bundle else args.bundle,
                  "users_per_request": args.users_per_request, "k": args.k, "client_timeout_s": args.client_timeout,
                  "factor": args.factor, "overload_seconds": args.overload_seconds,
                  "command": "python benches/overload.py " + " ".join(argv if argv is not None else sys.argv[1:])},
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for http, r in runs.items():
        print(f"{http}: {json.dumps(r['verdict'])}", flush=True)
    return 0 if all(r["verdict"]["lost"] == 0 for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
