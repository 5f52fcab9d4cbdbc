"""Model bundles: a directory with ``manifest.json`` and ``.npy`` arrays; never pickle.

The manifest records the format version, the model kind, its parameters, free-form metadata
(``library_version``, ``created`` in UTC ISO 8601, the training ``data`` fingerprint and the
model's own) and the sha256 and size of every file, and ends in ``digest``: the sha256 of the
manifest's own canonical JSON (sorted keys, no spaces, ASCII) without the digest, so an edited
parameter is caught like an edited array. Saving writes into a temporary sibling directory and
renames it into place, so a crash never leaves a half-written bundle under the target name;
files and folders get the usual permissions (0666/0777 less the umask). Loading checks the
digest, the manifest's structure and every file's hash before any array is trusted; anything
wrong is a ``BundleError``. A bundle may hold other bundles in sub-folders (``Hybrid``): their
files are hashed by the outer manifest and each nested manifest checks itself when loaded.
Depends on numpy only, so serving and batch runtimes can read bundles without torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .errors import BundleError, RecsysError

FORMAT_NAME = "recsys_fast.bundle"
FORMAT_VERSION = 2  # 2: the manifest digest (format 1 manifests had none and are refused)
MANIFEST = "manifest.json"
DIGEST = "digest"


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
        from . import __version__

        meta = {"library_version": __version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **(meta or {})}
        manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "kind": kind,
                    "params": params, "meta": meta, "files": entries}
        manifest = json.loads(json.dumps(manifest, default=_json_default))  # plain JSON types, as read back
        manifest[DIGEST] = manifest_digest(manifest)
        with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700: a service user must be able to read it
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


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON, the ``digest`` entry left out: what ``digest``
    holds, and the identity of a bundle's whole content (it lists the sha256 of every file)."""
    body = {k: v for k, v in manifest.items() if k != DIGEST}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def data_fingerprint(user_ids: np.ndarray, item_ids: np.ndarray, nnz: int) -> dict:
    """What a model was trained on, for ``meta["data"]``: counts and a sha256 of the id maps."""
    h = hashlib.sha256()
    for ids in (user_ids, item_ids):
        arr = np.ascontiguousarray(ids)
        h.update(f"{arr.dtype.str}:{len(arr)};".encode())
        h.update(arr.tobytes())
    return {"n_users": int(len(user_ids)), "n_items": int(len(item_ids)), "nnz": int(nnz),
            "id_maps_sha256": h.hexdigest()}


def read_manifest(path) -> dict:
    """Parse and check the manifest of the bundle at ``path`` (digest, structure) and the hashes
    of its files; any problem is a ``BundleError`` saying what is wrong."""
    path = Path(path)
    mpath = path / MANIFEST
    if not path.exists():
        raise BundleError(f"{path}: no such path (expected a bundle directory written by model.save)")
    if not mpath.is_file():
        raise BundleError(f"{path} is not a recsys_fast bundle: no {MANIFEST}")
    try:
        manifest = json.loads(mpath.read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError, OSError) as exc:
        raise BundleError(f"{mpath} is not valid JSON ({' '.join(str(exc).split())[:200]}); the bundle is "
                          "damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{mpath} is not a recsys_fast bundle manifest (format={manifest.get('format')!r})"
                          if isinstance(manifest, dict) else f"{mpath} is not a recsys_fast bundle manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        old = " (format 1 manifests carry no digest: load the model with the recsys_fast that saved it and " \
              "save it again)" if version == 1 else ""
        raise BundleError(f"{path}: bundle format version {version!r}; this recsys_fast reads version "
                          f"{FORMAT_VERSION}{old}")
    if not isinstance(manifest.get(DIGEST), str):
        raise BundleError(f"{mpath} has no digest; the manifest is damaged or was written by hand")
    try:
        digest = manifest_digest(manifest)
    except (ValueError, TypeError, RecursionError):
        digest = None
    if digest != manifest[DIGEST]:
        raise BundleError(f"{mpath} does not match its digest: the manifest was edited (parameters, metadata or "
                          "file list) or damaged; save the model again instead of editing its bundle")
    _check_structure(path, manifest)
    for fname, entry in manifest["files"].items():
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


def _check_structure(path: Path, manifest: dict) -> None:
    """The manifest's fields have the types the readers rely on (a digest-valid manifest written
    by another tool could still lie)."""
    for key, kind in (("kind", str), ("params", dict), ("meta", dict), ("files", dict)):
        if not isinstance(manifest.get(key), kind):
            raise BundleError(f"{path}: manifest field {key!r} must be a {kind.__name__}, got "
                              f"{type(manifest.get(key)).__name__}")
    for fname, entry in manifest["files"].items():
        parts = Path(fname).parts
        if not parts or Path(fname).is_absolute() or ".." in parts or fname == MANIFEST:
            raise BundleError(f"{path}: manifest lists a file {fname!r} outside the bundle")
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("size"), int) and not isinstance(entry.get("size"), bool)):
            raise BundleError(f"{path}: manifest entry of {fname!r} must hold a sha256 and a size")


@contextmanager
def building(path, what: str):
    """Around turning a checked manifest into an object: any error is a ``BundleError``. The
    hashes held, so the content was written by a tool rather than by ``save``, and its parameters,
    metadata or arrays do not make a ``what``."""
    try:
        yield
    except BundleError:
        raise
    except (RecsysError, ValueError, TypeError, KeyError, IndexError, RuntimeError, AttributeError) as exc:
        raise BundleError(f"{path}: the bundle's contents do not make a {what} "
                          f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from exc


def load_array(path, name: str, manifest: dict) -> np.ndarray:
    """Load one array of a checked bundle into memory, with pickle disabled. The bytes it is built
    from are hashed as they are read and must match the manifest: a file changed after
    ``read_manifest`` checked it (a bundle rewritten under a service that reloads it) is a
    ``BundleError``, never an array of other bytes. Nothing is memory-mapped, so a loaded model
    does not change when its files are overwritten, truncated or deleted afterwards."""
    fname = f"{name}.npy"
    if fname not in manifest["files"]:
        raise BundleError(f"{path}: bundle has no array {name!r}")
    problem = None
    try:
        with open(Path(path) / fname, "rb") as fh:
            reader = _HashingReader(fh)
            try:
                version = np.lib.format.read_magic(reader)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(reader)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(reader)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
                if dtype.hasobject:
                    raise ValueError("dtype object (bundles never use pickle)")
                count = math.prod(shape)
                left = os.fstat(fh.fileno()).st_size - reader.size
                if count * dtype.itemsize > left:  # checked before allocating: a header may promise anything
                    raise EOFError(f"the header promises {count * dtype.itemsize} bytes of data, the file holds {left}")
                flat = np.empty(count, dtype=dtype)
                if count and dtype.itemsize:
                    reader.read_into(flat.view(np.uint8))
            except (ValueError, EOFError) as exc:
                problem = exc
            reader.read_rest()  # hashed to the end: a changed file is reported as changed
    except OSError as exc:
        raise BundleError(f"{path}: array {name!r} could not be read ({exc})") from None
    _check_read(path, fname, manifest, reader)
    if problem is not None:
        raise BundleError(f"{path}: array {name!r} could not be read ({problem})")
    return flat.reshape(shape, order="F" if fortran else "C")


def read_file(path, fname: str, manifest: dict) -> bytes:
    """The bytes of file ``fname`` of a checked bundle, hashed as read and checked against the
    manifest like ``load_array``'s."""
    if fname not in manifest["files"]:
        raise BundleError(f"{path}: bundle has no file {fname}")
    try:
        data = (Path(path) / fname).read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: file {fname} could not be read ({exc})") from None
    reader = _HashingReader(None)
    reader.update(data)
    _check_read(path, fname, manifest, reader)
    return data


class _HashingReader:
    """A binary file read through ``read``/``read_into``, its bytes hashed and counted on the way."""

    def __init__(self, fh):
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def update(self, data) -> None:
        self.sha.update(data)
        self.size += len(data)

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.update(data)
        return data

    def read_into(self, buffer: np.ndarray) -> None:
        view = memoryview(buffer)
        got = 0
        while got < len(view):
            n = self.fh.readinto(view[got:])
            if not n:
                raise EOFError(f"the file ends after {self.size + got} bytes, before the array's data does")
            got += n
        self.update(view)

    def read_rest(self) -> None:
        for chunk in iter(lambda: self.fh.read(1 << 20), b""):
            self.update(chunk)


def _check_read(path, fname: str, manifest: dict, reader: _HashingReader) -> None:
    entry = manifest["files"][fname]
    if reader.size != entry.get("size") or reader.sha.hexdigest() != entry.get("sha256"):
        raise BundleError(f"{path}: file {fname} changed after the manifest was checked (its bytes no longer match "
                          "their sha256): the bundle was modified while it was being loaded; load it again once "
                          "it is complete")


def digest(kind: str, params: dict, arrays: dict[str, np.ndarray], extra=()) -> str:
    """sha256 hex digest of a model's content: kind, parameters (as JSON) and each array's name,
    dtype, shape and bytes, in name order; ``extra``: further digests to chain (components)."""
    h = hashlib.sha256()
    h.update(json.dumps({"kind": kind, "params": params}, sort_keys=True, default=_json_default).encode())
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        if arr.dtype.hasobject:
            raise BundleError(f"array {name!r} has dtype object and cannot be fingerprinted")
        h.update(f"\0{name}\0{arr.dtype.str}\0{arr.shape}\0".encode())
        h.update(memoryview(arr).cast("B") if arr.size else b"")
    for part in extra:
        h.update(str(part).encode())
    return h.hexdigest()


def _describe(fpath: Path) -> dict:
    h = hashlib.sha256()
    with open(fpath, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return {"sha256": h.hexdigest(), "size": fpath.stat().st_size}


def umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` alone would
    set it for a moment under other threads' feet)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a manifest")
