"""The ``recsys-fast`` command line: demo, doctor, train, update, evaluate, recommend, batch, bench, export, serve.

Every sub-command reads interactions from a MovieLens folder (ml-100k or ml-latest layout), a CSV
file or a Parquet file; see ``recsys-fast <command> --help``.

Errors: every mistake in an option or an input file is one line on stderr naming the option or
the file, exit status 2 (``--debug`` shows the traceback). Ctrl-C exits 130 and leaves earlier
outputs as they were (every output is written to a temporary file and renamed); a closed pipe
(``recsys-fast recommend ... | head``) ends quietly. Output paths are checked before any work.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from . import bundle
from .errors import ParameterError, RecsysError, UnknownIdError

EXIT_ERROR = 2          # a bad option, input file or bundle
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)

#: Output formats of ``recommend --out``, by file extension.
OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".json": "json",
                  ".jsonl": "jsonl"}


class CliError(RecsysError, ValueError):
    """A bad command-line option or path: printed as ``error: OPTION: message``, exit 2."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option = option

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
    g.add_argument("--min-rating", type=_finite_float, default=None,
                   help="keep only events rated >= this and treat them as implicit feedback (weight 1)")
    g.add_argument("--implicit", action="store_true",
                   help="the weight column holds counts or strengths (plays, clicks), not ratings: no RMSE/MAE")


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
                        "(e.g. --param k=50 --param similarity=cosine --param shrink=10); None/null, "
                        "True/true and False/false are the Python values"
                        + ("; prefix with the kind to target one model: --param item_knn.k=50" if multiple else ""))


def _add_split_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("split")
    g.add_argument("--split", choices=("holdout", "leave-last-out", "temporal"), default="holdout",
                   help="holdout: per-user random test fraction; leave-last-out: each user's latest events; "
                        "temporal: events at or after --cutoff are test (default: holdout)")
    g.add_argument("--test-fraction", type=_finite_float, default=0.2,
                   help="holdout test fraction, strictly between 0 and 1 (default: 0.2)")
    g.add_argument("--n-last", type=_positive_int, default=1, help="leave-last-out: events per user held out (default: 1)")
    g.add_argument("--cutoff", default=None, help="temporal split cutoff (a timestamp or an ISO date)")
    g.add_argument("--seed", type=_non_negative_int, default=42, help="random seed of the split (default: 42)")


def _load_data(args):
    from .datasets import find_dataset, load_movielens
    from .data.interactions import Interactions

    path = Path(args.data)
    if not path.exists():
        if find_dataset(args.data) is not None:
            path = find_dataset(args.data)
        elif not path.suffix and "/" not in args.data and os.sep not in args.data:
            return load_movielens(args.data, min_rating=args.min_rating)  # says where it looked
        else:
            raise CliError("data", f"{args.data}: no such file or directory")
    if path.is_dir():
        data, items = load_movielens(path, min_rating=args.min_rating)
        return data, items
    suffix = path.suffix.lower()
    cols = dict(user=args.user_col, item=args.item_col, weight=args.weight_col, timestamp=args.timestamp_col)
    ratings = not getattr(args, "implicit", False)
    if suffix in (".parquet", ".pq"):
        return Interactions.from_parquet(path, **cols, min_rating=args.min_rating, ratings=ratings), None
    sep = args.sep or ("\t" if suffix == ".tsv" else ",")
    return Interactions.from_csv(path, **cols, sep=sep, min_rating=args.min_rating, ratings=ratings), None


SPLIT_OPTIONS = {"test_fraction": "--test-fraction", "cutoff": "--cutoff", "n": "--n-last", "seed": "--seed"}


def _add_feature_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("item features (content_knn, hybrid)")
    g.add_argument("--item-features", default=None, metavar="CSV",
                   help="one row per item (e.g. ml-latest-small's movies.csv) for content models")
    g.add_argument("--features-item-col", default=None,
                   help="item id column of --item-features and --tags (default: item, else movieId)")
    g.add_argument("--text", action="append", default=[], metavar="COLUMN",
                   help="a text column (TF-IDF, or --text-weighting bm25), repeatable or comma-separated")
    g.add_argument("--text-weighting", choices=("tfidf", "bm25"), default="tfidf")
    g.add_argument("--categorical", action="append", default=[], metavar="COLUMN",
                   help="a categorical column (one-hot), repeatable or comma-separated")
    g.add_argument("--multi-label", action="append", default=[], metavar="COLUMN[=SEP]",
                   help="a multi-label column with its separator (default '|'), e.g. genres or genres=|")
    g.add_argument("--tags", default=None, metavar="CSV",
                   help="tag events (e.g. ml-latest-small's tags.csv): each item's distinct tags become a "
                        "multi-label feature 'tags'")
    g.add_argument("--tag-col", default="tag", help="tag column of --tags (default: tag)")
    g.add_argument("--components", default="item_knn,content_knn",
                   help="--model hybrid: comma-separated component kinds (default: item_knn,content_knn); "
                        "--param item_knn.k=50 targets one")


def _id_column(frame, wanted, source: str) -> str:
    from .errors import DataError

    for col in ([wanted] if wanted else ["item", "movieId"]):
        if col in frame.columns:
            return col
    raise DataError(f"no item id column {wanted or 'item or movieId'}; found {list(frame.columns)} "
                    "(pass --features-item-col)", source=source)


def _split_list(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def load_item_features(args):
    """The ``ItemFeatures`` the feature options describe, or None without --item-features/--tags."""
    import pandas as pd

    from .data.features import TAG_SEPARATOR, ItemFeatures, item_tags
    from .errors import DataError

    if args.item_features is None and args.tags is None:
        return None
    frame = None
    if args.item_features is not None:
        path = Path(args.item_features)
        if not path.is_file():
            raise DataError("file not found", source=str(path))
        frame = pd.read_csv(path)
        frame = frame.rename(columns={_id_column(frame, args.features_item_col, str(path)): "item"})
    multi = {}
    for spec in args.multi_label:
        col, _, sep = spec.partition("=")
        multi[col.strip()] = sep or "|"
    if args.tags is not None:
        path = Path(args.tags)
        if not path.is_file():
            raise DataError("file not found", source=str(path))
        tags = pd.read_csv(path)
        per_item = item_tags(tags, _id_column(tags, args.features_item_col, str(path)), args.tag_col, str(path))
        frame = per_item if frame is None else frame.merge(per_item, on="item", how="left")
        frame["tags"] = frame["tags"].fillna("")
        multi["tags"] = TAG_SEPARATOR
    return ItemFeatures.from_pandas(frame, item="item", text=_split_list(args.text),
                                    categorical=_split_list(args.categorical), multi_label=multi,
                                    text_weighting=args.text_weighting,
                                    source=str(args.item_features or args.tags))


def _split(data, args):
    try:
        return _split_by(data, args)
    except ParameterError as exc:
        if exc.name in SPLIT_OPTIONS:
            raise CliError(SPLIT_OPTIONS[exc.name], str(exc)) from None
        raise


def _split_by(data, args):
    from . import split

    if args.split == "holdout":
        return split.holdout(data, test_fraction=args.test_fraction, seed=args.seed)
    if args.split == "leave-last-out":
        return split.leave_last_out(data, n=args.n_last)
    if args.cutoff is None:
        raise CliError("--cutoff", "--split temporal needs --cutoff (a timestamp, an ISO date or a fraction)")
    text = args.cutoff.strip()
    cutoff = (int(text) if text.isdigit() else float(text)) if text.replace(".", "", 1).isdigit() else text
    return split.temporal(data, cutoff)


def parse_params(pairs: list[str]) -> dict[str, dict]:
    """``k=50`` -> {"": {"k": 50}}; ``item_knn.k=50`` -> {"item_knn": {"k": 50}}."""
    out: dict[str, dict] = {}
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        target, _, name = key.strip().rpartition(".")
        if not eq or not name:
            raise CliError("--param", f"expected KEY=VALUE, got {pair!r}")
        out.setdefault(target, {})[name] = parse_value(raw)
    return out


_PYTHON_LITERALS = {"None": None, "True": True, "False": False}


def parse_value(raw: str):
    """A ``--param`` value: JSON when it parses (``50``, ``0.5``, ``null``, ``[1, 2]``), the
    Python spellings ``None``/``True``/``False``, else the text itself."""
    if raw.strip() in _PYTHON_LITERALS:
        return _PYTHON_LITERALS[raw.strip()]
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _make_model(kind: str, params: dict[str, dict], strict: bool = False):
    """Build ``kind`` with its targeted params; untargeted ones apply where the model has them
    (``strict``: every untargeted one must exist, as with a single ``--model``)."""
    from .models.registry import model_class

    try:
        cls = model_class(kind)
    except ParameterError as exc:
        raise CliError("--model" if strict else "--models", str(exc)) from None
    allowed = set(cls.param_names())
    targeted = params.get(kind, {})
    shared = params.get("", {})
    unknown = (set(targeted) | (set(shared) if strict else set())) - allowed
    if unknown:
        raise CliError("--param", f"{kind} has no parameter(s) {sorted(unknown)}; its parameters: {sorted(allowed)}")
    try:
        return cls(**{**{k: v for k, v in shared.items() if k in allowed}, **targeted})
    except (ParameterError, TypeError) as exc:
        raise CliError("--param", f"{kind}: {exc}") from None


def _quiet_params(kind: str, params: dict[str, dict], quiet: bool) -> dict[str, dict]:
    """With --quiet, models that report progress (``verbose``) are told not to, unless --param says."""
    if not quiet:
        return params
    from .models.registry import model_class

    try:
        names = model_class(kind).param_names()
    except ParameterError:  # an unknown kind: _make_model names the option
        return params
    if "verbose" not in names or "verbose" in {**params.get("", {}), **params.get(kind, {})}:
        return params
    return {**params, kind: {**params.get(kind, {}), "verbose": False}}


# ---------------------------------------------------------------------------- commands
def cmd_doctor(args) -> int:
    import numba
    import numpy as np

    from . import threads
    from .kernels.topk import dense_topk

    report = threads.report()
    # launch one small parallel kernel (more rows than the serial path takes) so Numba reports
    # the layer it really uses
    dense_topk(np.zeros((64, 2), np.float32), 1, np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.bool_))
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


def _fit_and_evaluate(models: list[str], params, train, test, ks, quiet: bool = False):
    from .evaluation import evaluate

    results, fitted, timings = {}, {}, {}
    for kind in models:
        model = _make_model(kind, _quiet_params(kind, params, quiet))
        t0 = time.perf_counter()
        model.fit(train)
        t1 = time.perf_counter()
        results[kind] = evaluate(model, train, test, k=ks, progress=False if quiet else None)
        timings[kind] = (t1 - t0, time.perf_counter() - t1)
        fitted[kind] = model
    return results, fitted, timings


def _print_comparison(results, timings, columns=None) -> None:
    from .evaluation import compare

    print(compare(results, columns=columns))
    print()
    print("fit / evaluate seconds: " + ", ".join(f"{k} {f:.2f}/{e:.2f}" for k, (f, e) in timings.items()))


def cmd_evaluate(args) -> int:
    if args.json:
        check_output(args.json, "--json")
    params = parse_params(args.param)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise CliError("--models", "no model kinds given (e.g. --models popularity,item_knn)")
    for kind in models:  # every name and parameter checked before any data is read
        _make_model(kind, params)
    data, _ = _load_data(args)
    train, test = _split(data, args)
    results, _, timings = _fit_and_evaluate(models, params, train, test, args.k, quiet=args.quiet)
    first = next(iter(results.values()))
    print(f"data: {data}; split: {args.split} (seed {args.seed})")
    for line in first.protocol_lines():
        print(line)
    print()
    _print_comparison(results, timings)
    if args.json:
        payload = {name: r.to_dict() for name, r in results.items()}
        _atomic_write_text(Path(args.json), json.dumps(payload, indent=2))
        _info(args, f"wrote {args.json}")
    return 0


def _make_trained_model(args):
    """The --model (a Hybrid of --components for ``hybrid``) and the features it needs."""
    params = _quiet_params(args.model, parse_params(args.param), args.quiet)
    features = load_item_features(args)
    if args.model == "hybrid":
        from .models.hybrid import Hybrid

        from .models.registry import model_class

        kinds = [k.strip() for k in args.components.split(",") if k.strip()]
        # untargeted parameters go to every model that has them (as with evaluate --models)
        comps = [_make_model(kind, params) for kind in kinds]
        shared = params.get("", {})
        taken = set(Hybrid.param_names()).union(*(model_class(k).param_names() for k in kinds))
        if set(shared) - taken:
            raise CliError("--param", f"no model of hybrid({', '.join(kinds)}) has parameter(s) "
                                      f"{sorted(set(shared) - taken)}")
        own = {k: v for k, v in shared.items() if k in Hybrid.param_names() and k != "components"}
        model = Hybrid(comps, **{**own, **params.get("hybrid", {})})
    else:
        model = _make_model(args.model, params, strict=True)
    from .models.hybrid import _takes_features

    needs = _takes_features(model) or (args.model == "hybrid" and any(_takes_features(c) for c in model.components))
    if needs and features is None:
        raise CliError("--model", f"{args.model} needs item features: pass --item-features CSV "
                                  "(with --text/--categorical/--multi-label) and/or --tags CSV")
    return model, (features if needs else None)


def cmd_train(args) -> int:
    check_output(args.out, "--out", directory=True)
    model, features = _make_trained_model(args)  # every option checked before the data is read
    data, _ = _load_data(args)
    t0 = time.perf_counter()
    if features is not None:
        model.fit(data, features=features)
    else:
        model.fit(data)
    _info(args, f"fitted {model!r} on {data} in {time.perf_counter() - t0:.2f} s")
    path = model.save(args.out)
    _info(args, f"saved bundle to {path}")
    return 0


def cmd_update(args) -> int:
    from .models.registry import load

    model = load(args.bundle)
    args.data = args.events
    new, _ = _load_data(args)
    before = (model.n_users, model.n_items)
    t0 = time.perf_counter()
    model.update(new, duplicates=args.duplicates)
    took = time.perf_counter() - t0
    print(f"updated {args.bundle} with {new} in {took:.2f} s: users {before[0]} -> {model.n_users}, "
          f"items {before[1]} -> {model.n_items}")
    info = getattr(model, "update_info_", None)
    if info:
        print("rows changed / merged / recomputed: "
              f"{info['changed']} / {info['merged']} / {info['recomputed']} of {info['rows']}")
    path = model.save(args.out)
    print(f"saved bundle to {path}")
    return 0


def cmd_recommend(args) -> int:
    from .models.registry import load

    fmt = check_output(args.out, "--out", formats=OUTPUT_FORMATS) if args.out else None
    users = _parse_users(args.users) if args.users is not None else None
    model = load(args.bundle)
    if users is None:
        users = list(model.user_map_.ids[: args.first])
    try:
        recs = model.recommend(users, k=args.k, exclude_seen=not args.include_seen, on_unknown=args.on_unknown,
                               progress=False if args.quiet else None)
    except UnknownIdError as exc:  # the library's hint speaks of Python arguments
        raise CliError("--users", f"{exc.base} (--on-unknown pad gives them empty lists)") from None
    df = recs.to_pandas().rename(columns={"query": "user", "id": "item"})  # the CLI's file columns
    if args.out:
        _atomic_write(Path(args.out), lambda tmp: _write_frame(df, tmp, fmt))
        _info(args, f"wrote {len(df)} rows for {len(recs)} users to {args.out}")
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
    lines = [f"{'size':<4} {'job':<15} {'unit':<19} {'ours/s':>12} {'s per unit':>11}  peers (their time / ours)"]
    for size in results.get("sizes", []):
        if "jobs" not in size:
            lines.append(f"{size['size']:<4} skipped: {size.get('skipped', '')}")
            continue
        for job, r in size["jobs"].items():
            peers = ", ".join(f"{m} {x:.2f}x" for m, x in r.get("ours_vs", {}).items())
            extra = ""
            if "peak_rss_growth_bytes" in r:
                extra = f"; peak +{r['peak_rss_growth_bytes'] / 2**20:.0f} MiB"
            lines.append(f"{size['size']:<4} {job:<15} {r['unit']:<19} {r['throughput']['ours']:>12.4g} "
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
        raise CliError("--data", "the shipped data/ml-latest-small was not found; pass --data PATH")
    print(f"recsys-fast demo: {path}")
    data, items = load_movielens(path)
    train, test = split.holdout(data, test_fraction=0.2, seed=42)
    print(f"data: {data}\nsplit: per-user random holdout, test fraction 0.2, seed 42 -> "
          f"train {train.nnz}, test {test.nnz} interactions\n")
    from .models.registry import MODELS

    models = [m for m in DEMO_MODELS if m in MODELS]
    results, fitted, timings = _fit_and_evaluate(models, {}, train, test, [10, 20], quiet=args.quiet)
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
            raise CliError("--quantize", "needs --data: interactions (ideally held out from training) whose "
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
          admin=not args.no_admin, log_level=args.log_level, access_log=args.access_log, http=args.http)
    return 0


# ---------------------------------------------------------------------------- plumbing
def _parse_id(text: str):
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def _parse_users(text: str) -> list:
    parts = text.split(",")
    empty = [n for n, part in enumerate(parts, 1) if not part.strip()]
    if empty:
        raise CliError("--users", f"id number {empty[0]} of {text!r} is empty; give comma-separated ids like 1,2,3")
    return [_parse_id(u) for u in parts]


def check_output(path, option: str, formats: dict | None = None, directory: bool = False) -> str | None:
    """Refuse an output path before any work: its folder must exist and be writable, a file must
    not be a folder (a bundle ``directory`` may be an existing bundle), and with ``formats`` the
    extension picks the format (returned) or is refused, listing the known ones."""
    path = Path(path)
    fmt = None
    if formats is not None:
        fmt = formats.get(path.suffix.lower())
        if fmt is None:
            raise CliError(option, f"{path}: unknown output format {path.suffix or '(no extension)'!r}; "
                                   f"use one of {', '.join(formats)}")
    parent = path.parent if str(path.parent) else Path(".")
    if directory:  # model.save creates missing folders: the nearest existing one must be writable
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if path.exists() and not (path / "manifest.json").is_file():
            raise CliError(option, f"{path} exists and is not a recsys_fast bundle; refusing to replace it")
    if not parent.is_dir():
        raise CliError(option, f"{path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CliError(option, f"{path}: folder {parent} is not writable")
    if not directory and path.is_dir():
        raise CliError(option, f"{path} is a folder; give a file name")
    return fmt


def _atomic_write(path: Path, write) -> None:
    """``write(tmp)`` into a temporary sibling, then rename over ``path``: an interrupted or failed
    write leaves the old file as it was."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~bundle.umask())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _write_frame(df, tmp: Path, fmt: str) -> None:
    if fmt == "parquet":
        df.to_parquet(tmp, index=False)
    elif fmt in ("csv", "tsv"):
        df.to_csv(tmp, index=False, sep="," if fmt == "csv" else "\t")
    elif fmt == "json":
        df.to_json(tmp, orient="records", indent=2)
    else:
        df.to_json(tmp, orient="records", lines=True)


def _info(args, line: str) -> None:
    """An informational line on stdout, left out with ``--quiet``."""
    if not getattr(args, "quiet", False):
        print(line)


# argparse value types: a bad value is a one-line error naming the option, exit 2
def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


def _positive_ints(text: str) -> list[int]:
    try:
        return [_positive_int(x.strip()) for x in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1 (e.g. 10,20), got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``recsys-fast train: error: argument --k: ... (see --help)``."""

    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="recsys-fast", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", help="fit and evaluate the library's models on the shipped ml-latest-small")
    p.add_argument("--data", default=None, help="a MovieLens folder to use instead of the shipped ml-latest-small")
    p.add_argument("--users", type=_positive_int, default=3, help="how many users' top-10 lists to print (default: 3)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("doctor", help="print versions, Numba threading layer, thread counts, ORT providers")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("models", help="list the model kinds and their parameters")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="fit one model on all the data and save it as a bundle")
    _add_data_options(p)
    _add_model_options(p, multiple=False)
    _add_feature_options(p)
    p.add_argument("--out", required=True, help="bundle directory to write (replaced atomically)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("update", help="fold new events into a saved model (model.update) and save it again")
    p.add_argument("bundle", help="bundle directory written by `recsys-fast train` or model.save()")
    p.add_argument("--events", required=True, help="the new events: a .csv/.tsv or .parquet file")
    p.add_argument("--user-col", default="user", help="user id column (default: user)")
    p.add_argument("--item-col", default="item", help="item id column (default: item)")
    p.add_argument("--weight-col", default=None, help="weight or rating column (default: every event weighs 1)")
    p.add_argument("--timestamp-col", default=None, help="timestamp column (orders events for sequential models)")
    p.add_argument("--sep", default=None, help="CSV field separator (default: ',' or tab for .tsv)")
    p.add_argument("--min-rating", type=float, default=None,
                   help="keep only events rated >= this and treat them as implicit feedback (weight 1)")
    p.add_argument("--duplicates", choices=("last", "sum", "first", "max"), default="last",
                   help="a (user, item) pair already in the model: the new event replaces it (last), adds its "
                        "weight (sum), or the first / the larger weight is kept")
    p.add_argument("--out", required=True, help="bundle directory to write (may be the input bundle)")
    p.set_defaults(func=cmd_update)

    p = sub.add_parser("evaluate", help="split the data, fit models, print full-ranking metrics")
    _add_data_options(p)
    _add_split_options(p)
    _add_model_options(p, multiple=True)
    p.add_argument("--k", type=_positive_ints, default=[10, 20], help="comma-separated cutoffs (default: 10,20)")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file (checked before any work)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("recommend", help="top-k lists from a saved bundle")
    p.add_argument("bundle", help="bundle directory written by `recsys-fast train` or model.save()")
    p.add_argument("--users", default=None, help="comma-separated user ids (default: the first --first users)")
    p.add_argument("--first", type=_positive_int, default=10, help="without --users: this many users (default: 10)")
    p.add_argument("--k", type=_positive_int, default=10,
                   help="list length (default: 10; above the catalogue it is clamped to the number of items)")
    p.add_argument("--include-seen", action="store_true", help="do not exclude the users' training items")
    p.add_argument("--on-unknown", choices=("raise", "pad"), default="raise",
                   help="unknown users: fail (raise) or return an empty padded list (pad)")
    p.add_argument("--out", default=None,
                   help=f"write a file instead of printing; the extension picks the format ({', '.join(OUTPUT_FORMATS)})")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("batch", help="every user's top-k from a bundle to Parquet/CSV, resumable (Dask optional)")
    p.add_argument("bundle", help="bundle directory that recsys_fast.serving.load serves (kNN, EASE, Popularity, ALS, "
                                  "or an exported ONNX bundle)")
    p.add_argument("--out", default="recs.parquet",
                   help="output .parquet/.pq or .csv file; with --scheduler a Parquet dataset directory "
                        "(default: recs.parquet)")
    p.add_argument("--users-file", default=None, help="file of user ids, one a line (default: every training user)")
    p.add_argument("--k", type=_positive_int, default=10, help="list length (default: 10)")
    p.add_argument("--chunk-users", type=_positive_int, default=None,
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
    p.add_argument("--timeout", type=float, default=10.0, help="seconds a request may take: a body not received by then is answered 408, an answer not ready 504 (default: 10)")
    p.add_argument("--max-users", type=int, default=1000, help="users (or items) per request (default: 1000)")
    p.add_argument("--max-k", type=int, default=1000, help="largest k (default: 1000; also capped by the catalogue)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default: 1 MiB)")
    p.add_argument("--providers", default=None,
                   help="onnxruntime execution providers, comma-separated (default: CPUExecutionProvider)")
    p.add_argument("--no-admin", action="store_true", help="leave out POST /admin/reload (SIGHUP still reloads)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn log level (default: info)")
    p.add_argument("--access-log", action="store_true", help="log every request (off by default: it costs throughput)")
    p.add_argument("--http", default="auto", choices=("auto", "httptools", "h11"),
                   help="HTTP/1.1 parser: httptools (C, in the serve extra: less CPU a request, which is what "
                        "shedding an overload costs) or h11 (pure Python); auto: httptools when installed")
    p.set_defaults(func=cmd_serve)

    for p in sub.choices.values():  # every sub-command, including those added above by other modules
        _add_common_options(p)
    return parser


def _add_common_options(p: argparse.ArgumentParser) -> None:
    """--quiet and --debug on every sub-command (kept where a sub-command defines its own)."""
    g = p.add_argument_group("output and errors")
    if "--quiet" not in p._option_string_actions:
        g.add_argument("--quiet", action="store_true", help="no progress bars and no informational lines")
    if "--debug" not in p._option_string_actions:
        g.add_argument("--debug", action="store_true", help="on an error, show the Python traceback")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run(args.func, args)


def run(func, args) -> int:
    """Run a sub-command under the one error policy of the CLI (see the module docstring)."""
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    debug = getattr(args, "debug", False)
    try:
        return func(args)
    except KeyboardInterrupt:
        print("interrupted; earlier outputs are unchanged", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        _silence_stdout()
        return 0
    except (RecsysError, OSError) as exc:
        if debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return " ".join(str(exc).split())


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
