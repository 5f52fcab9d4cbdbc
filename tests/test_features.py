"""ItemFeatures: blocks, alignment, coverage report, and errors naming the bad column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_fast.data.features import ItemFeatures, union_item_map
from recsys_fast.data.idmap import IdMap
from recsys_fast.data.interactions import Interactions
from recsys_fast.errors import DataError, ParameterError


@pytest.fixture
def frame():
    return pd.DataFrame({
        "item": [30, 10, 20, 40],
        "title": ["Toy Story toy", "Heat", None, "Toy Soldiers"],
        "genres": ["Animation|Comedy", "Crime|Thriller", "Comedy", np.nan],
        "decade": ["1990s", "1990s", "1980s", None],
    })


def test_blocks_names_and_unit_norms(frame):
    f = ItemFeatures.from_pandas(frame, text=["title"], categorical=["decade"], multi_label={"genres": "|"})
    assert f.item_map.ids.tolist() == [10, 20, 30, 40]
    names = f.feature_names.tolist()
    assert "title=toy" in names and "genres=Comedy" in names and "decade=1990s" in names
    assert f.matrix.dtype == np.float32 and f.matrix.has_sorted_indices
    dense = f.matrix.toarray()
    col = {n: i for i, n in enumerate(names)}
    # item 30 (row 2): two genres, each 1/sqrt(2) in a unit block; one decade
    np.testing.assert_allclose(dense[2, col["genres=Animation"]], 2 ** -0.5, rtol=1e-6)
    np.testing.assert_allclose(dense[2, col["decade=1990s"]], 1.0)
    # each block of each item has norm 1 or 0
    for prefix in ("title=", "genres=", "decade="):
        cols = [i for n, i in col.items() if n.startswith(prefix)]
        norms = np.linalg.norm(dense[:, cols], axis=1)
        assert np.all(np.isclose(norms, 1.0, atol=1e-6) | (norms == 0))
    # missing values: item 20 has no title words, item 40 no genre and no decade
    assert dense[1, [i for n, i in col.items() if n.startswith("title=")]].sum() == 0
    assert dense[3, [i for n, i in col.items() if not n.startswith("title=")]].sum() == 0


def test_block_weights_and_bm25(frame):
    f = ItemFeatures.from_pandas(frame, text="title", multi_label={"genres": "|"}, weights={"genres": 3.0},
                                 text_weighting="bm25")
    dense = f.matrix.toarray()
    g = [i for i, n in enumerate(f.feature_names) if n.startswith("genres=")]
    np.testing.assert_allclose(np.linalg.norm(dense[0, g]), 3.0, rtol=1e-6)
    assert np.all(f.matrix.data > 0)


def test_report_and_alignment(frame):
    f = ItemFeatures.from_pandas(frame, multi_label={"genres": "|"})
    data = Interactions.from_arrays(["a", "a", "b", "c"], [10, 99, 10, 30])
    rep = f.report(data)
    assert rep["items_without_features"] == 1 and rep["examples_without_features"] == [99]
    assert rep["interactions_without_features"] == 1 and rep["cold_items"] == 2  # 20 and 40
    union = union_item_map(data.item_map, f.item_map)
    assert union.ids.tolist() == [10, 20, 30, 40, 99]
    a = f.aligned(union).toarray()
    np.testing.assert_array_equal(a[:4], f.matrix.toarray())
    assert a[4].sum() == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(text=["nope"]), r"missing column\(s\) \['nope'\]"),
    (dict(text=["genres"], multi_label={"genres": "|"}), r"\['genres'\] given in more than one role"),
    (dict(categorical=["item"]), r"\['item'\] given in more than one role"),
    (dict(), "no feature columns"),
    (dict(text=["num"]), "column 'num': text column holds int"),
    (dict(multi_label={"num": "|"}), "column 'num': multi-label column holds int"),
    (dict(text=["empty"]), "column 'empty': no words to index"),
    (dict(multi_label={"genres": ""}), "column 'genres': multi_label separator"),
    (dict(text=["title"], weights={"other": 1.0}), r"weights name column\(s\) \['other'\]"),
])
def test_bad_columns_name_the_column(frame, kwargs, match):
    frame = frame.assign(num=[1, 2, 3, 4], empty=["", None, "", "-"])
    with pytest.raises(DataError, match=match):
        ItemFeatures.from_pandas(frame, **kwargs)


def test_duplicate_item_and_bad_parameters(frame):
    dup = pd.concat([frame, frame.iloc[:1]])
    with pytest.raises(DataError, match=r"item 30 has more than one row \(rows 0 and 4\)"):
        ItemFeatures.from_pandas(dup, text=["title"])
    with pytest.raises(ParameterError, match="text_weighting must be one of"):
        ItemFeatures.from_pandas(frame, text=["title"], text_weighting="bm26")
    with pytest.raises(DataError, match="integers in one source and strings"):
        union_item_map(IdMap(np.array([1]), "item"), IdMap(np.array(["a"]), "item"))


def test_movielens_titles_genres_tags(ml_latest_small_path):
    from recsys_fast.datasets import load_movielens

    data, items = load_movielens(ml_latest_small_path)
    tags = pd.read_csv(ml_latest_small_path / "tags.csv")
    per_movie = tags.groupby("movieId")["tag"].agg(lambda s: "|".join(s.astype(str).str.lower())).rename("tags")
    items = items.merge(per_movie, left_on="item", right_index=True, how="left")
    f = ItemFeatures.from_pandas(items, text=["title"], multi_label={"genres": "|", "tags": "|"})
    assert f.n_items == len(items) and f.n_features > 5000
    rep = f.report(data)
    assert rep["items_without_features"] == 0 and rep["cold_items"] == len(items) - rep["items_with_interactions"]
