"""Interactions: a user x item CSR of float32 weights, optional timestamps and ratings, and id maps.

Duplicate (user, item) pairs are resolved at construction by ``duplicates=``:

- ``"last"`` (default): keep the latest event (largest timestamp; the later row when timestamps
  tie or are absent), with its weight, rating and timestamp;
- ``"first"``: keep the earliest event;
- ``"sum"``: add the weights (counts of plays or clicks), keep the latest timestamp and rating;
- ``"max"``: keep the largest weight;
- ``"error"``: raise a DataError naming the first duplicated pair.

Explicit ratings (the ``weight`` column) are kept in ``ratings`` for RMSE/MAE. ``min_rating=r``
turns them into implicit feedback: events rated below ``r`` are dropped and the matrix holds 1.0.
A weight column that holds counts or strengths (plays, clicks, dwell time) is declared with
``ratings=False``: it is the matrix's weight and no ``ratings`` are kept, so no RMSE/MAE is reported.

Ids keep their type and are never coerced silently: a column mixing integers and text (in a CSV,
integer literals and other text) is a ``DataError`` naming the first row of the minority kind
(rows are 0-based data rows, the header excluded, everywhere, including pandas' parse errors).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .. import validation
from ..errors import DataError, ParameterError
from .idmap import IdMap, mixed_rows, normalize_ids

DUPLICATE_POLICIES = ("last", "first", "sum", "max", "error")


class Interactions:
    """A user x item interaction matrix with its id maps.

    ``matrix`` is a ``scipy.sparse.csr_matrix`` (float32, sorted indices, no duplicates);
    ``timestamps`` (int64) and ``ratings`` (float32), when present, are aligned with
    ``matrix.data``. Splits keep the id maps of the data they split, so train and test share them.
    """

    def __init__(self, matrix: sp.csr_matrix, user_map: IdMap, item_map: IdMap,
                 timestamps: np.ndarray | None = None, ratings: np.ndarray | None = None):
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        matrix.sort_indices()
        if matrix.shape != (len(user_map), len(item_map)):
            raise DataError(f"matrix shape {matrix.shape} does not match the id maps "
                            f"({len(user_map)} users, {len(item_map)} items)")
        for name, arr in (("timestamps", timestamps), ("ratings", ratings)):
            if arr is not None and len(arr) != matrix.nnz:
                raise DataError(f"{name} has {len(arr)} entries, the matrix {matrix.nnz}")
        self.matrix = matrix
        self.user_map = user_map
        self.item_map = item_map
        self.timestamps = None if timestamps is None else np.asarray(timestamps, dtype=np.int64)
        self.ratings = None if ratings is None else np.asarray(ratings, dtype=np.float32)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(cls, users, items, weights=None, timestamps=None, *, min_rating: float | None = None,
                    duplicates: str = "last", source: str = "arrays", ratings: bool = True,
                    columns: tuple[str, str, str, str] = ("users", "items", "weights", "timestamps")
                    ) -> "Interactions":
        """Build from parallel arrays of external user ids, item ids, weights and timestamps.

        ``ratings=False``: the weights are implicit strengths (counts), not ratings."""
        validation.choice("duplicates", duplicates, DUPLICATE_POLICIES)
        ratings_given = validation.boolean("ratings", ratings)
        if min_rating is not None:
            min_rating = validation.number("min_rating", min_rating)
        ucol, icol, wcol, tcol = columns
        n = len(users)
        for name, arr in ((icol, items), (wcol, weights), (tcol, timestamps)):
            if arr is not None and len(arr) != n:
                raise DataError(f"{name} has {len(arr)} entries but {ucol} has {n}; arrays must have equal length",
                                source=source, column=name)
        if n == 0:
            raise DataError("no interactions: the input is empty", source=source)
        users = normalize_ids(users, "user", source, ucol)
        items = normalize_ids(items, "item", source, icol)
        w = _check_weights(weights, n, source, wcol)
        ts = _check_timestamps(timestamps, source, tcol)
        ratings = None if weights is None or not ratings_given else w.copy()
        if min_rating is not None:
            if not ratings_given:
                raise ParameterError("min_rating", min_rating, "None when ratings=False",
                                     hint="min_rating filters ratings; the weights were declared implicit")
            if weights is None:
                raise DataError("min_rating needs ratings: pass a weight column with the ratings",
                                source=source, column=wcol)
            keep = w >= min_rating
            if not keep.any():
                raise DataError(f"no interaction has a rating >= min_rating={min_rating}", source=source,
                                column=wcol)
            users, items, w, ratings = users[keep], items[keep], np.ones(int(keep.sum()), np.float32), ratings[keep]
            ts = None if ts is None else ts[keep]
        user_map, uidx = IdMap.from_values(users, "user")
        item_map, iidx = IdMap.from_values(items, "item")
        return cls._from_indices(uidx, iidx, w, ts, ratings, user_map, item_map, duplicates, source)

    @classmethod
    def from_pandas(cls, df, user: str = "user", item: str = "item", weight: str | None = None,
                    timestamp: str | None = None, *, min_rating: float | None = None,
                    duplicates: str = "last", source: str = "DataFrame", ratings: bool = True) -> "Interactions":
        """Build from a DataFrame's columns; missing columns are named in the error (``ratings``: as
        in ``from_arrays``)."""
        wanted = [c for c in (user, item, weight, timestamp) if c is not None]
        missing = [c for c in wanted if c not in df.columns]
        if missing:
            raise DataError(f"missing column(s) {missing}; found {list(df.columns)}", source=source)
        ts = None
        if timestamp is not None:
            ts = _timestamps_from_series(df[timestamp], source, timestamp)
        return cls.from_arrays(
            df[user].to_numpy(), df[item].to_numpy(),
            None if weight is None else df[weight].to_numpy(), ts,
            min_rating=min_rating, duplicates=duplicates, source=source, ratings=ratings,
            columns=(user, item, weight or "weight", timestamp or "timestamp"),
        )

    @classmethod
    def from_csv(cls, path, user: str = "user", item: str = "item", weight: str | None = None,
                 timestamp: str | None = None, *, sep: str = ",", min_rating: float | None = None,
                 duplicates: str = "last", ratings: bool = True) -> "Interactions":
        """Read a delimited text file with a header row (ids keep their type: ints stay ints)."""
        import pandas as pd

        path = Path(path)
        if not path.is_file():
            raise DataError("file not found" if not path.exists() else "not a file (a folder?)", source=str(path))
        validation.instance("sep", sep, str, "a one-character string such as ',' or '\\t'")
        dtypes = {c: "string" for c in (user, item)}
        try:
            df = pd.read_csv(path, sep=sep, dtype=dtypes, keep_default_na=True, engine="c")
        except pd.errors.EmptyDataError:
            raise DataError("the file is empty", source=str(path)) from None
        except pd.errors.ParserError as exc:
            raise _parser_error(exc, str(path)) from None
        except UnicodeDecodeError as exc:
            raise DataError(f"not UTF-8 text (byte {exc.start} of the file)", source=str(path)) from None
        except (ValueError, OverflowError) as exc:  # a header without one of our columns given a dtype
            raise DataError(f"could not read: {_one_line(exc)}", source=str(path)) from None
        for col in (user, item):
            if col in df.columns:
                df[col] = _ids_from_strings(df[col], str(path), col)
        return cls.from_pandas(df, user, item, weight, timestamp, min_rating=min_rating,
                               duplicates=duplicates, source=str(path), ratings=ratings)

    @classmethod
    def from_parquet(cls, path, user: str = "user", item: str = "item", weight: str | None = None,
                     timestamp: str | None = None, *, min_rating: float | None = None,
                     duplicates: str = "last", ratings: bool = True) -> "Interactions":
        """Read a Parquet file with pyarrow (only the needed columns are loaded)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.is_file():
            raise DataError("file not found" if not path.exists() else "not a file (a folder?)", source=str(path))
        try:
            schema_names = pq.read_schema(path).names
            wanted = [c for c in (user, item, weight, timestamp) if c is not None]
            missing = [c for c in wanted if c not in schema_names]
            if missing:
                raise DataError(f"missing column(s) {missing}; found {schema_names}", source=str(path))
            df = pq.read_table(path, columns=wanted).to_pandas()
        except (pa.ArrowException, OSError, ValueError, TypeError, OverflowError, KeyError, IndexError,
                AttributeError) as exc:  # a damaged file (pandas metadata included) fails in many ways
            if isinstance(exc, DataError):
                raise
            raise DataError(f"not a readable Parquet file ({_one_line(exc)})", source=str(path)) from None
        return cls.from_pandas(df, user, item, weight, timestamp, min_rating=min_rating,
                               duplicates=duplicates, source=str(path), ratings=ratings)

    @classmethod
    def _from_indices(cls, uidx, iidx, weights, timestamps, ratings, user_map: IdMap, item_map: IdMap,
                      duplicates: str = "last", source: str = "arrays") -> "Interactions":
        """Assemble the CSR from internal indices, resolving duplicate pairs by ``duplicates``."""
        n_users, n_items = len(user_map), len(item_map)
        if len(uidx) == 0:
            matrix = sp.csr_matrix((np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(n_users + 1, np.int64)),
                                   shape=(n_users, n_items))
            empty = lambda a: None if a is None else np.asarray(a)[:0]  # noqa: E731
            return cls(matrix, user_map, item_map, empty(timestamps), empty(ratings))
        key = uidx.astype(np.int64) * n_items + iidx
        order = np.lexsort((timestamps, key)) if timestamps is not None else np.argsort(key, kind="stable")
        key = key[order]
        w = weights[order]
        ts = None if timestamps is None else timestamps[order]
        r = None if ratings is None else ratings[order]
        new_group = np.empty(len(key), dtype=bool)
        new_group[:1] = True  # (no-op when empty: remap may drop every interaction)
        np.not_equal(key[1:], key[:-1], out=new_group[1:])
        if not new_group.all():
            if duplicates == "error":
                dup = int(np.argmin(new_group))
                u, i = divmod(int(key[dup]), n_items)
                r1, r2 = sorted((int(order[dup - 1]), int(order[dup])))
                raise DataError(f"duplicate interaction for user {user_map.ids[u].item()!r}, item "
                                f"{item_map.ids[i].item()!r} (rows {r1} and {r2}); pass duplicates='last', "
                                "'sum', 'first' or 'max'", source=source)
            starts = np.flatnonzero(new_group)
            ends = np.append(starts[1:], len(key)) - 1
            if duplicates == "first":
                pick = starts
            elif duplicates == "max":
                pick = starts + _argmax_per_group(w, starts)
            else:
                pick = ends
            if duplicates == "sum":
                summed = np.add.reduceat(w.astype(np.float64), starts).astype(np.float32)
            key = key[pick]
            w = summed if duplicates == "sum" else w[pick]
            ts = None if ts is None else ts[pick]
            r = None if r is None else r[pick]
        rows = key // n_items
        cols = (key - rows * n_items).astype(np.int32)
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
        matrix = sp.csr_matrix((w.astype(np.float32), cols, indptr), shape=(n_users, n_items))
        return cls(matrix, user_map, item_map, ts, r)

    # ------------------------------------------------------------------ views
    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    @property
    def nnz(self) -> int:
        return self.matrix.nnz

    def __repr__(self) -> str:
        extras = [x for x, v in (("timestamps", self.timestamps), ("ratings", self.ratings)) if v is not None]
        return (f"Interactions({self.n_users} users x {self.n_items} items, {self.nnz} interactions"
                + (f", with {' and '.join(extras)}" if extras else "") + ")")

    def row_of_nnz(self) -> np.ndarray:
        """The internal user index of every stored interaction (aligned with ``matrix.data``)."""
        return np.repeat(np.arange(self.n_users, dtype=np.int32), np.diff(self.matrix.indptr))

    def select(self, keep: np.ndarray) -> "Interactions":
        """The interactions where the boolean mask over ``matrix.data`` is True; same id maps."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.nnz,):
            raise ParameterError("keep", validation.Shown(f"shape {keep.shape}"), f"a bool mask of shape ({self.nnz},)")
        m = self.matrix
        kept_before = np.zeros(self.nnz + 1, dtype=np.int64)
        np.cumsum(keep, out=kept_before[1:])
        indptr = kept_before[m.indptr]
        matrix = sp.csr_matrix((m.data[keep], m.indices[keep], indptr), shape=m.shape)
        return Interactions(matrix, self.user_map, self.item_map,
                            None if self.timestamps is None else self.timestamps[keep],
                            None if self.ratings is None else self.ratings[keep])

    def remap(self, user_map: IdMap, item_map: IdMap) -> tuple["Interactions", dict]:
        """These interactions expressed in other id maps (a model's), with what could not be kept.

        Returns the remapped data and counts: ``unknown_users`` and ``unknown_items`` (distinct
        ids absent from the target maps) and ``dropped`` (interactions lost with them).
        """
        if user_map == self.user_map and item_map == self.item_map:
            return self, {"unknown_users": 0, "unknown_items": 0, "dropped": 0}
        u_new = user_map.to_index(self.user_map.ids, on_unknown="pad") if len(self.user_map) else np.array([], np.int64)
        i_new = item_map.to_index(self.item_map.ids, on_unknown="pad") if len(self.item_map) else np.array([], np.int64)
        rows = u_new[self.row_of_nnz()]
        cols = i_new[self.matrix.indices]
        keep = (rows >= 0) & (cols >= 0)
        info = {"unknown_users": int((u_new < 0).sum()), "unknown_items": int((i_new < 0).sum()),
                "dropped": int((~keep).sum())}
        sel = lambda a: None if a is None else a[keep]  # noqa: E731
        out = Interactions._from_indices(rows[keep], cols[keep], self.matrix.data[keep], sel(self.timestamps),
                                         sel(self.ratings), user_map, item_map)
        return out, info

    def to_pandas(self):
        """A DataFrame with columns user, item, weight, timestamp (external ids; timestamp may be None)."""
        import pandas as pd

        rows = self.row_of_nnz()
        return pd.DataFrame({
            "user": self.user_map.ids[rows],
            "item": self.item_map.ids[self.matrix.indices],
            "weight": self.matrix.data,
            "timestamp": self.timestamps if self.timestamps is not None else np.full(self.nnz, None),
        })


# ---------------------------------------------------------------------- validation helpers
def _check_weights(weights, n: int, source: str, column: str) -> np.ndarray:
    if weights is None:
        return np.ones(n, dtype=np.float32)
    w = np.asarray(weights)
    if w.dtype.kind not in "iufb":
        try:
            w = w.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(f"weights must be numbers, got dtype {w.dtype}", source=source, column=column) from None
    w = w.astype(np.float64)
    bad = ~np.isfinite(w)
    if bad.any():
        r = int(bad.argmax())
        raise DataError(f"weight is {w[r]}; weights must be finite numbers", source=source, row=r, column=column)
    neg = w < 0
    if neg.any():
        r = int(neg.argmax())
        raise DataError(f"weight is {w[r]}; weights must not be negative", source=source, row=r, column=column)
    big = w > np.finfo(np.float32).max
    if big.any():
        r = int(big.argmax())
        raise DataError(f"weight is {w[r]}; weights must fit in float32 (<= 3.4e38)", source=source, row=r,
                        column=column)
    return w.astype(np.float32)


def _check_timestamps(timestamps, source: str, column: str) -> np.ndarray | None:
    if timestamps is None:
        return None
    t = np.asarray(timestamps)
    if t.dtype.kind == "M":
        nat = np.isnat(t)
        if nat.any():
            raise DataError("timestamp is missing (NaT)", source=source, row=int(nat.argmax()), column=column)
        t = t.astype("datetime64[s]").astype(np.int64)
    if t.dtype.kind == "f":
        bad = ~np.isfinite(t)
        if bad.any():
            r = int(bad.argmax())
            raise DataError("timestamp is missing", source=source, row=r, column=column)
        big = np.abs(t) >= 2**63
        if big.any():
            r = int(big.argmax())
            raise DataError(f"timestamp {t[r]} does not fit in 64 bits", source=source, row=r, column=column)
        return t.astype(np.int64)
    if t.dtype.kind in "iu":
        return t.astype(np.int64)
    raise DataError(f"timestamps must be numbers or datetimes, got dtype {t.dtype}", source=source, column=column)


def _timestamps_from_series(series, source: str, column: str) -> np.ndarray:
    """Numeric timestamps pass through; datetime columns and ISO 8601 text become Unix seconds (UTC)."""
    import pandas as pd

    if (series.dtype == object or pd.api.types.is_string_dtype(series)) and series.notna().any():
        numeric = pd.to_numeric(series, errors="coerce")
        if (numeric.isna() & series.notna()).any():  # not all numbers: ISO dates, or a bad value
            parsed = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
            bad = parsed.isna() & numeric.isna() & series.notna()
            if bad.any():
                r = int(bad.to_numpy().argmax())
                raise DataError(f"timestamp {series.iloc[r]!r} is not a number or an ISO 8601 date/time",
                                source=source, row=r, column=column)
            mixed = parsed.isna() & series.notna()
            if mixed.any():
                r = int(mixed.to_numpy().argmax())
                raise DataError(f"timestamp {series.iloc[r]!r} is a number but other rows are dates; use one form",
                                source=source, row=r, column=column)
            series = parsed
    if pd.api.types.is_datetime64_any_dtype(series):
        if series.isna().any():
            raise DataError("timestamp is missing", source=source, row=int(series.isna().to_numpy().argmax()),
                            column=column)
        if getattr(series.dt, "tz", None) is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        return series.astype("datetime64[s]").astype(np.int64).to_numpy()
    if pd.api.types.is_integer_dtype(series) and not series.isna().any():
        return series.to_numpy(dtype=np.int64)  # exact: float64 would round nanosecond stamps
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        series = pd.to_numeric(series, errors="coerce")
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _ids_from_strings(column, source: str, name: str):
    """CSV ids are read as text; make them int64 when every one is an integer literal."""
    import pandas as pd

    values = column.to_numpy(dtype=object, na_value=None)
    missing = np.fromiter((v is None for v in values), bool, len(values))
    if missing.any():
        raise DataError("id is missing", source=source, row=int(missing.argmax()), column=name)
    as_num = pd.to_numeric(column, errors="coerce")
    is_num = as_num.notna().to_numpy()
    if is_num.all():
        numeric = as_num.to_numpy(dtype=np.float64)
        frac = (numeric != np.round(numeric)) | (np.abs(numeric) >= 2**63)
        if frac.any():
            r = int(frac.argmax())
            raise DataError(f"id {values[r]!r} is not an integer", source=source, row=r, column=name)
        if not len(numeric) or np.abs(numeric).max() < 2**53:
            return numeric.astype(np.int64)
        return np.array([int(float(v)) if not str(v).strip().lstrip("+-").isdigit() else int(v) for v in values],
                        dtype=np.int64)  # exact beyond float64's 53 bits
    if is_num.any():
        r, other = mixed_rows(is_num)
        kinds = ("a number", "text") if is_num[r] else ("text", "numbers")
        raise DataError(f"id {values[r]!r} is {kinds[0]} but the column's other ids are {kinds[1]} (e.g. row "
                        f"{other}: {values[other]!r}); ids of a column must be all integers or all text",
                        source=source, row=r, column=name)
    return values.astype(str)


def _parser_error(exc, source: str) -> DataError:
    """pandas' ParserError as a DataError with our row convention: pandas counts file lines from 1,
    header included, so its "line N" is data row N - 2."""
    import re

    text = _one_line(exc)
    match = re.search(r"\b(?:in )?line (\d+)", text)
    if match is None:
        return DataError(f"could not parse: {text}", source=source)
    row = int(match.group(1)) - 2
    detail = re.sub(r"\s*(?:in )?line \d+,?", "", text).replace("Error tokenizing data. C error: ", "")
    return DataError(f"could not parse: {detail.strip()}", source=source, row=max(row, 0))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _argmax_per_group(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Offset of the largest value within each group that starts at ``starts`` (first on ties)."""
    group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(values))))
    order = np.lexsort((-values, group))
    first = np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1]])
    return order[first] - starts
