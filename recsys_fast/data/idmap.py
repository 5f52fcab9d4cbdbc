"""IdMap: the two-way map between a caller's ids (ints or strings) and dense internal indices."""

from __future__ import annotations

import numpy as np

from .. import validation
from ..errors import DataError, UnknownIdError


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
        values = self._coerce(values)
        if len(self.ids) == 0:
            pos = np.zeros(len(values), dtype=np.int64)
            found = np.zeros(len(values), dtype=bool)
        else:
            pos = np.searchsorted(self.ids, values)
            pos_clipped = np.minimum(pos, len(self.ids) - 1)
            found = self.ids[pos_clipped] == values
            pos = pos_clipped
        if not found.all():
            if on_unknown == "raise":
                raise UnknownIdError(self.kind, values[~found])
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

    def _coerce(self, values) -> np.ndarray:
        values = np.atleast_1d(np.asarray(values))
        if self.is_string:
            return values.astype(str) if values.dtype.kind != "U" else values
        if values.dtype.kind in "iu":
            return values.astype(np.int64, copy=False)
        if values.dtype.kind == "f" and np.all(np.isfinite(values)) and np.all(values == np.round(values)):
            return values.astype(np.int64)
        if values.dtype.kind in "OU":
            try:
                return values.astype(np.int64)
            except (TypeError, ValueError):
                pass
        raise UnknownIdError(self.kind, values[:5], hint=f"ids of this map are integers, got {values.dtype}")


def normalize_ids(values, kind: str, source: str | None = None, column: str | None = None) -> np.ndarray:
    """Coerce an id column to int64 (when every value is integral) or to strings.

    NaN/None ids and non-integral floats are errors naming the first bad row.
    """
    arr = np.asarray(values)
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
        frac = arr != np.round(arr)
        if frac.any():
            r = int(frac.argmax())
            raise DataError(f"{kind} id {arr[r].item()!r} is not an integer", source=source, row=r, column=column)
        return arr.astype(np.int64)
    if arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind in "OT":
        obj = arr.astype(object)
        missing = np.fromiter((_is_missing(v) for v in obj), bool, len(obj))
        if missing.any():
            r = int(missing.argmax())
            raise DataError(f"{kind} id is missing (NaN/None)", source=source, row=r, column=column)
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in obj):
            return obj.astype(np.int64)
        return obj.astype(str)
    raise DataError(f"{kind} ids must be integers or strings, got dtype {arr.dtype}", source=source, column=column)


def _is_missing(value) -> bool:
    """None, NaN, pandas.NA or NaT (checked without importing pandas)."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(value, float) and value != value
