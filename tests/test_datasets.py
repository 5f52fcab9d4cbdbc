"""Data sets: finding folders, MovieLens layouts (real and miniature), the synthetic generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_fast.datasets import NO_GENRES, find_dataset, load_movielens, synthetic
from recsys_fast.errors import DataError, ParameterError


# ---------------------------------------------------------------------- find_dataset
def test_find_dataset_env_var_comes_first(tmp_path, monkeypatch):
    (tmp_path / "ml-latest-small").mkdir()
    monkeypatch.setenv("RECSYS_FAST_DATA", str(tmp_path))
    assert find_dataset("ml-latest-small") == tmp_path / "ml-latest-small"


def test_find_dataset_falls_back_to_repo_data(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_FAST_DATA", str(tmp_path))  # empty: not there
    found = find_dataset("ml-latest-small")
    assert found is not None and found.name == "ml-latest-small" and (found / "ratings.csv").is_file()


def test_find_dataset_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_FAST_DATA", str(tmp_path))
    assert find_dataset("no-such-data-set-xyz") is None


def test_unknown_name_lists_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_FAST_DATA", str(tmp_path))
    with pytest.raises(DataError, match=r"data set 'no-such-set' not found; looked in: .*no-such-set"):
        load_movielens("no-such-set")


def test_missing_folder_path(tmp_path):
    with pytest.raises(DataError, match=r"gone: MovieLens folder not found"):
        load_movielens(tmp_path / "gone")


# ---------------------------------------------------------------------- real data
def test_ml_latest_small(ml_latest_small_path):
    data, items = load_movielens(ml_latest_small_path)
    assert (data.n_users, data.n_items, data.nnz) == (610, 9724, 100836)
    raw = pd.read_csv(ml_latest_small_path / "ratings.csv")
    assert data.ratings is not None and np.isclose(data.ratings.sum(), raw["rating"].sum())
    assert data.timestamps.min() == raw["timestamp"].min() and data.timestamps.max() == raw["timestamp"].max()
    assert np.array_equal(data.matrix.data, data.ratings)
    first = raw.iloc[0]
    u, i = data.user_map.to_index(first["userId"])[0], data.item_map.to_index(first["movieId"])[0]
    assert data.matrix[u, i] == first["rating"]
    assert list(items.columns) == ["item", "title", "genres"]
    assert len(items) == 9742 and items["item"].is_monotonic_increasing
    toy = items.set_index("item").loc[1]
    assert toy["title"] == "Toy Story (1995)" and toy["genres"] == "Adventure|Animation|Children|Comedy|Fantasy"
    assert np.isin(data.item_map.ids, items["item"]).all()


def test_ml_latest_small_by_name_and_min_rating(ml_latest_small_path):
    data, _ = load_movielens("ml-latest-small", min_rating=4.0)
    raw = pd.read_csv(ml_latest_small_path / "ratings.csv")
    assert data.nnz == int((raw["rating"] >= 4.0).sum())
    assert set(np.unique(data.matrix.data)) == {1.0} and data.ratings.min() >= 4.0


def test_ml_100k(ml_100k_path):
    data, items = load_movielens(ml_100k_path)
    assert (data.n_users, data.n_items, data.nnz) == (943, 1682, 100000)
    assert data.timestamps is not None and set(np.unique(data.ratings)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert len(items) == 1682
    toy = items.set_index("item").loc[1]
    assert toy["title"] == "Toy Story (1995)" and toy["genres"] == "Animation|Children's|Comedy"


def test_ml_100k_by_name(ml_100k_path):
    data, _ = load_movielens("ml-100k")
    assert data.nnz == 100000


# ---------------------------------------------------------------------- miniature layouts
def _ml100k_dir(tmp_path, with_genre_file):
    d = tmp_path / "mini100k"
    d.mkdir()
    (d / "u.data").write_text("1\t10\t5\t100\n2\t10\t3\t200\n1\t20\t4\t300\n")
    flags_a = ["0"] * 19
    flags_a[1] = flags_a[15] = "1"  # Action, Sci-Fi
    flags_b = ["0"] * 19
    (d / "u.item").write_bytes(
        ("10|Caf\xe9 \"Noir\" (1990)|01-Jan-1990||http://x|" + "|".join(flags_a) + "\n"
         "20|Empty (1991)|01-Jan-1991||http://y|" + "|".join(flags_b) + "\n").encode("latin-1"))
    if with_genre_file:
        names = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
                 "Thriller", "War", "Western"]
        (d / "u.genre").write_text("".join(f"{n}|{k}\n" for k, n in enumerate(names)) + "\n")
    return d


@pytest.mark.parametrize("with_genre_file", [True, False])
def test_ml100k_layout_miniature(tmp_path, with_genre_file):
    data, items = load_movielens(_ml100k_dir(tmp_path, with_genre_file))
    assert (data.n_users, data.n_items, data.nnz) == (2, 2, 3)
    assert data.matrix.toarray().tolist() == [[5.0, 4.0], [3.0, 0.0]]
    assert items["title"].tolist() == ['Caf\xe9 "Noir" (1990)', "Empty (1991)"]
    assert items["genres"].tolist() == ["Action|Sci-Fi", NO_GENRES]


def test_ml_latest_layout_miniature(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n7,1,3.5,11\n7,2,0.5,12\n9,2,5.0,13\n")
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n2,"Movie, The (2000)",Drama\n1,Other (1999),'
                                         "(no genres listed)\n3,Unrated (2001),Comedy|Drama\n")
    data, items = load_movielens(tmp_path)
    assert data.user_map.ids.tolist() == [7, 9] and data.timestamps.tolist() == [11, 12, 13]
    assert items["item"].tolist() == [1, 2, 3]
    assert items["title"].tolist() == ["Other (1999)", "Movie, The (2000)", "Unrated (2001)"]


@pytest.mark.parametrize("encoding", ["latin-1", "utf-8"])  # ml-1m is Latin-1, ml-10m UTF-8
def test_ml_1m_layout_miniature(tmp_path, encoding):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978300275\n")
    (tmp_path / "movies.dat").write_bytes("1193::One Flew (1975)::Drama\n661::James & Caf\xe9 (1996)::Animation|Musical\n"
                                          .encode(encoding))
    data, items = load_movielens(tmp_path)
    assert (data.n_users, data.n_items, data.nnz) == (2, 2, 3)
    assert data.timestamps.max() == 978302109
    assert items["item"].tolist() == [661, 1193] and items["title"].tolist()[0] == "James & Caf\xe9 (1996)"


def test_unrecognised_layout_names_folder_and_expected_files(tmp_path):
    (tmp_path / "data.txt").write_text("1 2 3\n")
    with pytest.raises(DataError, match=rf"{tmp_path}: unrecognised MovieLens layout: expected u\.data \+ u\.item "
                                        r"\(ml-100k\).*ratings\.csv \+ movies\.csv \(ml-latest\); found \['data\.txt'\]"):
        load_movielens(tmp_path)


def test_layout_missing_items_file(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,1,1\n")
    with pytest.raises(DataError, match=r"ml-latest layout is missing movies\.csv"):
        load_movielens(tmp_path)


@pytest.mark.parametrize("body, pattern", [
    ("1,1,4.0,5\n2,x,3.0,6\n", r"ratings\.csv, row 1, column 'movieId': 'x' is not an integer"),
    ("1,1,4.0,5\n2,2,3.0,6\n3,3,four,7\n", r"ratings\.csv, row 2, column 'rating': 'four' is not a number"),
    ("1,1,4.0,5\n2.5,2,3.0,6\n", r"ratings\.csv, row 1, column 'userId': '2\.5' is not an integer"),
    ("1,1,4.0,5\n2,2,3.0\n", r"ratings\.csv: could not parse: .*columns"),
    ("1,1,4.0,5\n2,,3.0,6\n", r"ratings\.csv, row 1, column 'movieId': value is missing"),
    ("1,1,-4.0,5\n", r"ratings\.csv, row 0, column 'rating': weight is -4\.0"),
    ("", r"ratings\.csv: no ratings in the file"),
])
def test_bad_ratings_file(tmp_path, body, pattern):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + body)
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n1,A,Drama\n")
    with pytest.raises(DataError, match=pattern):
        load_movielens(tmp_path)


def test_empty_ratings_file(tmp_path):
    (tmp_path / "ratings.csv").write_text("")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n1,A,Drama\n")
    with pytest.raises(DataError, match=r"ratings\.csv: the file is empty"):
        load_movielens(tmp_path)


def test_bad_u_data_row(tmp_path):
    d = _ml100k_dir(tmp_path, with_genre_file=False)
    (d / "u.data").write_text("1\t10\t5\t100\n2\t10\t3\tnoon\n")
    with pytest.raises(DataError, match=r"u\.data, row 1, column 'timestamp': 'noon' is not an integer"):
        load_movielens(d)


def test_missing_ratings_column(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,timestamp\n1,1,5\n")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n1,A,Drama\n")
    with pytest.raises(DataError, match=r"ratings\.csv: missing column\(s\) \['rating'\]; found \['userId', 'movieId', 'timestamp'\]"):
        load_movielens(tmp_path)


# ---------------------------------------------------------------------- synthetic
def test_synthetic_shape_and_basic_invariants():
    d = synthetic(500, 300, 10_000, seed=1)
    assert (d.n_users, d.n_items, d.nnz) == (500, 300, 10_000)
    assert d.user_map.ids.tolist() == list(range(500)) and d.item_map.ids.tolist() == list(range(300))
    counts = np.diff(d.matrix.indptr)
    assert counts.min() >= 1
    # no duplicate (user, item) pairs: indices strictly increase within every row
    rows = d.row_of_nnz()
    same_row = rows[1:] == rows[:-1]
    assert np.all(np.diff(d.matrix.indices)[same_row] > 0)
    assert np.all(d.matrix.data == 1.0) and d.ratings is None
    assert d.timestamps is not None and d.timestamps.min() >= 1_500_000_000


def test_synthetic_deterministic_per_seed():
    a, b, c = synthetic(300, 200, 5000, seed=7), synthetic(300, 200, 5000, seed=7), synthetic(300, 200, 5000, seed=8)
    assert np.array_equal(a.matrix.indptr, b.matrix.indptr) and np.array_equal(a.matrix.indices, b.matrix.indices)
    assert np.array_equal(a.timestamps, b.timestamps)
    assert not (np.array_equal(a.matrix.indptr, c.matrix.indptr) and np.array_equal(a.matrix.indices, c.matrix.indices))


def test_synthetic_power_law_skew():
    d = synthetic(5000, 2000, 100_000, seed=0)
    pop = np.sort(np.bincount(d.matrix.indices, minlength=d.n_items))[::-1]
    top1 = pop[:20].sum() / pop.sum()  # top 1% of items
    flat = synthetic(5000, 2000, 100_000, seed=0, item_alpha=0.0, user_alpha=0.0)
    flat_pop = np.sort(np.bincount(flat.matrix.indices, minlength=flat.n_items))[::-1]
    assert top1 > 0.10 and top1 > 5 * flat_pop[:20].sum() / flat_pop.sum()
    act = np.sort(np.diff(d.matrix.indptr))[::-1]
    flat_act = np.sort(np.diff(flat.matrix.indptr))[::-1]
    assert act[:50].sum() > 2 * flat_act[:50].sum()  # top 1% of users are far more active


def test_synthetic_ratings_and_no_timestamps():
    d = synthetic(100, 50, 1000, seed=2, ratings=True, with_timestamps=False)
    assert d.timestamps is None
    assert set(np.unique(d.ratings)) <= {1.0, 2.0, 3.0, 4.0, 5.0} and np.array_equal(d.ratings, d.matrix.data)


def test_synthetic_dense_request_fills_every_cell():
    d = synthetic(20, 10, 200, seed=3)
    assert d.nnz == 200 and d.matrix.toarray().min() == 1.0


@pytest.mark.parametrize("args, pattern", [
    ((10, 5, 5), r"nnz must be an integer >= 10 and <= 50, got 5"),
    ((2, 2, 5), r"nnz must be an integer >= 2 and <= 4, got 5"),
    ((0, 5, 5), r"n_users must be an integer >= 1 and <= 2147483647, got 0"),
    ((5, -1, 5), r"n_items must be an integer >= 1"),
    ((5.5, 5, 5), r"n_users must be an integer .*got 5.5"),
    ((5, 5, 5, "7"), r"seed must be an integer >= 0, got '7'"),
])
def test_synthetic_bad_arguments(args, pattern):
    with pytest.raises(ParameterError, match=pattern):
        synthetic(*args)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3000), st.floats(0.0, 2.5), st.integers(0, 2**32 - 1))
def test_guide_table_sampler_equals_searchsorted(n, alpha, seed):
    from recsys_fast.datasets import _inverse_cdf_sampler

    cdf = np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -alpha)
    cdf /= cdf[-1]
    u = np.random.default_rng(seed).random(5000)
    u[:3] = [0.0, np.nextafter(1.0, 0.0), cdf[0]]  # the edges and an exact step
    want = np.minimum(np.searchsorted(cdf, u, side="right"), n - 1)
    assert np.array_equal(_inverse_cdf_sampler(cdf)(u), want)
