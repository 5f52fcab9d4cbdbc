"""Data sets: find them on disk, read MovieLens folders, generate synthetic interactions.

``find_dataset(name)`` is the one place that knows where data lives. ``load_movielens`` reads
the ml-100k layout (``u.data``, ``u.item``), the ml-1m/ml-10m layout (``ratings.dat``,
``movies.dat``) and the ml-latest/ml-25m CSV layout (``ratings.csv``, ``movies.csv``).
``synthetic`` draws power-law data at any size for scale benches.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import validation
from .errors import DataError
from .data.idmap import IdMap
from .data.interactions import Interactions

#: The largest n_users, n_items and nnz of ``synthetic`` (int32 indices; 2**31 - 1).
MAX_SYNTHETIC_SIZE = 2**31 - 1

#: The 19 genres of ml-100k in flag order (used when ``u.genre`` is absent).
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")
NO_GENRES = "(no genres listed)"  # ml-latest's own marker, reused for ml-100k items without a flag

_LAYOUTS = {  # name: (ratings file, items file)
    "ml-100k": ("u.data", "u.item"),
    "ml-1m": ("ratings.dat", "movies.dat"),
    "ml-latest": ("ratings.csv", "movies.csv"),
}


# ---------------------------------------------------------------------- finding data
def dataset_search_path(name: str) -> list[Path]:
    """The folders ``find_dataset(name)`` looks at, in order."""
    paths = []
    env = os.environ.get("RECSYS_FAST_DATA")
    if env:
        paths += [Path(p) / name for p in env.split(os.pathsep) if p]
    repo = Path(__file__).resolve().parents[1]  # recsys_fast/datasets.py -> repository root
    paths += [repo / "data" / name, repo.parent / "shared" / "data" / name, Path.cwd() / "data" / name]
    return paths


def find_dataset(name: str) -> Path | None:
    """The first existing folder named ``name`` among: each entry of ``$RECSYS_FAST_DATA``
    (``os.pathsep``-separated), ``<repo>/data``, ``<repo>/../shared/data``, ``./data``; else None.
    """
    for path in dataset_search_path(name):
        if path.is_dir():
            return path
    return None


# ---------------------------------------------------------------------- MovieLens
def load_movielens(path, min_rating: float | None = None, duplicates: str = "last"):
    """Read a MovieLens folder; return ``(Interactions, items)``.

    ``path`` is a folder or a data set name (``"ml-100k"``, ``"ml-latest-small"``) resolved by
    ``find_dataset``. Interactions hold the rating as weight (also kept in ``ratings``) and the
    Unix timestamp; ``min_rating`` turns them into implicit feedback and ``duplicates`` resolves
    repeated (user, movie) pairs, both as in ``Interactions.from_arrays``.
    ``items`` is a DataFrame with columns ``item`` (the MovieLens movie id, int64), ``title`` and
    ``genres`` (``|``-joined names) for every movie in the catalogue file, rated or not.
    """
    folder = _resolve_folder(path)
    layout = _detect_layout(folder)
    ratings_file, items_file = (folder / f for f in _LAYOUTS[layout])
    if layout == "ml-latest":
        names = ("userId", "movieId", "rating", "timestamp")  # the file's header
        cols = _read_delimited(ratings_file, ",", names, header=True)
        items = _read_ml_latest_items(items_file)
    else:  # no header: fields named as in the data sets' READMEs
        names = ("user", "item", "rating", "timestamp")
        cols = _read_delimited(ratings_file, "\t" if layout == "ml-100k" else "::", names)
        items = _read_ml100k_items(items_file, folder / "u.genre") if layout == "ml-100k" \
            else _read_ml1m_items(items_file)
    data = Interactions.from_arrays(*cols, min_rating=min_rating, duplicates=duplicates,
                                    source=str(ratings_file), columns=names)
    return data, items


def _resolve_folder(path) -> Path:
    p = Path(path)
    if p.is_dir():
        return p
    name = str(path)
    if os.sep not in name and "/" not in name:
        found = find_dataset(name)
        if found is not None:
            return found
        looked = ", ".join(str(x) for x in dataset_search_path(name))
        raise DataError(f"data set {name!r} not found; looked in: {looked} "
                        "(set RECSYS_FAST_DATA to the folder that holds it)", source=name)
    raise DataError("MovieLens folder not found", source=str(p))


def _detect_layout(folder: Path) -> str:
    for layout, files in _LAYOUTS.items():
        if (folder / files[0]).is_file():
            missing = [f for f in files if not (folder / f).is_file()]
            if missing:
                raise DataError(f"{layout} layout is missing {', '.join(missing)}", source=str(folder))
            return layout
    expected = "; ".join(f"{a} + {b} ({layout})" for layout, (a, b) in _LAYOUTS.items())
    found = sorted(x.name for x in folder.iterdir())[:20]
    raise DataError(f"unrecognised MovieLens layout: expected {expected}; found {found}", source=str(folder))


def _read_delimited(path: Path, sep: str, names: tuple[str, ...], header: bool = False):
    """Four numeric columns (user, item, rating, timestamp) with pyarrow's multithreaded CSV reader.

    On a value that does not parse, the file is read again as text to name its row and column.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    data = None
    if len(sep) > 1:  # '::' files: pyarrow takes one-byte delimiters, so swap the separator in memory
        data = path.read_bytes().replace(sep.encode(), b"\t")
        sep = "\t"
    if header:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            found = [c.strip().strip('"') for c in fh.readline().rstrip("\r\n").split(sep)]
        missing = [c for c in names if c not in found]
        if found == [""]:
            raise DataError("the file is empty", source=str(path))
        if missing:
            raise DataError(f"missing column(s) {missing}; found {found}", source=str(path))

    def read(types):
        return pcsv.read_csv(
            pa.BufferReader(data) if data is not None else str(path),
            read_options=pcsv.ReadOptions(column_names=None if header else list(names)),
            parse_options=pcsv.ParseOptions(delimiter=sep),
            convert_options=pcsv.ConvertOptions(column_types=types, include_columns=list(names)))

    kinds = dict(zip(names, "iifi"))
    try:
        table = read({n: pa.int64() if k == "i" else pa.float64() for n, k in kinds.items()})
    except (pa.ArrowInvalid, pa.ArrowKeyError) as exc:
        try:
            text = read({n: pa.string() for n in names})
        except (pa.ArrowInvalid, pa.ArrowKeyError):
            raise DataError(f"could not parse: {exc}", source=str(path)) from None
        _raise_first_bad_value(text, kinds, path)
        raise DataError(f"could not parse: {exc}", source=str(path)) from None
    if table.num_rows == 0:
        raise DataError("no ratings in the file", source=str(path))
    out = []
    for name in names:
        col = table.column(name)
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError("value is missing", source=str(path), row=row, column=name)
        out.append(col.to_numpy())
    return out


def _raise_first_bad_value(text_table, kinds: dict, path: Path) -> None:
    """Raise a DataError for the first value (by row) that is not an integer/number as ``kinds`` wants."""
    import pandas as pd

    first = None
    for name, kind in kinds.items():
        raw = pd.Series(text_table.column(name).to_numpy(zero_copy_only=False), dtype=object)
        num = pd.to_numeric(raw, errors="coerce")
        bad = (num.isna() & raw.notna() & (raw.astype(str).str.strip() != "")).to_numpy()
        if kind == "i":
            bad = bad | (num.notna() & (num != num.round())).to_numpy()
        if bad.any():
            row = int(bad.argmax())
            if first is None or row < first[0]:
                first = (row, name, raw.iloc[row], kind)
    if first is not None:
        row, name, value, kind = first
        want = "an integer" if kind == "i" else "a number"
        raise DataError(f"{value!r} is not {want}", source=str(path), row=row, column=name)


def _read_ml_latest_items(path: Path):
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype={"movieId": "int64", "title": "string", "genres": "string"},
                         usecols=["movieId", "title", "genres"], keep_default_na=False)
    except ValueError as exc:
        raise DataError(f"could not read movies: {exc}", source=str(path)) from None
    return _items_frame(df["movieId"].to_numpy(), df["title"], df["genres"])


def _read_ml1m_items(path: Path):
    import io

    import pandas as pd

    raw = path.read_bytes()
    try:  # ml-10m is UTF-8, ml-1m Latin-1
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = text.replace("::", "\t")
    df = pd.read_csv(io.StringIO(text), sep="\t", header=None, names=["item", "title", "genres"],
                     dtype={"item": "int64", "title": "string", "genres": "string"}, quoting=3,
                     keep_default_na=False)
    return _items_frame(df["item"].to_numpy(), df["title"], df["genres"])


def _read_ml100k_items(path: Path, genre_path: Path):
    import pandas as pd

    genres = list(ML100K_GENRES)
    if genre_path.is_file():
        g = pd.read_csv(genre_path, sep="|", header=None, names=["name", "index"], encoding="latin-1")
        g = g.dropna()
        genres = list(g.sort_values("index")["name"].astype(str))
    n_flags = len(genres)
    names = ["item", "title", "release", "video_release", "url"] + [f"g{i}" for i in range(n_flags)]
    df = pd.read_csv(path, sep="|", header=None, names=names, encoding="latin-1", quoting=3,
                     dtype={"item": "int64", "title": "string"}, keep_default_na=False)
    flags = df[names[5:]].to_numpy(dtype=np.int8).astype(bool)
    labels = np.array(genres, dtype=object)
    joined = ["|".join(labels[row]) or NO_GENRES for row in flags]
    return _items_frame(df["item"].to_numpy(), df["title"], pd.Series(joined, dtype="string"))


def _items_frame(ids, titles, genres):
    import pandas as pd

    df = pd.DataFrame({"item": np.asarray(ids, dtype=np.int64), "title": titles.to_numpy(),
                       "genres": genres.to_numpy()})
    return df.sort_values("item", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------- synthetic
def synthetic(n_users: int, n_items: int, nnz: int, seed: int = 0, *, item_alpha: float = 1.0,
              user_alpha: float = 0.5, with_timestamps: bool = True, ratings: bool = False,
              start: int = 1_500_000_000, span: int = 365 * 86400, max_rounds: int = 12) -> Interactions:
    """Random implicit interactions with power-law item popularity and user activity.

    Item ``r``-th by popularity is drawn with probability proportional to ``(r + 1) ** -item_alpha``,
    user ``r``-th by activity gets a share ``(r + 1) ** -user_alpha`` of the interactions; which
    ids are popular/active is a random permutation. Ids are the integers ``0..n_users-1`` and
    ``0..n_items-1`` and the matrix is exactly ``n_users x n_items``.

    Each user gets ``1 + Multinomial(nnz - n_users, activity)`` draws (capped at ``n_items``), so
    every user has at least one interaction. Draws repeating a (user, item) pair are dropped and
    re-drawn for the missing ones, up to ``max_rounds`` rounds; when a user's quota comes close to
    the catalogue under strong skew a few may stay missing, so ``nnz`` of the result is at most,
    and normally exactly, the request. Items may end up with no interaction (the far tail).
    Weights are 1.0 (or integer ratings 1..5 with ``ratings=True``, also kept in ``ratings``);
    timestamps are uniform in ``[start, start + span)``. Deterministic for a seed (NumPy PCG64).
    """
    n_users = validation.integer("n_users", n_users, minimum=1, maximum=MAX_SYNTHETIC_SIZE)
    n_items = validation.integer("n_items", n_items, minimum=1, maximum=MAX_SYNTHETIC_SIZE)
    nnz = validation.integer("nnz", nnz, minimum=n_users, maximum=min(n_users * n_items, MAX_SYNTHETIC_SIZE))
    item_alpha = validation.number("item_alpha", item_alpha, minimum=0.0)
    user_alpha = validation.number("user_alpha", user_alpha, minimum=0.0)
    seed = validation.integer("seed", seed, minimum=0)
    for name, value in (("with_timestamps", with_timestamps), ("ratings", ratings)):
        validation.boolean(name, value)
    start = validation.integer("start", start)
    span = validation.integer("span", span, minimum=1)
    max_rounds = validation.integer("max_rounds", max_rounds, minimum=1)
    rng = np.random.default_rng(seed)

    item_cdf = np.cumsum(_zipf_weights(n_items, item_alpha))
    item_cdf /= item_cdf[-1]
    item_of_rank = rng.permutation(n_items).astype(np.int64)
    activity = _zipf_weights(n_users, user_alpha)[rng.permutation(n_users)]
    quota = 1 + rng.multinomial(nnz - n_users, activity / activity.sum())
    quota = _cap_and_spread(quota, n_items, activity)

    sample_rank = _inverse_cdf_sampler(item_cdf)

    def draw(users):
        return users * n_items + item_of_rank[sample_rank(rng.random(len(users)))]

    # Rounds of sequential sampling without replacement: each user short of its quota draws a
    # few more than it needs and keeps its first fresh items in draw order (so no bias to ids).
    keys = np.zeros(0, dtype=np.int64)
    have = np.zeros(n_users, dtype=np.int64)
    over = 0.15
    for _ in range(max_rounds):
        short = quota - have
        if not short.any():
            break
        n_draw = short + np.ceil(short * over).astype(np.int64)
        new = draw(np.repeat(np.arange(n_users, dtype=np.int64), n_draw))
        fresh = _first_occurrence(new) & ~_sorted_contains(keys, new)
        idx = np.flatnonzero(fresh)
        owner = new[idx] // n_items
        take = idx[_rank_in_group(owner) < short[owner]]  # idx is grouped by user, in draw order
        added = np.sort(new[take])
        have += np.bincount(added // n_items, minlength=n_users)
        keys = np.concatenate([keys, added])
        keys.sort(kind="stable")  # two sorted runs: a merge
        over = max(1.0, 2 * over)

    rows = keys // n_items
    cols = (keys - rows * n_items).astype(np.int32)
    m = len(keys)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    if ratings:
        weights = (rng.choice(5, size=m, p=[0.06, 0.11, 0.27, 0.34, 0.22]) + 1).astype(np.float32)
    else:
        weights = np.ones(m, dtype=np.float32)
    ts = rng.integers(start, start + span, size=m, dtype=np.int64) if with_timestamps else None
    # keys are sorted and unique, so the CSR is built directly (no second sort)
    matrix = sp.csr_matrix((weights, cols, indptr), shape=(n_users, n_items))
    matrix.has_sorted_indices = True
    return Interactions(matrix, IdMap(np.arange(n_users), "user"), IdMap(np.arange(n_items), "item"),
                        ts, weights.copy() if ratings else None)


def _inverse_cdf_sampler(cdf: np.ndarray):
    """``u -> searchsorted(cdf, u, side="right")`` for uniforms ``u`` in [0, 1), 3-4x faster.

    A guide table over ``M`` equal buckets (``M`` a power of two, so ``u * M`` and ``b / M`` are
    exact) gives the answer directly wherever a bucket holds no cdf step; only the rest
    are searched. The result is identical to the plain search.
    """
    n = len(cdf)
    m = 1 << min(23, max(4, int(np.ceil(np.log2(16 * n)))))
    guide = np.searchsorted(cdf, np.arange(m + 1, dtype=np.float64) / m, side="right")

    def sample(u: np.ndarray) -> np.ndarray:
        b = np.minimum((u * m).astype(np.int64), m - 1)  # u == 1.0 only from callers outside [0, 1)
        lo, hi = guide[b], guide[b + 1]
        need = np.flatnonzero(lo != hi)
        lo[need] = np.searchsorted(cdf, u[need], side="right")
        return np.minimum(lo, n - 1)

    return sample


def _zipf_weights(n: int, alpha: float) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.float64) ** -float(alpha)


def _cap_and_spread(quota: np.ndarray, cap: int, activity: np.ndarray) -> np.ndarray:
    """Cap per-user quotas at ``cap`` and hand the excess to the others by activity (deterministic)."""
    quota = quota.astype(np.int64)
    for _ in range(64):
        excess = int(np.maximum(quota - cap, 0).sum())
        if excess == 0:
            break
        quota = np.minimum(quota, cap)
        room = cap - quota
        share = np.where(room > 0, activity, 0.0)
        extra = np.floor(excess * share / share.sum()).astype(np.int64)
        left = excess - int(extra.sum())  # rounding remainder to the most active users with room
        order = np.argsort(-share, kind="stable")[:left]
        extra[order] += 1
        quota += extra
    return np.minimum(quota, cap)


def _rank_in_group(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal values of a grouped array."""
    pos = np.arange(len(groups))
    start = np.zeros(len(groups), dtype=np.int64)
    if len(groups):
        change = np.flatnonzero(groups[1:] != groups[:-1]) + 1
        start[change] = change
        np.maximum.accumulate(start, out=start)
    return pos - start


def _first_occurrence(values: np.ndarray) -> np.ndarray:
    """True at the first occurrence of each value (sort-based; NumPy 2's hashing unique is slower)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    first = np.empty(len(values), dtype=bool)
    if len(values):
        first[0] = True
        np.not_equal(sorted_values[1:], sorted_values[:-1], out=first[1:])
    out = np.zeros(len(values), dtype=bool)
    out[order[first]] = True
    return out


def _sorted_contains(sorted_keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return sorted_keys[pos] == values

