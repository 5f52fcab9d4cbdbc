"""The ``recsys-fast`` command line: demo, doctor, train, evaluate, recommend, batch, bench, export, serve.

Every sub-command reads interactions from a MovieLens folder (ml-100k or ml-latest layout), a CSV
file or a Parquet file; see ``recsys-fast <command> --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import RecsysError

DEMO_MODELS = ("popularity", "item_knn", "user_knn")
DEMO_METRICS = ("precision", "recall", "f1", "ndcg", "map", "mrr", "hit_rate", "coverage")


# ---------------------------------------------------------------------------- shared options
def _add_data_options(p: argparse.ArgumentParser, positional: bool = True, purpose: str = "") -> None:
    g = p.add_argument_group("input data")
    g.add_argument(*(("data",) if positional else ("--data",)), **({} if positional else {"default": None}),
                   help=purpose + "a MovieLens folder (ml-100k: u.data; ml-latest: ratings.csv), a dataset name "
                                  "found by recsys_fast.datasets.find_dataset (e.g. ml-latest-small), "
                                  "a .csv/.tsv file or a .parquet file")
    g.add_argument("--user-col", default="user", help="user id column of a CSV/Parquet file (default: user)")
    g.add_argument("--item-col", default="item", help="item id column of a CSV/Parquet file (default: item)")
    g.add_argument("--weight-col", default=None,
                   help="weight or rating column of a CSV/Parquet file (default: none, every event weighs 1)")
    g.add_argument("--timestamp-col", default=None,
                   help="timestamp column of a CSV/Parquet file (needed by leave-last-out and temporal splits)")
    g.add_argument("--sep", default=None, help="CSV field separator (default: ',' or tab for .tsv)")
    g.add_argument("--min-rating", type=float, default=None,
                   help="keep only events rated >= this and treat them as implicit feedback (weight 1)")


def _add_model_options(p: argparse.ArgumentParser, multiple: bool) -> None:
    if multiple:
        p.add_argument("--models", default=",".join(DEMO_MODELS),
                       help=f"comma-separated model kinds to compare (default: {','.join(DEMO_MODELS)}); "
                            "`recsys-fast models` lists them")
    else:
        p.add_argument("--model", required=True,
                       help="model kind, e.g. popularity, item_knn, user_knn, ease, sasrec (`recsys-fast models` lists all)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a model parameter, repeatable; values are parsed as JSON when they can be "
                        "(e.g. --param k=50 --param similarity=cosine --param shrink=10). With --models, "
                        "prefix with the kind to target one model: --param item_knn.k=50")


def _add_split_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("split")
    g.add_argument("--split", choices=("holdout", "leave-last-out", "temporal"), default="holdout",
                   help="holdout: per-user random test fraction; leave-last-out: each user's latest events; "
                        "temporal: events at or after --cutoff are test (default: holdout)")
    g.add_argument("--test-fraction", type=float, default=0.2, help="holdout test fraction (default: 0.2)")
    g.add_argument("--n-last", type=int, default=1, help="leave-last-out: events per user held out (default: 1)")
    g.add_argument("--cutoff", default=None, help="temporal split cutoff (a timestamp or an ISO date)")
    g.add_argument("--seed", type=int, default=42, help="random seed of the split (default: 42)")


def _load_data(args):
    from .datasets import find_dataset, load_movielens
    from .data.interactions import Interactions

    path = Path(args.data)
    if not path.exists() and find_dataset(args.data) is not None:
        path = find_dataset(args.data)
    if path.is_dir():
        data, items = load_movielens(path, min_rating=args.min_rating)
        return data, items
    suffix = path.suffix.lower()
    cols = dict(user=args.user_col, item=args.item_col, weight=args.weight_col, timestamp=args.timestamp_col)
    if suffix in (".parquet", ".pq"):
        return Interactions.from_parquet(path, **cols, min_rating=args.min_rating), None
    sep = args.sep or ("\t" if suffix == ".tsv" else ",")
    return Interactions.from_csv(path, **cols, sep=sep, min_rating=args.min_rating), None


def _split(data, args):
    from . import split

    if args.split == "holdout":
        return split.holdout(data, test_fraction=args.test_fraction, seed=args.seed)
    if args.split == "leave-last-out":
        return split.leave_last_out(data, n=args.n_last)
    if args.cutoff is None:
        raise SystemExit("error: --split temporal needs --cutoff")
    cutoff = float(args.cutoff) if args.cutoff.replace(".", "", 1).isdigit() else args.cutoff
    return split.temporal(data, cutoff)


def parse_params(pairs: list[str]) -> dict[str, dict]:
    """``k=50`` -> {"": {"k": 50}}; ``item_knn.k=50`` -> {"item_knn": {"k": 50}}."""
    out: dict[str, dict] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"error: --param expects KEY=VALUE, got {pair!r}")
        key, raw = pair.split("=", 1)
        target, _, name = key.rpartition(".")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(target, {})[name] = value
    return out


def _make_model(kind: str, params: dict[str, dict], strict: bool = False):
    """Build ``kind`` with its targeted params; untargeted ones apply where the model has them
    (``strict``: every untargeted one must exist, as with a single ``--model``)."""
    from .models.registry import model_class

    cls = model_class(kind)
    allowed = set(cls.param_names())
    targeted = params.get(kind, {})
    shared = params.get("", {})
    unknown = (set(targeted) | (set(shared) if strict else set())) - allowed
    if unknown:
        raise SystemExit(f"error: {kind} has no parameter(s) {sorted(unknown)}; its parameters: {sorted(allowed)}")
    return cls(**{**{k: v for k, v in shared.items() if k in allowed}, **targeted})


def _progress(iterable, desc: str, total=None):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, file=sys.stderr, disable=None)


# ---------------------------------------------------------------------------- commands
def cmd_doctor(args) -> int:
    import numba
    import numpy as np

    from . import threads
    from .kernels.topk import dense_topk

    report = threads.report()
    # launch one tiny parallel kernel so Numba reports the layer it really uses
    dense_topk(np.zeros((2, 2), np.float32), 1, np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.bool_))
    report["numba threading layer in use"] = numba.threading_layer()
    report["parallel calls from many threads safe"] = threads.parallel_calls_are_safe()
    for key, value in report.items():
        print(f"{key:38s} {value}")
    return 0


def cmd_models(args) -> int:
    from .models.registry import MODELS, model_class

    for kind in sorted(MODELS):
        try:
            cls = model_class(kind)
            params = ", ".join(cls.param_names())
        except ImportError as exc:
            params = f"(unavailable: {exc})"
        print(f"{kind:14s} {params}")
    return 0


def _fit_and_evaluate(models: list[str], params, train, test, ks):
    from .evaluation import evaluate

    results, fitted, timings = {}, {}, {}
    for kind in _progress(models, "models"):
        model = _make_model(kind, params)
        t0 = time.perf_counter()
        model.fit(train)
        t1 = time.perf_counter()
        results[kind] = evaluate(model, train, test, k=ks, progress=True)
        timings[kind] = (t1 - t0, time.perf_counter() - t1)
        fitted[kind] = model
    return results, fitted, timings


def _print_comparison(results, timings, columns=None) -> None:
    from .evaluation import compare

    print(compare(results, columns=columns))
    print()
    print("fit / evaluate seconds: " + ", ".join(f"{k} {f:.2f}/{e:.2f}" for k, (f, e) in timings.items()))


def cmd_evaluate(args) -> int:
    data, _ = _load_data(args)
    train, test = _split(data, args)
    ks = [int(x) for x in args.k.split(",")]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    results, _, timings = _fit_and_evaluate(models, parse_params(args.param), train, test, ks)
    first = next(iter(results.values()))
    print(f"data: {data}; split: {args.split} (seed {args.seed})")
    for line in first.protocol_lines():
        print(line)
    print()
    _print_comparison(results, timings)
    if args.json:
        payload = {name: r.to_dict() for name, r in results.items()}
        _atomic_write_text(Path(args.json), json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0


def cmd_train(args) -> int:
    data, _ = _load_data(args)
    model = _make_model(args.model, parse_params(args.param), strict=True)
    t0 = time.perf_counter()
    model.fit(data)
    print(f"fitted {model!r} on {data} in {time.perf_counter() - t0:.2f} s")
    path = model.save(args.out)
    print(f"saved bundle to {path}")
    return 0


def cmd_recommend(args) -> int:
    from .models.registry import load

    model = load(args.bundle)
    if args.users:
        users = [_parse_id(u) for u in args.users.split(",")]
    else:
        users = list(model.user_map_.ids[: args.first])
    recs = model.recommend(users, k=args.k, exclude_seen=not args.include_seen, on_unknown=args.on_unknown)
    df = recs.to_pandas().rename(columns={"query": "user", "id": "item"})  # the CLI's file columns
    if args.out:
        out = Path(args.out)
        tmp = out.with_name(out.name + ".tmp")
        if out.suffix.lower() in (".parquet", ".pq"):
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
        tmp.replace(out)
        print(f"wrote {len(df)} rows for {len(recs)} users to {out}")
    else:
        print(df.to_string(index=False))
    return 0


def cmd_batch(args) -> int:
    from . import batch

    users = None
    if args.users_file:
        lines = Path(args.users_file).read_text(encoding="utf-8").splitlines()
        users = [_parse_id(line.strip()) for line in lines if line.strip()]
    client = None
    if args.scheduler:
        try:
            from distributed import Client
        except ImportError:
            from .errors import MissingExtraError

            raise MissingExtraError("distributed", "dist") from None
        client = Client(args.scheduler)
    try:
        result = batch.score(args.bundle, users=users, k=args.k, out=args.out, exclude_seen=not args.include_seen,
                             chunk_users=args.chunk_users, resume=not args.no_resume, client=client,
                             progress=not args.quiet)
    finally:
        if client is not None:
            client.close()
    print(result.summary())
    return 0


def bench_table(results: dict) -> str:
    """The summary table of a ``benches/scaling.py`` JSON: per size and job, our throughput and
    time per unit of work, and each peer's time as a multiple of ours (> 1: we are faster)."""
    lines = [f"{'size':<4} {'job':<15} {'unit':<12} {'ours/s':>12} {'s per unit':>11}  peers (their time / ours)"]
    for size in results.get("sizes", []):
        if "jobs" not in size:
            lines.append(f"{size['size']:<4} skipped: {size.get('skipped', '')}")
            continue
        for job, r in size["jobs"].items():
            peers = ", ".join(f"{m} {x:.2f}x" for m, x in r.get("ours_vs", {}).items())
            extra = ""
            if "peak_rss_growth_bytes" in r:
                extra = f"; peak +{r['peak_rss_growth_bytes'] / 2**20:.0f} MiB"
            lines.append(f"{size['size']:<4} {job:<15} {r['unit']:<12} {r['throughput']['ours']:>12.4g} "
                         f"{r['seconds_per_unit']['ours']:>11.3g}  {peers}{extra}")
    lines.append(f"threads {results.get('threads')}, median of {results.get('repeats')} runs, "
                 f"load average {results.get('load_before')} -> {results.get('load_after')}")
    return "\n".join(lines)


def cmd_bench(args) -> int:
    path = Path(args.json)
    if not path.is_file():
        print(f"error: {path} not found; run `python benches/scaling.py` first", file=sys.stderr)
        return 2
    print(bench_table(json.loads(path.read_text(encoding="utf-8"))))
    return 0


def cmd_demo(args) -> int:
    from . import split
    from .datasets import find_dataset, load_movielens

    t_start = time.perf_counter()
    path = Path(args.data) if args.data else find_dataset("ml-latest-small")
    if path is None:
        raise SystemExit("error: the shipped data/ml-latest-small was not found; pass --data PATH")
    print(f"recsys-fast demo: {path}")
    data, items = load_movielens(path)
    train, test = split.holdout(data, test_fraction=0.2, seed=42)
    print(f"data: {data}\nsplit: per-user random holdout, test fraction 0.2, seed 42 -> "
          f"train {train.nnz}, test {test.nnz} interactions\n")
    from .models.registry import MODELS

    models = [m for m in DEMO_MODELS if m in MODELS]
    results, fitted, timings = _fit_and_evaluate(models, {}, train, test, [10, 20])
    for line in next(iter(results.values())).protocol_lines():
        print(line)
    print()
    _print_comparison(results, timings, columns=[f"{m}@10" for m in DEMO_METRICS])
    best = max(results, key=lambda name: results[name].means["ndcg@10"])
    model = fitted[best]
    titles = None
    if items is not None:
        titles = dict(zip(items["item"].tolist(), items["title"].tolist()))
    users = data.user_map.ids[: args.users]
    recs = model.recommend(users, k=10)
    print(f"\ntop-10 for {len(users)} users from the best model by NDCG@10 ({best}):")
    for r, user in enumerate(recs.users):
        print(f"  user {user}:")
        for rank, (item, score) in enumerate(zip(recs.items[r], recs.scores[r]), 1):
            if score == float("-inf"):
                break
            name = titles.get(item, "?") if titles else ""
            print(f"    {rank:2d}. {name} [{item}] score {score:.3f}")
    print(f"\ndemo finished in {time.perf_counter() - t_start:.1f} s")
    return 0


def cmd_export(args) -> int:
    from .export import to_onnx
    from .models.registry import load

    model = load(args.bundle)
    calibration = None
    if args.quantize:
        if args.data is None:
            raise SystemExit("error: --quantize needs --data: interactions (ideally held out from training) whose "
                             "validation split measures NDCG@10 of the fp32 and int8 graphs")
        calibration, _ = _load_data(args)
    t0 = time.perf_counter()
    path = to_onnx(model, args.out, quantize=args.quantize, calibration=calibration, max_ndcg_drop=args.max_ndcg_drop)
    print(f"exported {type(model).__name__} to {path} in {time.perf_counter() - t0:.1f} s")
    if args.quantize:
        from . import bundle

        q = bundle.read_manifest(path)["meta"]["quantization"]
        print(f"int8 ({q['mode']}): NDCG@10 {q['ndcg@10_int8']:.5f} vs fp32 {q['ndcg@10_fp32']:.5f} "
              f"(drop {q['ndcg_drop']:+.5f}, max {q['max_ndcg_drop']:g}); graph {q['bytes_int8']:,} vs "
              f"{q['bytes_fp32']:,} bytes; batch-1 p50 {q['latency_batch1_p50_ms_int8']:.3f} vs "
              f"{q['latency_batch1_p50_ms_fp32']:.3f} ms")
    print(f"serve it with: recsys-fast serve {path}")
    return 0


def cmd_serve(args) -> int:
    from .serving.http import ServiceLimits, serve

    limits = ServiceLimits(max_users=args.max_users, max_k=args.max_k, max_body_bytes=args.max_body_bytes,
                           max_concurrency=args.max_concurrency, workers=args.workers, timeout_s=args.timeout)
    providers = [p.strip() for p in args.providers.split(",")] if args.providers else None
    serve(args.bundle, host=args.host, port=args.port, n_threads=args.threads, limits=limits, providers=providers,
          admin=not args.no_admin, log_level=args.log_level, access_log=args.access_log)
    return 0


# ---------------------------------------------------------------------------- plumbing
def _parse_id(text: str):
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys-fast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="fit and evaluate the library's models on the shipped ml-latest-small")
    p.add_argument("--data", default=None, help="a MovieLens folder to use instead of the shipped ml-latest-small")
    p.add_argument("--users", type=int, default=3, help="how many users' top-10 lists to print (default: 3)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("doctor", help="print versions, Numba threading layer, thread counts, ORT providers")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("models", help="list the model kinds and their parameters")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="fit one model on all the data and save it as a bundle")
    _add_data_options(p)
    _add_model_options(p, multiple=False)
    p.add_argument("--out", required=True, help="bundle directory to write (replaced atomically)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="split the data, fit models, print full-ranking metrics")
    _add_data_options(p)
    _add_split_options(p)
    _add_model_options(p, multiple=True)
    p.add_argument("--k", default="10,20", help="comma-separated cutoffs (default: 10,20)")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("recommend", help="top-k lists from a saved bundle")
    p.add_argument("bundle", help="bundle directory written by `recsys-fast train` or model.save()")
    p.add_argument("--users", default=None, help="comma-separated user ids (default: the first --first users)")
    p.add_argument("--first", type=int, default=10, help="without --users: this many users (default: 10)")
    p.add_argument("--k", type=int, default=10, help="list length (default: 10)")
    p.add_argument("--include-seen", action="store_true", help="do not exclude the users' training items")
    p.add_argument("--on-unknown", choices=("raise", "pad"), default="raise",
                   help="unknown users: fail (raise) or return an empty padded list (pad)")
    p.add_argument("--out", default=None, help="write a .csv or .parquet file instead of printing")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("batch", help="every user's top-k from a bundle to Parquet/CSV, resumable (Dask optional)")
    p.add_argument("bundle", help="bundle directory that recsys_fast.serving.load serves (kNN, EASE, Popularity, "
                                  "or an exported ONNX bundle)")
    p.add_argument("--out", default="recs.parquet",
                   help="output .parquet/.pq or .csv file; with --scheduler a Parquet dataset directory "
                        "(default: recs.parquet)")
    p.add_argument("--users-file", default=None, help="file of user ids, one a line (default: every training user)")
    p.add_argument("--k", type=int, default=10, help="list length (default: 10)")
    p.add_argument("--chunk-users", type=int, default=None,
                   help="users per chunk: the unit of memory, progress and resume (default: ~1M rows per chunk)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a dask.distributed scheduler, e.g. tcp://host:8786 (extra `dist`); the bundle path "
                        "must be readable by every worker")
    p.add_argument("--include-seen", action="store_true", help="do not exclude the users' training items")
    p.add_argument("--no-resume", action="store_true", help="ignore finished chunks of an interrupted run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("bench", help="print the summary table of a scaling benchmark run (benches/scaling.py)")
    p.add_argument("--json", default="benches/results/scaling.json",
                   help="the JSON written by benches/scaling.py (default: benches/results/scaling.json)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="export a saved neural model bundle to an ONNX serving bundle (extra `export`)",
                       description="Export a neural model saved with model.save() / `recsys-fast train` as an ONNX "
                                   "serving bundle (top-k in the graph) that `recsys-fast serve` and "
                                   "recsys_fast.serving.load serve without torch; optionally int8, behind an "
                                   "NDCG@10 gate measured on --data.")
    p.add_argument("bundle", help="bundle directory of a neural model (bprmf, neumf, lightgcn, multvae, ease, sasrec, "
                                  "gru4rec, caser)")
    p.add_argument("--out", required=True, help="serving bundle directory to write (replaced atomically)")
    p.add_argument("--quantize", choices=("dynamic", "static"), default=None,
                   help="write an int8 graph (needs --data); refused when NDCG@10 drops more than --max-ndcg-drop")
    p.add_argument("--max-ndcg-drop", type=float, default=0.005,
                   help="largest NDCG@10 drop (fp32 minus int8) accepted (default: 0.005)")
    _add_data_options(p, positional=False, purpose="with --quantize: the interactions to measure NDCG@10 on (and "
                                                    "calibrate a static graph with): ")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="serve a bundle over HTTP (FastAPI + uvicorn; extra `serve`)",
                       description="Serve a bundle over HTTP: POST /recommend, POST /similar-items, GET /health, "
                                   "GET /metadata, GET /metrics, POST /admin/reload, /docs. SIGHUP reloads the "
                                   "bundle; SIGTERM/SIGINT stop gracefully.")
    p.add_argument("bundle", help="a model.save() bundle of a kNN/popularity/EASE model, or an exported ONNX bundle "
                                  "(`recsys-fast export`)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one, logged)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads per request: onnxruntime intra-op / Numba (default: the libraries' own)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker threads calling the runtime (default: min(32, cpu count + 4))")
    p.add_argument("--max-concurrency", type=int, default=64,
                   help="requests running at once; beyond it 503 with Retry-After (default: 64)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds before a request is answered 504 (default: 10)")
    p.add_argument("--max-users", type=int, default=1000, help="users (or items) per request (default: 1000)")
    p.add_argument("--max-k", type=int, default=1000, help="largest k (default: 1000; also capped by the catalogue)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default: 1 MiB)")
    p.add_argument("--providers", default=None,
                   help="onnxruntime execution providers, comma-separated (default: CPUExecutionProvider)")
    p.add_argument("--no-admin", action="store_true", help="leave out POST /admin/reload (SIGHUP still reloads)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn log level (default: info)")
    p.add_argument("--access-log", action="store_true", help="log every request (off by default: it costs throughput)")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RecsysError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
