"""IdMap: the two-way map between a caller's ids (ints or strings) and dense internal indices."""

from __future__ import annotations

import numpy as np

from .. import validation
from ..errors import DataError, ParameterError, UnknownIdError


class IdMap:
    """Sorted unique external ids; internal index ``i`` is the ``i``-th smallest id.

    Sorting makes the map (and so every model built on it) independent of input row order.
    Integer ids are stored as int64, everything else as strings (``<U`` arrays, saved without
    pickle). Lookup is vectorised with ``searchsorted``.
    """

    __slots__ = ("ids", "kind")

    def __init__(self, ids: np.ndarray, kind: str = "item"):
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise DataError(f"{kind} ids must be one-dimensional, got shape {ids.shape}")
        if ids.dtype.kind not in "iuU":
            raise DataError(f"{kind} ids must be integers or strings, got dtype {ids.dtype}")
        if ids.dtype.kind in "iu":
            ids = ids.astype(np.int64, copy=False)
        if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
            raise DataError(f"{kind} id map must be sorted and unique")
        self.ids = ids
        self.kind = kind

    @classmethod
    def from_values(cls, values, kind: str = "item") -> tuple["IdMap", np.ndarray]:
        """Build the map of ``values`` and return it with the index of every value."""
        values = normalize_ids(values, kind)
        ids, inverse = np.unique(values, return_inverse=True)
        return cls(ids, kind), inverse.astype(np.int32 if len(ids) < 2**31 else np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other) -> bool:
        return isinstance(other, IdMap) and self.ids.dtype.kind == other.ids.dtype.kind \
            and np.array_equal(self.ids, other.ids)

    def __repr__(self) -> str:
        return f"IdMap({self.kind}, n={len(self)}, dtype={self.ids.dtype})"

    @property
    def is_string(self) -> bool:
        return self.ids.dtype.kind == "U"

    def to_index(self, values, on_unknown: str = "raise") -> np.ndarray:
        """Internal indices of ``values``; unknown ids raise ``UnknownIdError`` (``"raise"``) or map
        to the padding index -1 (``"pad"``), the same vocabulary as ``recommend(on_unknown=)``."""
        if on_unknown != "raise":
            on_unknown = validation.on_unknown(on_unknown)
        values = np.atleast_1d(np.asarray(values))
        if values.ndim != 1:
            raise ParameterError(f"{self.kind} ids", validation.Shown(f"shape {values.shape}"),
                                 "one id or a 1-d sequence of ids")
        coerced, ok = self._coerce(values)
        if len(self.ids) == 0:
            pos = np.zeros(len(values), dtype=np.int64)
            found = np.zeros(len(values), dtype=bool)
        else:
            pos = np.searchsorted(self.ids, coerced)
            pos_clipped = np.minimum(pos, len(self.ids) - 1)
            found = (self.ids[pos_clipped] == coerced) & ok
            pos = pos_clipped
        if not found.all():
            if on_unknown == "raise":
                hint = "" if ok.all() else f"this map's {self.kind} ids are integers"
                raise UnknownIdError(self.kind, values[~found], hint=hint)
        out = pos.astype(np.int64)
        out[~found] = -1
        return out

    def to_external(self, indices, pad=-1) -> np.ndarray:
        """External ids of internal ``indices``; -1 entries (padding) become ``pad``.

        Integer maps pad with -1 (int64 array); string maps pad with ``""`` unless told otherwise.
        """
        indices = np.asarray(indices)
        if self.is_string:
            pad = "" if pad == -1 else pad
        valid = indices >= 0
        out = np.empty(indices.shape, dtype=self.ids.dtype if len(self.ids) else np.int64)
        if len(self.ids):
            out[valid] = self.ids[indices[valid]]
        out[~valid] = pad
        return out

    def _coerce(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``values`` in the map's id type, and a mask of those that could be expressed in it
        (the rest are unknown: ``"x"``, ``1.5`` or NaN in an integer map); never raises."""
        ok = np.ones(len(values), dtype=bool)
        if self.is_string:
            if values.dtype.kind == "U":
                return values, ok
            return np.array([str(_plain(v)) for v in values], dtype=str) if len(values) else values.astype(str), ok
        kind = values.dtype.kind
        if kind in "iu":
            if kind == "u" and values.dtype.itemsize == 8:
                ok = values <= np.iinfo(np.int64).max
            return values.astype(np.int64), ok
        out = np.zeros(len(values), dtype=np.int64)
        if kind == "f":
            ok = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2**63)
            out[ok] = values[ok].astype(np.int64)
            return out, ok
        if kind in "OUS":
            for r, v in enumerate(values):
                parsed = _integer_id(v)
                if parsed is None:
                    ok[r] = False
                else:
                    out[r] = parsed
            return out, ok
        return out, np.zeros(len(values), dtype=bool)


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _integer_id(v) -> int | None:
    """An id given as an int, an integral string (``"42"``) or bytes; None when it is none of these."""
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, (int, np.integer)):
        v = int(v)
        return v if -2**63 <= v < 2**63 else None
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, str):
        t = v.strip()
        digits = t[1:] if t[:1] in ("+", "-") else t  # one sign at most: "--5" is no integer
        if digits.isdigit() and digits.isascii():
            n = int(t)
            return n if -2**63 <= n < 2**63 else None
    return None


def normalize_ids(values, kind: str, source: str | None = None, column: str | None = None) -> np.ndarray:
    """Coerce an id column to int64 (when every value is integral) or to strings.

    NaN/None ids and non-integral floats are errors naming the first bad row.
    """
    # lists go through object arrays: np.asarray(["a", 3]) would turn 3 into "3" silently
    arr = np.asarray(values)
    if isinstance(values, (list, tuple)) and arr.dtype.kind == "U":
        arr = np.asarray(values, dtype=object)
    if arr.ndim != 1:
        raise DataError(f"{kind} ids must be one-dimensional, got shape {arr.shape}", source=source,
                        column=column)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "b":
        raise DataError(f"{kind} ids must be integers or strings, got booleans", source=source, column=column)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            raise DataError(f"{kind} id is {arr[bad.argmax()]}; ids must not be missing",
                            source=source, row=int(bad.argmax()), column=column)
        frac = (arr != np.round(arr)) | (np.abs(arr) >= 2**63)
        if frac.any():
            r = int(frac.argmax())
            raise DataError(f"{kind} id {arr[r].item()!r} is not an integer"
                            + (" that fits in 64 bits" if abs(arr[r]) >= 2**63 else ""),
                            source=source, row=r, column=column)
        return arr.astype(np.int64)
    if arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind in "OT":
        obj = arr.astype(object)
        missing = np.fromiter((_is_missing(v) for v in obj), bool, len(obj))
        if missing.any():
            r = int(missing.argmax())
            raise DataError(f"{kind} id is missing (NaN/None)", source=source, row=r, column=column)
        is_int = np.fromiter((isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in obj),
                             bool, len(obj))
        is_text = np.fromiter((isinstance(v, (str, np.str_)) for v in obj), bool, len(obj))
        if is_int.all():
            return obj.astype(np.int64)
        if not is_text.all():
            if is_text.any() and (is_int | is_text).all():
                r, other = mixed_rows(is_int)
                raise DataError(f"{kind} id {obj[r]!r} is {'an integer' if is_int[r] else 'text'} but other ids are "
                                f"{'text' if is_int[r] else 'integers'} (e.g. row {other}: {obj[other]!r}); ids must "
                                "be all integers or all strings", source=source, row=r, column=column)
            r = int((~(is_int | is_text)).argmax())
            raise DataError(f"{kind} id {obj[r]!r} is a {type(obj[r]).__name__}; ids must be integers or strings",
                            source=source, row=r, column=column)
        return obj.astype(str)
    raise DataError(f"{kind} ids must be integers or strings, got dtype {arr.dtype}", source=source, column=column)


def mixed_rows(is_a: np.ndarray) -> tuple[int, int]:
    """In a column mixing two kinds of id (``is_a`` marks one kind): the first row of the minority
    kind (on a tie, of the kind that row 0 is not), and the first row of the other kind."""
    n_a, n_b = int(is_a.sum()), int((~is_a).sum())
    minority = is_a if (n_a < n_b or (n_a == n_b and not is_a[0])) else ~is_a
    return int(minority.argmax()), int((~minority).argmax())


def _is_missing(value) -> bool:
    """None, NaN, pandas.NA or NaT (checked without importing pandas)."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(value, float) and value != value
