"""Model bundles: a directory with ``manifest.json`` and ``.npy`` arrays; never pickle.

The manifest records the format version, the model kind, its parameters, free-form metadata
and the sha256 and size of every file. Saving writes into a temporary sibling directory and
renames it into place, so a crash never leaves a half-written bundle under the target name.
Loading checks every hash before any array is trusted. Depends on numpy only, so serving and
batch runtimes can read bundles without torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import BundleError

FORMAT_NAME = "recsys_fast.bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def write_bundle(path, kind: str, params: dict, arrays: dict[str, np.ndarray], meta: dict | None = None,
                 files: dict[str, bytes] | None = None) -> Path:
    """Atomically write a bundle at ``path`` (replacing an existing bundle there).

    ``arrays`` are saved as ``<name>.npy`` (object arrays are refused: they would need pickle);
    ``files`` are raw extra files (e.g. ``model.onnx``) stored byte for byte; their names may hold
    sub-folders (``components/0/manifest.json``: a bundle of bundles), every file hashed here.
    """
    path = Path(path)
    if path.exists() and not (path / MANIFEST).is_file():
        raise BundleError(f"{path} exists and is not a recsys_fast bundle; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        entries = {}
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            if arr.dtype.hasobject:
                raise BundleError(f"array {name!r} has dtype object; bundles never use pickle")
            fname = f"{name}.npy"
            np.save(tmp / fname, arr, allow_pickle=False)
            entries[fname] = _describe(tmp / fname)
        for fname, data in (files or {}).items():
            parts = Path(fname).parts
            if not parts or Path(fname).is_absolute() or ".." in parts:
                raise BundleError(f"file name {fname!r} must be a relative path inside the bundle")
            (tmp / fname).parent.mkdir(parents=True, exist_ok=True)  # "components/0/...": nested bundles
            (tmp / fname).write_bytes(data)
            entries[fname] = _describe(tmp / fname)
        manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "kind": kind,
                    "params": params, "meta": meta or {}, "files": entries}
        with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True, default=_json_default)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "b")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_manifest(path) -> dict:
    """Parse and check the manifest of the bundle at ``path`` and the hashes of its files."""
    path = Path(path)
    mpath = path / MANIFEST
    if not path.exists():
        raise BundleError(f"{path}: no such path (expected a bundle directory written by model.save)")
    if not mpath.is_file():
        raise BundleError(f"{path} is not a recsys_fast bundle: no {MANIFEST}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath} is not valid JSON ({exc}); the bundle is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{mpath} is not a recsys_fast bundle manifest (format={manifest.get('format')!r})"
                          if isinstance(manifest, dict) else f"{mpath} is not a recsys_fast bundle manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format version {version!r}; this recsys_fast reads version "
                          f"{FORMAT_VERSION}")
    for fname, entry in manifest.get("files", {}).items():
        fpath = path / fname
        if not fpath.is_file():
            raise BundleError(f"{path}: file {fname} listed in the manifest is missing")
        actual = _describe(fpath)
        if actual["size"] != entry.get("size"):
            raise BundleError(f"{path}: file {fname} has {actual['size']} bytes, the manifest says "
                              f"{entry.get('size')} (truncated or replaced)")
        if actual["sha256"] != entry.get("sha256"):
            raise BundleError(f"{path}: file {fname} does not match its sha256 in the manifest (tampered or damaged)")
    return manifest


def load_array(path, name: str, manifest: dict) -> np.ndarray:
    """Load one array of a checked bundle, with pickle disabled."""
    fname = f"{name}.npy"
    if fname not in manifest["files"]:
        raise BundleError(f"{path}: bundle has no array {name!r}")
    try:
        return np.load(Path(path) / fname, allow_pickle=False)
    except ValueError as exc:
        raise BundleError(f"{path}: array {name!r} could not be read ({exc})") from None


def _describe(fpath: Path) -> dict:
    h = hashlib.sha256()
    with open(fpath, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return {"sha256": h.hexdigest(), "size": fpath.stat().st_size}


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a manifest")
