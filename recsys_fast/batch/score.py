"""``score``: every user's top-k written to one Parquet or CSV file, chunk by chunk, resumably.

A job scores its users in chunks of ``chunk_users`` through the index-level protocol
(``recommend_indices``), so memory is bounded by one chunk. Each finished chunk is written
atomically as an Arrow IPC file into ``<out>.part/`` next to the output, with a small
``journal.json`` holding the job's fingerprint (model + users + k + options). After a crash the
same call finds the journal, checks the fingerprint and scores only the chunks without a file; a
job with a different fingerprint starts over. When every chunk is there the output is assembled
from the chunk files in order (one Parquet row group per chunk), written aside and renamed into
place, and the ``.part`` directory is removed; so a killed and resumed job writes the same bytes
as an uninterrupted one.

Rows: ``user, rank, item, score`` in external ids, rank 1-based; padding (fewer than k items
qualify) is left out.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import validation
from ..errors import ParameterError
from .chunks import chunk_name, chunk_table, open_model, progress_bar, pyarrow_module, user_indices

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
JOB_VERSION = 1  # bump when the chunk files or the fingerprint change meaning
TARGET_CHUNK_ROWS = 1 << 20  # default chunk: about a million output rows


@dataclass(frozen=True)
class BatchResult:
    """What a batch job wrote: ``path`` (a file, or a Parquet dataset directory on Dask), users
    scored, rows written, wall seconds, bytes on disk, chunks in all and chunks found done."""

    path: Path
    n_users: int
    n_rows: int
    seconds: float
    bytes: int
    n_chunks: int
    resumed_chunks: int

    @property
    def users_per_second(self) -> float:
        return self.n_users / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        """One line: users, rows, seconds, users/s, output size."""
        resumed = f", {self.resumed_chunks}/{self.n_chunks} chunks resumed" if self.resumed_chunks else ""
        return (f"{self.n_users} users, {self.n_rows} rows in {self.seconds:.2f} s "
                f"({self.users_per_second:,.0f} users/s), {_size_text(self.bytes)} -> {self.path}{resumed}")


def score(model_or_bundle, users=None, k: int = 10, out="recs.parquet", exclude_seen: bool = True,
          chunk_users: int | None = None, resume: bool = True, client=None, progress: bool = True) -> BatchResult:
    """Write the top-``k`` items of ``users`` (external ids; None: every training user, in index
    order) to ``out``: Parquet (``.parquet``/``.pq``, a row group per chunk) or CSV (``.csv``).

    ``model_or_bundle``: a fitted model, a runtime from ``serving.load``, or a bundle path (loaded
    with ``serving.load``). ``exclude_seen`` drops each user's training items. ``chunk_users``:
    users per chunk (default: about a million output rows). ``resume``: pick up the chunks a
    killed run of the same job finished (False: start over). ``client``: a
    ``dask.distributed.Client``; the users are split over its workers, each loads the bundle
    (which must then be a path every worker can read) and writes its parts of a Parquet dataset,
    ``out`` being that directory. ``progress``: users scored, once the run lasts a few seconds (a bar
    on a terminal, log lines otherwise; ``recsys_fast.progress``); False: none.
    """
    t0 = time.perf_counter()
    k = validation.integer("k", k, minimum=1)
    exclude_seen = validation.boolean("exclude_seen", exclude_seen)
    resume = validation.boolean("resume", resume)
    chunk_users = validation.integer("chunk_users", chunk_users, minimum=1, allow_none=True)
    out = Path(out)
    fmt = "dataset" if client is not None else output_format(out)
    source = model_or_bundle
    model, model_fp = open_model(source)
    uidx = user_indices(model, users)
    if chunk_users is None:
        chunk_users = max(1, min(len(uidx), TARGET_CHUNK_ROWS // k)) if len(uidx) else 1
    chunks = [uidx[s:s + chunk_users] for s in range(0, len(uidx), chunk_users)]
    job = {"version": JOB_VERSION, "model": model_fp, "users": _array_digest(uidx), "k": k,
           "exclude_seen": exclude_seen, "chunk_users": chunk_users, "format": fmt, "n_chunks": len(chunks)}
    fingerprint = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()
    part = out.with_name(out.name + ".part")
    done = _open_part_dir(part, fingerprint, job, resume, suffix=".parquet" if client is not None else ".arrow")
    if client is not None:
        from .dist import score_on_cluster

        if not isinstance(source, (str, os.PathLike)):
            raise ParameterError("model_or_bundle", type(source).__name__, "a bundle path when client= is given",
                                 hint="each Dask worker loads the bundle itself: save the model (model.save(dir) "
                                      "or recsys_fast.export.to_onnx) to a path every worker reads and pass it")
        n_rows = score_on_cluster(client, str(Path(source).resolve()), model_fp, chunks, done, part, k,
                                  exclude_seen, progress)
        _finish_dataset(part, out)
    else:
        todo = [c for c in range(len(chunks)) if c not in done]
        with progress_bar(len(uidx), sum(len(chunks[c]) for c in done), progress) as bar:
            for c in todo:
                # no name holds the table: it is freed before the next chunk is scored
                _write_ipc(chunk_table(model, chunks[c], k, exclude_seen), part / chunk_name(c, ".arrow"))
                bar.update(len(chunks[c]))
        n_rows = _assemble(part, len(chunks), out, fmt)
        shutil.rmtree(part, ignore_errors=True)
    return BatchResult(out, len(uidx), n_rows, time.perf_counter() - t0, _disk_size(out), len(chunks), len(done))


# ---------------------------------------------------------------------- the pieces (shared with dist)
def output_format(out: Path) -> str:
    """``"parquet"`` or ``"csv"`` from the output file's extension; anything else is refused."""
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ParameterError("out", str(out), "a file name ending in .parquet, .pq or .csv",
                             hint="the extension chooses the format; pass client= for a Parquet dataset directory")
    return fmt










def _open_part_dir(part: Path, fingerprint: str, job: dict, resume: bool, suffix: str) -> set[int]:
    """Create or reuse the ``.part`` directory; return the chunks already done there."""
    journal = part / "_journal.json"
    if part.exists():
        same = False
        if resume and journal.is_file():
            try:
                same = json.loads(journal.read_text(encoding="utf-8")).get("fingerprint") == fingerprint
            except (json.JSONDecodeError, UnicodeDecodeError):
                same = False
        if same:
            return {c for c in range(job["n_chunks"]) if (part / chunk_name(c, suffix)).is_file()}
        if not journal.is_file() and any(part.iterdir()):
            raise ParameterError("out", str(part), "a path whose .part directory is recsys_fast's own",
                                 hint=f"{part} exists without a journal; move it away or choose another out")
        shutil.rmtree(part)  # another job's (or an unfinished earlier) parts: start over
    part.mkdir(parents=True)
    _atomic_bytes(journal, json.dumps({"fingerprint": fingerprint, **job}, indent=1, sort_keys=True).encode())
    return set()


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_ipc(table, path: Path) -> None:
    pa = pyarrow_module()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)


def _read_ipc(path: Path):
    pa = pyarrow_module()
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).read_all()


def _assemble(part: Path, n_chunks: int, out: Path, fmt: str) -> int:
    """Concatenate the chunk files, in order, into ``out`` (written aside, fsynced, renamed)."""
    pa = pyarrow_module()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    n_rows = 0
    writer = None
    try:
        for c in range(n_chunks):
            table = _read_ipc(part / chunk_name(c, ".arrow"))
            if writer is None:
                writer = _writer(tmp, table.schema, fmt)
            if len(table):
                if fmt == "parquet":
                    writer.write_table(table, row_group_size=len(table))
                else:
                    writer.write_table(table)
            n_rows += len(table)
            del table  # unmapped before the next chunk is read
        if writer is None:  # no users: an empty file with the columns
            schema = pa.schema([("user", pa.int64()), ("rank", pa.int32()), ("item", pa.int64()),
                                ("score", pa.float32())])
            writer = _writer(tmp, schema, fmt)
        writer.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:  # pragma: no cover - already failing
                pass
        tmp.unlink(missing_ok=True)
        raise
    return n_rows


def _writer(path: Path, schema, fmt: str):
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetWriter(str(path), schema, compression="snappy")
    import pyarrow.csv as pacsv

    return pacsv.CSVWriter(str(path), schema)


def _finish_dataset(part: Path, out: Path) -> None:
    """Turn the finished ``.part`` directory into the dataset directory ``out`` (rename; an old
    output there is moved aside first and removed after)."""
    (part / "_journal.json").unlink(missing_ok=True)
    if out.exists():
        if out.is_file():
            raise ParameterError("out", str(out), "a directory for a Dask job's Parquet dataset",
                                 hint=f"{out} is a file; remove it or choose another out")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(part, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(part, out)




def _array_digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr, dtype=np.int64).tobytes()).hexdigest()


def _disk_size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.exists() else 0


def _size_text(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover

