"""IdMap: external ids <-> dense internal indices, and id normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_fast.data.idmap import IdMap, normalize_ids
from recsys_fast.errors import DataError, UnknownIdError


def test_from_values_int_sorted_and_inverse():
    m, idx = IdMap.from_values([30, 10, 20, 10], "user")
    assert m.ids.dtype == np.int64
    assert m.ids.tolist() == [10, 20, 30]
    assert idx.tolist() == [2, 0, 1, 0]
    assert not m.is_string and len(m) == 3


def test_from_values_strings():
    m, idx = IdMap.from_values(np.array(["b", "a", "c", "a"], dtype=object), "item")
    assert m.is_string
    assert m.ids.tolist() == ["a", "b", "c"]
    assert idx.tolist() == [1, 0, 2, 0]


@pytest.mark.parametrize("values, row", [
    (np.array([1, "x"], dtype=object), 1),       # a tie: the kind row 0 is not offends
    (["a", "b", 3, "c"], 2),                      # a list: numpy would have made 3 into "3"
    (np.array([5, 6, "z", 7], dtype=object), 2),
])
def test_mixed_ints_and_strings_name_the_first_offending_row(values, row):
    with pytest.raises(DataError, match=rf"row {row}: item id .* ids must be all integers or all strings"):
        IdMap.from_values(values, "item")


def test_to_index_and_back():
    m, _ = IdMap.from_values([5, 7, 9])
    assert m.to_index([9, 5]).tolist() == [2, 0]
    assert m.to_external([2, 0, -1]).tolist() == [9, 5, -1]


def test_to_external_string_padding():
    m, _ = IdMap.from_values(["a", "b"])
    assert m.to_external([1, -1]).tolist() == ["b", ""]
    assert m.to_external([-1], pad="?").tolist() == ["?"]


def test_unknown_raises_naming_the_id():
    m, _ = IdMap.from_values([5, 7], "user")
    with pytest.raises(UnknownIdError, match=r"unknown user id: 6"):
        m.to_index([5, 6])
    with pytest.raises(KeyError):  # UnknownIdError is a KeyError
        m.to_index(8)


def test_unknown_pad():
    m, _ = IdMap.from_values(["a", "c"])
    assert m.to_index(["c", "b", "a"], on_unknown="pad").tolist() == [1, -1, 0]


def test_bad_on_unknown():
    m, _ = IdMap.from_values([1])
    with pytest.raises(ValueError, match="on_unknown must be one of 'raise', 'pad', got 'skip'"):
        m.to_index([2], on_unknown="skip")
    # the old spelling names the new one (one vocabulary with recommend(on_unknown=))
    with pytest.raises(ValueError, match="'mask' was renamed 'pad'"):
        m.to_index([2], on_unknown="mask")


def test_int_map_accepts_integral_floats_and_numeric_strings():
    m, _ = IdMap.from_values([1, 2, 3])
    assert m.to_index(np.array([3.0, 1.0])).tolist() == [2, 0]
    assert m.to_index(["2"]).tolist() == [1]


@pytest.mark.parametrize("text", ["--5", "+-5", "\u00b3", "\u0663", "-"])  # "--5" was an int() ValueError (fuzzing)
def test_int_map_text_that_is_no_integer_is_unknown(text):
    m, _ = IdMap.from_values([1, 2, 3], "user")
    assert m.to_index(["-3", "+2", text], on_unknown="pad").tolist() == [-1, 1, -1]
    with pytest.raises(UnknownIdError):
        m.to_index([text])


def test_int_map_rejects_non_integral_lookup():
    m, _ = IdMap.from_values([1, 2, 3], "item")
    with pytest.raises(UnknownIdError, match="integers"):
        m.to_index([1.5])


def test_empty_map():
    m = IdMap(np.zeros(0, dtype=np.int64))
    assert m.to_index([1], on_unknown="pad").tolist() == [-1]
    with pytest.raises(UnknownIdError):
        m.to_index([1])


def test_constructor_checks():
    with pytest.raises(DataError, match="sorted and unique"):
        IdMap(np.array([2, 1]))
    with pytest.raises(DataError, match="one-dimensional"):
        IdMap(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(DataError, match="integers or strings"):
        IdMap(np.array([1.0, 2.0]))


def test_equality():
    a, _ = IdMap.from_values([1, 2])
    b, _ = IdMap.from_values([2, 1])
    c, _ = IdMap.from_values(["1", "2"])
    assert a == b and a != c


@pytest.mark.parametrize("values, row, pattern", [
    (np.array([1.0, np.nan, 3.0]), 1, "must not be missing"),
    (np.array([1.0, 2.5]), 1, "not an integer"),
    (np.array([1, None, 3], dtype=object), 1, "missing"),
    (np.array(["a", float("nan")], dtype=object), 1, "missing"),
])
def test_normalize_ids_bad_values_name_row_and_column(values, row, pattern):
    with pytest.raises(DataError, match=rf"f\.csv, row {row}, column 'uid': .*{pattern}"):
        normalize_ids(values, "user", source="f.csv", column="uid")


def test_normalize_ids_rejects_booleans():
    with pytest.raises(DataError, match="booleans"):
        normalize_ids(np.array([True, False]), "item")


def test_normalize_ids_integral_floats_to_int64():
    out = normalize_ids(np.array([1.0, 2.0]), "user")
    assert out.dtype == np.int64 and out.tolist() == [1, 2]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-2**40, 2**40), min_size=1, max_size=50))
def test_round_trip_property_ints(values):
    m, idx = IdMap.from_values(values)
    assert m.to_external(idx).tolist() == values
    assert np.array_equal(m.to_index(values), idx)
    assert np.all(np.diff(m.ids) > 0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(alphabet="abcxyz01", min_size=1, max_size=4), min_size=1, max_size=50))
def test_round_trip_property_strings(values):
    m, idx = IdMap.from_values(np.array(values, dtype=object))
    assert m.to_external(idx).tolist() == values
