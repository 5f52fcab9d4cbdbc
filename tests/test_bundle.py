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


def rewrite(path, manifest, sign=True):
    """Write a changed manifest, re-signed as a tool that knows the digest would (``sign``)."""
    if sign:
        manifest[bundle.DIGEST] = bundle.manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


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
    with pytest.raises(BundleError, match="nope: no such path"):
        load(tmp_path / "nope")
    (tmp_path / "x" / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(BundleError, match="not a recsys_fast bundle"):
        load(tmp_path / "x")
    (tmp_path / "x" / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load(tmp_path / "x")


def test_unknown_kind_and_version_rejected(saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["kind"] = "mystery"
    rewrite(saved, manifest)
    with pytest.raises(BundleError, match="mystery"):
        load(saved)
    manifest["kind"], manifest["format_version"] = "popularity", 99
    rewrite(saved, manifest)
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
    rewrite(saved, manifest)
    with pytest.raises(BundleError, match="evil"):
        load(saved)


@pytest.mark.parametrize("edit", [
    lambda m: m["params"].update(weighting="sum"),
    lambda m: m["meta"].update(created="1999-01-01T00:00:00+00:00"),
    lambda m: m["files"].pop("item_scores.npy"),
    lambda m: m.pop("digest"),
])
def test_edited_manifest_rejected_by_its_digest(saved, edit):
    manifest = json.loads((saved / "manifest.json").read_text())
    edit(manifest)
    rewrite(saved, manifest, sign=False)
    with pytest.raises(BundleError, match="digest"):
        load(saved)


def _resigned_param_edit(model, path, name, value):
    """Save ``model`` at ``path``, set one parameter in its manifest and re-sign it."""
    path = model.save(path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["params"][name] = value
    rewrite(path, manifest)
    return path


def test_resigned_invalid_parameters_are_bundle_errors(tmp_path):
    from recsys_fast import ItemKNN

    model = ItemKNN(k=5).fit(Interactions.from_arrays([1, 1, 2, 2, 3], [1, 2, 1, 3, 2]))
    path = _resigned_param_edit(model, tmp_path / "knn", "k", 0)
    with pytest.raises(BundleError, match=r"do not make a ItemKNN \(ParameterError: k must be an integer >= 1"):
        load(path)


def test_resigned_network_shape_edit_is_a_bundle_error(tmp_path):
    pytest.importorskip("torch")
    from recsys_fast import BPRMF

    data = Interactions.from_arrays([1, 1, 2, 2, 3, 3], [1, 2, 1, 3, 2, 3])
    model = BPRMF(embedding_size=4, epochs=1, validation_fraction=0.0, seed=0).fit(data)
    path = _resigned_param_edit(model, tmp_path / "bpr", "embedding_size", 8)
    with pytest.raises(BundleError, match=r"stored as \(\d+, 4\) .* build \(\d+, 8\)"):
        load(path)


def test_bundle_permissions_follow_the_umask(saved):
    mask = bundle.umask()
    assert saved.stat().st_mode & 0o777 == 0o777 & ~mask
    for f in saved.iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f


def test_meta_records_version_time_and_data_fingerprint(saved):
    from datetime import datetime, timezone

    import recsys_fast

    meta = json.loads((saved / "manifest.json").read_text())["meta"]
    assert meta["library_version"] == recsys_fast.__version__
    created = datetime.fromisoformat(meta["created"])
    assert created.tzinfo is not None and abs((datetime.now(timezone.utc) - created).total_seconds()) < 600
    assert {k: meta["data"][k] for k in ("n_users", "n_items", "nnz")} == {"n_users": 3, "n_items": 3, "nnz": 4}
    other = Popularity().fit(Interactions.from_arrays(["a", "a", "b", "d"], [1, 2, 2, 3])).save(saved.parent / "o")
    other_meta = json.loads((other / "manifest.json").read_text())["meta"]
    assert other_meta["data"]["id_maps_sha256"] != meta["data"]["id_maps_sha256"]
