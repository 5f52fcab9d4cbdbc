import json

import numpy as np
import pytest

from recsys_fast import bundle
from recsys_fast.data.interactions import Interactions
from recsys_fast.errors import BundleError
from recsys_fast.models.popularity import Popularity
from recsys_fast.models.registry import load


@pytest.fixture
def saved(tmp_path):
    data = Interactions.from_arrays(["a", "a", "b", "c"], [1, 2, 2, 3])
    return Popularity().fit(data).save(tmp_path / "model")


def test_manifest_lists_every_file_with_hash(saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["kind"] == "popularity" and manifest["format_version"] == bundle.FORMAT_VERSION
    files = {p.name for p in saved.iterdir()} - {"manifest.json"}
    assert files == set(manifest["files"])
    assert all(len(e["sha256"]) == 64 for e in manifest["files"].values())


def test_truncated_file_rejected(saved):
    target = saved / "item_scores.npy"
    target.write_bytes(target.read_bytes()[:-4])
    with pytest.raises(BundleError, match="truncated"):
        load(saved)


def test_missing_file_rejected(saved):
    (saved / "seen_data.npy").unlink()
    with pytest.raises(BundleError, match="missing"):
        load(saved)


def test_foreign_directory_rejected(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        load(tmp_path / "x")
    (tmp_path / "x" / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(BundleError, match="not a recsys_fast bundle"):
        load(tmp_path / "x")
    (tmp_path / "x" / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load(tmp_path / "x")


def test_unknown_kind_and_version_rejected(saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["kind"] = "mystery"
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="mystery"):
        load(saved)
    manifest["kind"], manifest["format_version"] = "popularity", 99
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="version 99"):
        load(saved)


def test_object_arrays_refused_and_target_untouched(tmp_path):
    with pytest.raises(BundleError, match="pickle"):
        bundle.write_bundle(tmp_path / "b", "popularity", {}, {"x": np.array([object()])})
    assert not (tmp_path / "b").exists()
    assert list(tmp_path.iterdir()) == [], "failed saves leave no temporary directory behind"


def test_overwrite_replaces_bundle_but_not_foreign_dirs(saved, tmp_path):
    data = Interactions.from_arrays(["z"], [9])
    Popularity().fit(data).save(saved)
    assert load(saved).item_map_.ids.tolist() == [9]
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="refusing to overwrite"):
        Popularity().fit(data).save(tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_unexpected_parameter_rejected(saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["params"]["evil"] = 1
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="evil"):
        load(saved)
