"""``recsys-fast train --model content_knn|hybrid`` with item features and ``recsys-fast update``,
in-process through ``main(argv)`` on ml-latest-small (titles, genres, tags)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_fast.cli import main
from recsys_fast.models.registry import load


@pytest.fixture(scope="module")
def ml_small_files(ml_latest_small_path):
    return ml_latest_small_path / "ratings.csv", ml_latest_small_path / "movies.csv", \
        ml_latest_small_path / "tags.csv"


def _train(ratings, movies, tags, out, model, *extra):
    return main(["train", str(ratings), "--user-col", "userId", "--item-col", "movieId", "--weight-col", "rating",
                 "--model", model, "--item-features", str(movies), "--text", "title", "--multi-label", "genres=|",
                 "--tags", str(tags), "--param", "k=20", *extra, "--out", str(out)])


def test_train_content_knn_with_titles_genres_tags(ml_small_files, tmp_path, capsys):
    ratings, movies, tags = ml_small_files
    assert _train(ratings, movies, tags, tmp_path / "c", "content_knn") == 0
    model = load(tmp_path / "c")
    names = set(model.feature_names_.tolist())
    assert any(n.startswith("genres") for n in names) and any(n.startswith("tags") for n in names)
    assert any(n.startswith("title") for n in names)
    # every movie of movies.csv is in the item map, rated or not (cold items)
    assert len(model.item_map_) == len(pd.read_csv(movies))
    toy_story = model.similar_items([1], k=5).ids[0]
    assert 3114 in toy_story  # Toy Story 2 (1999) shares title words, genres and tags
    assert main(["recommend", str(tmp_path / "c"), "--users", "1", "--k", "5"]) == 0


def test_train_hybrid_and_missing_features(ml_small_files, tmp_path, capsys):
    ratings, movies, tags = ml_small_files
    assert _train(ratings, movies, tags, tmp_path / "h", "hybrid", "--param", "weights=[0.7,0.3]") == 0
    model = load(tmp_path / "h")
    assert [c.kind for c in model.components_] == ["item_knn", "content_knn"]
    assert model.weights_ == pytest.approx((0.7, 0.3))
    capsys.readouterr()
    assert main(["train", str(ratings), "--user-col", "userId", "--item-col", "movieId", "--model", "content_knn",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--model: content_knn needs item features" in capsys.readouterr().err
    code = main(["train", str(ratings), "--user-col", "userId", "--item-col", "movieId", "--model", "content_knn",
                 "--item-features", str(movies), "--text", "no_such_column", "--out", str(tmp_path / "x")])
    assert code == 2 and "no_such_column" in capsys.readouterr().err


def test_update_command_equals_training_on_everything(ml_latest_small_path, tmp_path, capsys):
    events = pd.read_csv(ml_latest_small_path / "ratings.csv")
    rng = np.random.default_rng(0)
    late = rng.random(len(events)) < 0.01
    late |= (events["userId"] == events["userId"].max()).to_numpy()  # a user only the new events know
    old_csv, new_csv, all_csv = tmp_path / "old.csv", tmp_path / "new.csv", tmp_path / "all.csv"
    events[~late].to_csv(old_csv, index=False)
    events[late].to_csv(new_csv, index=False)
    pd.concat([events[~late], events[late]]).to_csv(all_csv, index=False)
    cols = ["--user-col", "userId", "--item-col", "movieId", "--weight-col", "rating"]
    assert main(["train", str(old_csv), *cols, "--model", "item_knn", "--param", "k=30",
                 "--out", str(tmp_path / "v1")]) == 0
    assert main(["update", str(tmp_path / "v1"), "--events", str(new_csv), *cols, "--out", str(tmp_path / "v2")]) == 0
    assert "rows changed / merged / recomputed" in capsys.readouterr().out
    assert main(["train", str(all_csv), *cols, "--model", "item_knn", "--param", "k=30",
                 "--out", str(tmp_path / "ref")]) == 0
    updated, ref = load(tmp_path / "v2"), load(tmp_path / "ref")
    np.testing.assert_array_equal(updated.graph_.data, ref.graph_.data)
    np.testing.assert_array_equal(updated.graph_.indices, ref.graph_.indices)
    users = ref.user_map_.ids
    np.testing.assert_array_equal(updated.recommend(users, k=10).ids, ref.recommend(users, k=10).ids)
    assert main(["update", str(tmp_path / "v1"), "--events", str(tmp_path / "nope.csv"), *cols,
                 "--out", str(tmp_path / "v3")]) == 2
