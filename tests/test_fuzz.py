"""Fuzzing of every input surface with hypothesis: whatever comes in, the answer is a correct
result or one of the library's own errors (``RecsysError``), never another exception or a crash.

Bounded for CI: 25 derandomized examples per test. Longer runs (``tests/fuzzing.py``):
``RECSYS_FAST_FUZZ_EXAMPLES=5000`` examples per test, or ``RECSYS_FAST_FUZZ_MINUTES=10`` minutes per
test, e.g. ``RECSYS_FAST_FUZZ_MINUTES=10 python -m pytest -q tests/test_fuzz.py -k bundles`` (see the
README's "Reliability" section for the commands per surface and the counts tried).
"""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume
from hypothesis import strategies as st

from recsys_fast import bundle
from recsys_fast.data.interactions import Interactions
from recsys_fast.errors import BundleError, DataError, RecsysError
from tests.fuzzing import fuzz


def assert_consistent(data: Interactions) -> None:
    """An Interactions that a loader returned is well formed."""
    m = data.matrix
    assert m.shape == (len(data.user_map), len(data.item_map))
    assert m.nnz == len(m.indices) and np.isfinite(m.data).all() and (m.data >= 0).all()
    for extra in (data.timestamps, data.ratings):
        assert extra is None or len(extra) == m.nnz


# ------------------------------------------------------------------ loaders
cell = st.one_of(
    st.integers(-5, 10**20).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "nan", "NaN", "None", "null", "a", "u1", " 7 ", "1e3", "2.5", '"', '"x,y"', "2018-01-01",
                     "0x1f", "-0", "+3", "\u00e9", "1,2"]),
    st.text(max_size=6),
)


@st.composite
def delimited(draw, sep):
    header = draw(st.sampled_from([["user", "item"], ["user", "item", "weight"], ["user", "item", "weight", "ts"],
                                   ["user"], ["item", "user", "x"], ["user", "item", "user"]]))
    n = draw(st.integers(0, 8))
    rows = [[draw(cell) for _ in range(draw(st.integers(len(header) - 1, len(header) + 1)))] for _ in range(n)]
    text = sep.join(header) + "\n" + "".join(sep.join(r) + "\n" for r in rows)
    return text, header


@fuzz(case=st.one_of(delimited(","), delimited("\t")), data=st.data())
def test_csv_and_tsv_contents(tmp_path, case, data):
    text, header = case
    sep = "\t" if "\t" in text.split("\n", 1)[0] or (len(header) == 1 and data.draw(st.booleans())) else ","
    path = tmp_path / ("f.tsv" if sep == "\t" else "f.csv")
    path.write_text(text, encoding="utf-8")
    weight = "weight" if "weight" in header else None
    ts = "ts" if "ts" in header else None
    try:
        out = Interactions.from_csv(path, weight=weight, timestamp=ts, sep=sep,
                                    ratings=data.draw(st.booleans()))
    except DataError:
        return
    assert_consistent(out)


@fuzz(raw=st.binary(max_size=300), prefix=st.sampled_from([b"", b"user,item\n", b"user,item,weight\n1,2,"]))
def test_csv_bytes(tmp_path, raw, prefix):
    path = tmp_path / "b.csv"
    path.write_bytes(prefix + raw)
    try:
        assert_consistent(Interactions.from_csv(path, weight="weight" if b"weight" in prefix else None))
    except DataError:
        pass


column = st.one_of(
    st.lists(st.integers(-2**63, 2**63 - 1), min_size=3, max_size=3),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=3, max_size=3),
    st.lists(st.text(max_size=4), min_size=3, max_size=3),
    st.lists(st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=2)), min_size=3, max_size=3),
    st.lists(st.booleans(), min_size=3, max_size=3),
)


@fuzz(user=column, item=column, weight=st.one_of(st.none(), column), ts=st.one_of(st.none(), column))
def test_parquet_and_dataframe_contents(tmp_path, user, item, weight, ts):
    frame = {"user": user, "item": item}
    if weight is not None:
        frame["weight"] = weight
    if ts is not None:
        frame["ts"] = ts
    df = pd.DataFrame(frame)
    path = tmp_path / "f.parquet"
    try:
        df.to_parquet(path)
    except Exception:  # noqa: BLE001 - pyarrow cannot store this mix (e.g. ints and text): not our input
        return
    for load in (lambda: Interactions.from_parquet(path, weight="weight" if weight is not None else None,
                                                   timestamp="ts" if ts is not None else None),
                 lambda: Interactions.from_pandas(df, weight="weight" if weight is not None else None,
                                                  timestamp="ts" if ts is not None else None)):
        try:
            assert_consistent(load())
        except DataError:
            pass


@pytest.fixture(scope="module")
def parquet_bytes():
    buf = io.BytesIO()
    pd.DataFrame({"user": [1, 2, 3], "item": [4, 5, 6]}).to_parquet(buf)
    return buf.getvalue()


@fuzz(cut=st.integers(0, 10**6), flip=st.integers(0, 10**7), raw=st.binary(max_size=64))
def test_parquet_bytes(tmp_path, parquet_bytes, cut, flip, raw):
    good = bytearray(parquet_bytes)
    good[flip % len(good)] ^= 1 << (flip % 8)
    for body in (bytes(good), parquet_bytes[: cut % len(parquet_bytes)], b"PAR1" + raw + b"PAR1", raw):
        path = tmp_path / "f.parquet"
        path.write_bytes(body)
        try:
            assert_consistent(Interactions.from_parquet(path))
        except DataError:
            pass


# ------------------------------------------------------------------ bundle reader
@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from recsys_fast import EASE, Hybrid, ItemKNN, Popularity, UserKNN
    from recsys_fast.datasets import synthetic

    data = synthetic(40, 25, 300, seed=3)
    root = tmp_path_factory.mktemp("fuzz-bundles")
    models = {"popularity": Popularity(), "item_knn": ItemKNN(k=5), "ease": EASE(),
              "hybrid": Hybrid([ItemKNN(k=5), UserKNN(k=5)], candidates=10)}
    return {name: m.fit(data).save(root / name) for name, m in models.items()}


@st.composite
def damage(draw):
    kind = draw(st.sampled_from(["flip", "truncate", "delete", "rewrite", "junk"]))
    return kind, draw(st.integers(0, 2**40)), draw(st.integers(0, 2**40))


def _rewrite(manifest: dict, pick: int) -> None:
    """One edit a person or a tool might make to a manifest."""
    edits = [
        lambda m: m["params"].update(k=pick % 50),
        lambda m: m["params"].update({"weighting": "sum"}),
        lambda m: m.update(kind="item_knn" if m["kind"] != "item_knn" else "popularity"),
        lambda m: m["meta"].update(n_users=pick % 7),
        lambda m: m.update(files={}),
        lambda m: m.update(params=[1, 2]),
        lambda m: m["files"].update({"../escape.npy": {"sha256": "0" * 64, "size": 1}}),
        lambda m: m.pop(sorted(m)[pick % len(m)]),
        lambda m: m.update(format_version=1),
    ]
    edits[pick % len(edits)](manifest)


@fuzz(which=st.sampled_from(["popularity", "item_knn", "ease", "hybrid"]), hit=damage(), resign=st.booleans())
def test_damaged_bundles_are_bundle_errors(tmp_path, bundles, which, hit, resign):
    from recsys_fast.models.registry import load

    path = tmp_path / "b"
    if path.exists():
        shutil.rmtree(path)
    shutil.copytree(bundles[which], path)
    kind, a, b = hit
    files = sorted(p for p in path.rglob("*") if p.is_file())
    target = files[a % len(files)]
    raw = bytearray(target.read_bytes())
    if kind == "flip":
        raw[b % len(raw)] ^= 1 << (b % 8)
        target.write_bytes(bytes(raw))
    elif kind == "truncate":
        target.write_bytes(bytes(raw[: b % len(raw)]))
    elif kind == "delete":
        target.unlink()
    elif kind == "junk":
        target.write_bytes(os.urandom(1 + b % 64))
    else:
        manifests = [p for p in files if p.name == "manifest.json"]
        target = manifests[a % len(manifests)]
        manifest = json.loads(target.read_text())
        before = json.dumps(manifest, sort_keys=True)
        _rewrite(manifest, b)
        assume(json.dumps(manifest, sort_keys=True) != before)  # an edit that changed nothing is no damage
        if resign:  # a tool that knows the digest: the checks behind it must hold too
            try:
                manifest[bundle.DIGEST] = bundle.manifest_digest(manifest)
            except (TypeError, ValueError):
                pass
        target.write_text(json.dumps(manifest))
        if resign and target == path / "manifest.json":
            try:  # a valid re-signed edit may load; then it must be a working model
                model = load(path)
            except BundleError:
                return
            model.recommend(model.user_map_.ids[:2], k=3)
            return
    with pytest.raises(BundleError):
        load(path)


# ------------------------------------------------------------------ recommend arguments
@pytest.fixture(scope="module")
def fitted():
    from recsys_fast import EASE, ItemKNN, Popularity, UserKNN

    data = Interactions.from_arrays(np.repeat(np.arange(30), 5), (np.arange(150) * 7) % 20)
    return [m.fit(data) for m in (Popularity(), ItemKNN(k=5), UserKNN(k=5), EASE())]


scalar_id = st.one_of(st.integers(-10, 40), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                      st.text(max_size=3), st.none(), st.booleans(), st.binary(max_size=2))
ids = st.one_of(scalar_id, st.lists(scalar_id, max_size=4), st.lists(st.lists(st.integers(0, 5), max_size=2), max_size=2),
                st.dictionaries(st.integers(0, 3), st.integers(0, 3), max_size=2),
                st.builds(lambda n: np.arange(n), st.integers(0, 5)),
                st.builds(lambda n: np.full(n, np.nan), st.integers(0, 3)))
k_value = st.one_of(st.integers(-5, 50), st.integers(2**31 - 2, 2**65), st.floats(allow_nan=True),
                    st.none(), st.text(max_size=2), st.booleans(), st.just(np.int64(3)))


@fuzz(which=st.integers(0, 3), users=ids, k=k_value, items=st.one_of(st.none(), ids),
       history=st.one_of(st.none(), st.dictionaries(scalar_id, ids, max_size=2), ids),
       exclude_seen=st.one_of(st.booleans(), scalar_id), on_unknown=st.sampled_from(["raise", "pad", "mask", 3]),
       on_unknown_items=st.sampled_from(["raise", "ignore", None]))
def test_recommend_arguments(fitted, which, users, k, items, history, exclude_seen, on_unknown, on_unknown_items):
    model = fitted[which]
    try:
        recs = model.recommend(users, k=k, items=items, history=history, exclude_seen=exclude_seen,
                               on_unknown=on_unknown, on_unknown_items=on_unknown_items)
    except RecsysError:
        return
    n, width = recs.items.shape
    assert width == min(k, model.n_items) and recs.scores.shape == (n, width)
    valid = recs.scores > -np.inf
    assert np.isin(recs.items[valid], model.item_map_.ids).all()
    assert (np.diff(np.where(valid, recs.scores, np.finfo(np.float32).min), axis=1) <= 0).all()  # padding last


# ------------------------------------------------------------------ kernels' public wrappers
int_array = st.one_of(
    st.lists(st.integers(-3, 12), max_size=8).map(lambda v: np.array(v, dtype=np.int64)),
    st.lists(st.integers(-2**40, 2**40), max_size=4).map(lambda v: np.array(v, dtype=np.int64)),
    st.lists(st.floats(allow_nan=True), max_size=4).map(np.array),
    st.just(np.zeros((2, 2), dtype=np.int64)), st.just(np.array(["a"])),
)
float_array = st.one_of(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=8)
                        .map(lambda v: np.array(v, dtype=np.float32)), int_array)
size = st.one_of(st.integers(-2, 12), st.just(2**40), st.floats(allow_nan=True), st.none())


@fuzz(data=st.data(), which=st.sampled_from(["topk_similarity", "tfidf", "bm25", "l2", "knn_topk", "similar_rows",
                                              "neighbour_average", "dense_topk", "ranked_topk", "ranking_metrics"]))
def test_kernel_wrappers_with_malformed_arrays(data, which):
    from recsys_fast.evaluation.metrics import ranking_metrics
    from recsys_fast.kernels.knn import knn_topk, neighbour_average, similar_rows
    from recsys_fast.kernels.similarity import topk_similarity
    from recsys_fast.kernels.topk import dense_topk, ranked_topk
    from recsys_fast.kernels.weighting import bm25_weight, l2_normalize_rows, tfidf_weight

    d = data.draw
    ip, ix, dv = d(int_array), d(int_array), d(float_array)
    calls = {
        "topk_similarity": lambda: topk_similarity(ip, ix, dv, d(size), d(size)),
        "tfidf": lambda: tfidf_weight(ip, ix, dv, d(size), d(size)),
        "bm25": lambda: bm25_weight(ip, ix, dv, d(size), d(size)),
        "l2": lambda: l2_normalize_rows(ip, ix, dv, d(size), d(size)),
        "knn_topk": lambda: knn_topk(ip, ix, dv, d(int_array), d(int_array), d(float_array), d(size), d(size)),
        "similar_rows": lambda: similar_rows(ip, ix, dv, d(int_array), d(size)),
        "neighbour_average": lambda: neighbour_average(d(int_array), d(int_array), ip, ix, dv, d(int_array),
                                                       d(int_array), d(float_array), d(float_array), d(float_array)),
        "dense_topk": lambda: dense_topk(d(st.one_of(float_array, float_array.map(lambda a: a.reshape(1, -1)))),
                                         d(size), ip, ix, d(st.one_of(int_array, st.just(np.ones(3, bool))))),
        "ranked_topk": lambda: ranked_topk(ix, dv, d(size), d(size), ip, d(int_array),
                                           d(st.one_of(int_array, st.just(np.ones(3, bool))))),
        "ranking_metrics": lambda: ranking_metrics(d(st.one_of(int_array, int_array.map(lambda a: a.reshape(1, -1)))),
                                                   [list(d(int_array))], d(st.one_of(size, int_array))),
    }
    try:
        calls[which]()
    except RecsysError:
        pass
