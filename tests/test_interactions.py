"""Interactions: constructors, duplicate policies, min_rating, select/remap and every bad input."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_fast import Interactions
from recsys_fast.data.idmap import IdMap
from recsys_fast.errors import DataError, ParameterError


def dense(data: Interactions) -> dict:
    """{(user, item): weight} in external ids."""
    df = data.to_pandas()
    return {(u, i): w for u, i, w in zip(df["user"], df["item"], df["weight"])}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------- constructors
def test_from_arrays_int_ids():
    d = Interactions.from_arrays([10, 10, 20], [7, 5, 7], [1.0, 2.0, 3.0], [3, 2, 1])
    assert (d.n_users, d.n_items, d.nnz) == (2, 2, 3)
    assert d.user_map.ids.tolist() == [10, 20] and d.item_map.ids.tolist() == [5, 7]
    assert d.matrix.dtype == np.float32 and d.matrix.has_sorted_indices
    assert d.matrix.toarray().tolist() == [[2.0, 1.0], [0.0, 3.0]]
    # timestamps and ratings follow the CSR order
    assert d.timestamps.tolist() == [2, 3, 1]
    assert d.ratings.tolist() == [2.0, 1.0, 3.0]
    assert "2 users x 2 items, 3 interactions" in repr(d)


def test_from_arrays_string_ids_and_no_weights():
    d = Interactions.from_arrays(["u2", "u1"], ["b", "a"])
    assert d.user_map.is_string and d.item_map.ids.tolist() == ["a", "b"]
    assert d.matrix.data.tolist() == [1.0, 1.0]
    assert d.ratings is None and d.timestamps is None


def test_row_of_nnz():
    d = Interactions.from_arrays([1, 1, 3, 3, 3], [1, 2, 1, 2, 3])
    assert d.row_of_nnz().tolist() == [0, 0, 1, 1, 1]


def test_from_pandas_and_to_pandas_round_trip():
    df = pd.DataFrame({"u": ["x", "y", "x", "z"], "i": [3, 1, 2, 3], "r": [4.0, 5.0, 1.5, 2.0],
                       "t": [100, 200, 300, 400]})
    d = Interactions.from_pandas(df, user="u", item="i", weight="r", timestamp="t")
    out = d.to_pandas()
    assert list(out.columns) == ["user", "item", "weight", "timestamp"]
    back = out.sort_values(["user", "item"]).reset_index(drop=True)
    want = df.rename(columns={"u": "user", "i": "item", "r": "weight", "t": "timestamp"}) \
        .sort_values(["user", "item"]).reset_index(drop=True)
    assert back["user"].tolist() == want["user"].tolist()
    assert back["item"].tolist() == want["item"].tolist()
    assert np.allclose(back["weight"], want["weight"])
    assert back["timestamp"].tolist() == want["timestamp"].tolist()
    again = Interactions.from_pandas(out, weight="weight", timestamp="timestamp")
    assert (again.matrix != d.matrix).nnz == 0 and np.array_equal(again.timestamps, d.timestamps)


def test_to_pandas_without_timestamps():
    out = Interactions.from_arrays([1], [2]).to_pandas()
    assert out["timestamp"].isna().all() and out["user"].tolist() == [1]


def test_from_pandas_datetime_timestamps_are_unix_seconds():
    df = pd.DataFrame({"user": [1, 2], "item": [1, 1],
                       "t": pd.to_datetime(["1970-01-01 00:00:10", "2020-01-01 00:00:00"])})
    d = Interactions.from_pandas(df, timestamp="t")
    assert d.timestamps.tolist() == [10, 1577836800]


def test_from_pandas_tz_aware_timestamps_are_utc():
    t = pd.to_datetime(["2020-01-01 00:00:00"]).tz_localize("America/New_York")
    d = Interactions.from_pandas(pd.DataFrame({"user": [1], "item": [1], "t": t}), timestamp="t")
    assert d.timestamps.tolist() == [1577836800 + 5 * 3600]


def test_from_pandas_large_int_timestamps_exact():
    ns = 1_700_000_000_123_456_789
    d = Interactions.from_pandas(pd.DataFrame({"user": [1], "item": [1], "t": [ns]}), timestamp="t")
    assert d.timestamps.tolist() == [ns]


def test_from_csv_int_and_string_ids(tmp_path):
    path = write(tmp_path, "a.csv", "user,item,rating,ts\n1,10,4.5,100\n2,10,3,200\n1,11,5,300\n")
    d = Interactions.from_csv(path, weight="rating", timestamp="ts")
    assert d.user_map.ids.dtype == np.int64 and d.item_map.ids.tolist() == [10, 11]
    assert dense(d) == {(1, 10): 4.5, (1, 11): 5.0, (2, 10): 3.0}
    path = write(tmp_path, "b.csv", "user;item\nann;x\nbob;y\n")
    d = Interactions.from_csv(path, sep=";")
    assert d.user_map.ids.tolist() == ["ann", "bob"]


def test_from_csv_ids_with_leading_zeros_as_text_become_ints(tmp_path):
    # documented: a column whose every value is an integer literal is an integer id column
    d = Interactions.from_csv(write(tmp_path, "a.csv", "user,item\n007,1\n8,1\n"))
    assert d.user_map.ids.tolist() == [7, 8]


def test_from_parquet_round_trip(tmp_path):
    df = pd.DataFrame({"user": ["a", "b", "a"], "item": [1, 2, 2], "w": [1.0, 2.0, 3.0], "t": [5, 6, 7]})
    path = tmp_path / "x.parquet"
    df.to_parquet(path)
    d = Interactions.from_parquet(path, weight="w", timestamp="t")
    assert dense(d) == {("a", 1): 1.0, ("a", 2): 3.0, ("b", 2): 2.0}
    assert sorted(d.timestamps.tolist()) == [5, 6, 7]


# ---------------------------------------------------------------------- duplicates
DUP = dict(users=[1, 1, 1, 2], items=[5, 5, 5, 5], weights=[2.0, 7.0, 3.0, 1.0], timestamps=[20, 10, 30, 5])


@pytest.mark.parametrize("policy, weight, ts", [
    ("last", 3.0, 30),    # latest timestamp
    ("first", 7.0, 10),   # earliest timestamp
    ("sum", 12.0, 30),    # summed weight, latest timestamp
    ("max", 7.0, 10),     # largest weight with its own timestamp
])
def test_duplicate_policies(policy, weight, ts):
    d = Interactions.from_arrays(**DUP, duplicates=policy)
    assert d.nnz == 2
    assert d.matrix[0, 0] == weight and d.timestamps[0] == ts and d.timestamps[1] == 5
    assert d.ratings[0] == (weight if policy != "sum" else 3.0)


def test_duplicates_without_timestamps_use_row_order():
    args = dict(users=[1, 1, 1], items=[5, 5, 5], weights=[2.0, 7.0, 3.0])
    assert Interactions.from_arrays(**args, duplicates="last").matrix.data.tolist() == [3.0]
    assert Interactions.from_arrays(**args, duplicates="first").matrix.data.tolist() == [2.0]


def test_duplicates_error_names_the_pair():
    with pytest.raises(DataError, match=r"arrays: duplicate interaction for user 1, item 5 \(rows 0 and 1\)"):
        Interactions.from_arrays(**DUP, duplicates="error")


def test_bad_duplicate_policy():
    with pytest.raises(ValueError, match="duplicates must be one of"):
        Interactions.from_arrays([1], [1], duplicates="mean")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 9)), min_size=1, max_size=40),
       st.sampled_from(["last", "first", "sum", "max"]))
def test_duplicate_policies_match_reference(rows, policy):
    users, items, weights = (np.array(c) for c in zip(*rows))
    d = Interactions.from_arrays(users, items, weights.astype(float), duplicates=policy)
    ref = {}
    for u, i, w in rows:  # row order = time order without timestamps
        key = (u, i)
        if key not in ref:
            ref[key] = w
        elif policy == "last":
            ref[key] = w
        elif policy == "sum":
            ref[key] += w
        elif policy == "max":
            ref[key] = max(ref[key], w)
    assert dense(d) == {k: float(v) for k, v in ref.items()}


# ---------------------------------------------------------------------- min_rating
def test_min_rating_makes_implicit_and_keeps_ratings():
    d = Interactions.from_arrays([1, 1, 2], [1, 2, 1], [4.0, 2.0, 5.0], min_rating=4)
    assert d.nnz == 2 and d.matrix.data.tolist() == [1.0, 1.0]
    assert d.ratings.tolist() == [4.0, 5.0]
    assert d.item_map.ids.tolist() == [1]  # item 2 only had a low rating


def test_min_rating_drops_everything():
    with pytest.raises(DataError, match=r"column 'r'.*no interaction has a rating >= min_rating=9"):
        Interactions.from_pandas(pd.DataFrame({"user": [1], "item": [1], "r": [3.0]}), weight="r", min_rating=9)


def test_min_rating_needs_weights():
    with pytest.raises(DataError, match="min_rating needs ratings"):
        Interactions.from_arrays([1], [1], min_rating=3)


# ---------------------------------------------------------------------- bad input: arrays
def test_arrays_of_different_lengths():
    with pytest.raises(DataError, match=r"arrays, column 'items': items has 1 entries but users has 2"):
        Interactions.from_arrays([1, 2], [1])
    with pytest.raises(DataError, match=r"column 'timestamps'"):
        Interactions.from_arrays([1, 2], [1, 2], None, [1])


def test_empty_arrays():
    with pytest.raises(DataError, match=r"arrays: no interactions: the input is empty"):
        Interactions.from_arrays([], [])


@pytest.mark.parametrize("weights, pattern", [
    ([1.0, np.nan], r"arrays, row 1, column 'weights': weight is nan; weights must be finite"),
    ([np.inf, 1.0], r"arrays, row 0, column 'weights': weight is inf"),
    ([1.0, -2.0], r"arrays, row 1, column 'weights': weight is -2.0; weights must not be negative"),
    (np.array(["a", "b"], dtype=object), r"column 'weights': weights must be numbers"),
])
def test_bad_weights_arrays(weights, pattern):
    with pytest.raises(DataError, match=pattern):
        Interactions.from_arrays([1, 2], [1, 2], weights)


def test_nan_and_float_ids_arrays():
    with pytest.raises(DataError, match=r"row 2, column 'users': user id is nan"):
        Interactions.from_arrays([1.0, 2.0, np.nan], [1, 2, 3])
    with pytest.raises(DataError, match=r"row 0, column 'items': item id 1.5 is not an integer"):
        Interactions.from_arrays([1, 2], [1.5, 2.0])


def test_nat_timestamps():
    with pytest.raises(DataError, match=r"row 1, column 'timestamps': timestamp is missing"):
        Interactions.from_arrays([1, 2], [1, 2], None, np.array(["2020-01-01", "NaT"], dtype="datetime64[s]"))


def test_nan_timestamp():
    with pytest.raises(DataError, match=r"row 0, column 'timestamps': timestamp is missing"):
        Interactions.from_arrays([1], [1], None, [np.nan])


# ---------------------------------------------------------------------- bad input: DataFrames
def test_pandas_missing_columns():
    df = pd.DataFrame({"user": [1], "itm": [2]})
    with pytest.raises(DataError, match=r"DataFrame: missing column\(s\) \['item', 'w'\]; found \['user', 'itm'\]"):
        Interactions.from_pandas(df, weight="w")


def test_pandas_nan_ids_name_row_and_column():
    df = pd.DataFrame({"user": [1.0, 2.0, None], "item": [1, 2, 3]})
    with pytest.raises(DataError, match=r"DataFrame, row 2, column 'user'"):
        Interactions.from_pandas(df)
    df = pd.DataFrame({"user": ["a", None], "item": [1, 2]})
    with pytest.raises(DataError, match=r"DataFrame, row 1, column 'user': user id is missing"):
        Interactions.from_pandas(df)


@pytest.mark.parametrize("column", [
    pd.array(["a", None], dtype="string"),   # pandas.NA, not NaN
    pd.array([1, None], dtype="Int64"),
    np.array(["a", pd.NaT], dtype=object),
])
def test_pandas_nullable_missing_ids(column):
    df = pd.DataFrame({"user": column, "item": [1, 2]})
    with pytest.raises(DataError, match=r"DataFrame, row 1, column 'user': user id is"):
        Interactions.from_pandas(df)


def test_pandas_nullable_missing_weight():
    df = pd.DataFrame({"user": [1, 2], "item": [1, 2], "w": pd.array([1.0, None], dtype="Float64")})
    with pytest.raises(DataError, match=r"row 1, column 'w': weight is nan"):
        Interactions.from_pandas(df, weight="w")


def test_pandas_non_numeric_timestamp():
    df = pd.DataFrame({"user": [1, 2], "item": [1, 2], "t": ["10", "soon"]})
    with pytest.raises(DataError, match=r"row 1, column 't': timestamp 'soon' is not a number or an ISO 8601"):
        Interactions.from_pandas(df, timestamp="t")


def test_csv_iso_timestamps(tmp_path):
    path = write(tmp_path, "iso.csv", "user,item,when\n1,1,2020-01-01T00:00:00Z\n2,1,2020-01-01 01:00:00+01:00\n"
                                      "3,1,1970-01-01\n")
    d = Interactions.from_csv(path, timestamp="when")
    assert d.timestamps.tolist() == [1577836800, 1577836800, 0]
    bad = write(tmp_path, "badiso.csv", "user,item,when\n1,1,2020-01-01\n2,1,yesterday\n")
    with pytest.raises(DataError, match=r"badiso\.csv, row 1, column 'when': timestamp 'yesterday'"):
        Interactions.from_csv(bad, timestamp="when")
    mixed = write(tmp_path, "mixed.csv", "user,item,when\n1,1,2020-01-01\n2,1,1577836800\n")
    with pytest.raises(DataError, match=r"mixed\.csv, row 1, column 'when': timestamp '1577836800' is a number but"):
        Interactions.from_csv(mixed, timestamp="when")


def test_csv_missing_timestamp(tmp_path):
    path = write(tmp_path, "t.csv", "user,item,ts\n1,1,5\n2,1,\n")
    with pytest.raises(DataError, match=r"t\.csv, row 1, column 'ts': timestamp is missing"):
        Interactions.from_csv(path, timestamp="ts")


def test_pandas_empty_frame():
    with pytest.raises(DataError, match="DataFrame: no interactions"):
        Interactions.from_pandas(pd.DataFrame({"user": [], "item": []}))


# ---------------------------------------------------------------------- bad input: files
def test_csv_not_found(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        Interactions.from_csv(tmp_path / "nope.csv")


def test_csv_empty_file(tmp_path):
    path = write(tmp_path, "empty.csv", "")
    with pytest.raises(DataError, match=r"empty\.csv: the file is empty"):
        Interactions.from_csv(path)


def test_csv_header_only(tmp_path):
    path = write(tmp_path, "head.csv", "user,item,rating\n")
    with pytest.raises(DataError, match=r"head\.csv: no interactions: the input is empty"):
        Interactions.from_csv(path, weight="rating")


def test_csv_missing_columns(tmp_path):
    path = write(tmp_path, "cols.csv", "userId,movieId\n1,2\n")
    with pytest.raises(DataError, match=r"cols\.csv: missing column\(s\) \['user', 'item'\]; found \['userId', 'movieId'\]"):
        Interactions.from_csv(path)


@pytest.mark.parametrize("body, pattern", [
    ("1,1,4\n,2,3\n", r"bad\.csv, row 1, column 'user': id is missing"),
    ("1,1,4\n2,2.5,3\n", r"bad\.csv, row 1, column 'item': id '2\.5' is not an integer"),
    ("1,1,4\n2,2,\n", r"bad\.csv, row 1, column 'rating': weight is nan"),
    ("1,1,inf\n2,2,1\n", r"bad\.csv, row 0, column 'rating': weight is inf"),
    ("1,1,4\n2,2,1\n3,3,-1\n", r"bad\.csv, row 2, column 'rating': weight is -1\.0; weights must not be negative"),
    ("1,1,4\n2,2,good\n", r"bad\.csv, column 'rating': weights must be numbers"),
])
def test_csv_bad_values_name_file_row_column(tmp_path, body, pattern):
    path = write(tmp_path, "bad.csv", "user,item,rating\n" + body)
    with pytest.raises(DataError, match=pattern):
        Interactions.from_csv(path, weight="rating")


def test_csv_integral_float_ids_are_ints(tmp_path):
    d = Interactions.from_csv(write(tmp_path, "f.csv", "user,item\n1.0,2\n3,4.0\n"))
    assert d.user_map.ids.tolist() == [1, 3] and d.item_map.ids.tolist() == [2, 4]


def test_parquet_missing_columns_and_not_found(tmp_path):
    path = tmp_path / "p.parquet"
    pd.DataFrame({"u": [1], "i": [2]}).to_parquet(path)
    with pytest.raises(DataError, match=r"p\.parquet: missing column\(s\) \['user', 'item'\]"):
        Interactions.from_parquet(path)
    with pytest.raises(DataError, match=r"q\.parquet: file not found"):
        Interactions.from_parquet(tmp_path / "q.parquet")


def test_parquet_null_id_and_negative_weight(tmp_path):
    path = tmp_path / "n.parquet"
    pd.DataFrame({"user": pd.array([1, None, 3], dtype="Int64"), "item": [1, 2, 3]}).to_parquet(path)
    with pytest.raises(DataError, match=re.escape(str(path)) + r", row 1, column 'user'"):
        Interactions.from_parquet(path)
    path = tmp_path / "w.parquet"
    pd.DataFrame({"user": [1, 2], "item": [1, 2], "w": [1.0, -1.0]}).to_parquet(path)
    with pytest.raises(DataError, match=r"w\.parquet, row 1, column 'w': weight is -1\.0"):
        Interactions.from_parquet(path, weight="w")


def test_parquet_empty(tmp_path):
    path = tmp_path / "e.parquet"
    pd.DataFrame({"user": pd.Series([], dtype="int64"), "item": pd.Series([], dtype="int64")}).to_parquet(path)
    with pytest.raises(DataError, match=r"e\.parquet: no interactions"):
        Interactions.from_parquet(path)


# ---------------------------------------------------------------------- select / remap / init
def test_select_keeps_maps_and_alignment():
    d = Interactions.from_arrays([1, 1, 2, 3], [5, 6, 5, 7], [1, 2, 3, 4], [10, 20, 30, 40])
    s = d.select(np.array([True, False, True, True]))
    assert s.user_map is d.user_map and s.item_map is d.item_map
    assert dense(s) == {(1, 5): 1.0, (2, 5): 3.0, (3, 7): 4.0}
    assert s.timestamps.tolist() == [10, 30, 40] and s.ratings.tolist() == [1.0, 3.0, 4.0]


def test_select_with_trailing_empty_rows():
    d = Interactions.from_arrays([1, 1, 2, 3], [5, 6, 5, 7])
    s = d.select(np.array([True, True, True, False]))  # the last user becomes empty
    again = s.select(np.ones(s.nnz, dtype=bool))
    assert again.matrix.indptr.tolist() == [0, 2, 3, 3]
    empty = d.select(np.zeros(d.nnz, dtype=bool))
    assert empty.nnz == 0 and empty.select(np.zeros(0, dtype=bool)).nnz == 0


def test_select_bad_mask():
    d = Interactions.from_arrays([1], [1])
    with pytest.raises(ParameterError, match=r"keep must be a bool mask of shape \(1,\), got shape \(3,\)"):
        d.select(np.ones(3, dtype=bool))


def test_remap_counts_unknowns():
    d = Interactions.from_arrays([1, 2, 3], [5, 6, 7], [1, 2, 3], [7, 8, 9])
    users, _ = IdMap.from_values([1, 3, 4], "user")
    items, _ = IdMap.from_values([5, 7], "item")
    out, info = d.remap(users, items)
    assert info == {"unknown_users": 1, "unknown_items": 1, "dropped": 1}
    assert dense(out) == {(1, 5): 1.0, (3, 7): 3.0} and out.timestamps.tolist() == [7, 9]
    same, info = d.remap(d.user_map, d.item_map)
    assert same is d and info["dropped"] == 0


def test_remap_to_disjoint_maps_is_empty():
    d = Interactions.from_arrays([1], [5])
    other, _ = IdMap.from_values([9], "item")
    out, info = d.remap(d.user_map, other)
    assert out.nnz == 0 and info["dropped"] == 1


def test_init_checks_shapes():
    um, _ = IdMap.from_values([1, 2])
    im, _ = IdMap.from_values([1])
    with pytest.raises(DataError, match="does not match the id maps"):
        Interactions(sp.csr_matrix((3, 1)), um, im)
    with pytest.raises(DataError, match="timestamps has 1 entries, the matrix 0"):
        Interactions(sp.csr_matrix((2, 1)), um, im, timestamps=np.array([1]))
