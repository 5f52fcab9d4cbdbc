"""The library's exception types: one module, each a subclass of the matching builtin.

Messages say what was wrong, where (file, row, column, id) and what was expected, so a caller
can fix the input without reading our source.
"""

from __future__ import annotations


class RecsysError(Exception):
    """Base class of every error raised on purpose by recsys_fast."""


class DataError(RecsysError, ValueError):
    """Bad input data: a missing column, a NaN id, a negative weight, mismatched lengths.

    ``source`` names the file or argument, ``row`` the 0-based data row (header excluded) and
    ``column`` the field, when known; all three are also in the message.
    """

    def __init__(self, message: str, *, source: str | None = None, row: int | None = None,
                 column: str | None = None):
        where = []
        if source is not None:
            where.append(f"{source}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.source, self.row, self.column = source, row, column


class ParameterError(RecsysError, ValueError):
    """A bad argument of a public function or constructor.

    ``name`` is the parameter, ``value`` what was given and ``allowed`` what is accepted; all
    three are in the message (``k must be an integer >= 1, got 0``). Raised from
    ``recsys_fast.validation`` so that every check words its message the same way.
    """

    def __init__(self, name: str, value, allowed: str, hint: str = ""):
        shown = repr(_plain(value))
        message = f"{name} must be {allowed}, got {shown if len(shown) <= 200 else shown[:200] + ' ...'}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)
        self.name, self.value, self.allowed = name, value, allowed


class ParameterTypeError(ParameterError, TypeError):
    """A ``ParameterError`` for an argument of the wrong type (``fit("x")``, ``recommend(k="3")``):
    also a ``TypeError``, so code that catches either keeps working."""


class LimitError(RecsysError, ValueError):
    """A request larger than a documented limit of ``recsys_fast.limits`` (e.g. users x k entries of
    one ``recommend`` call). ``limit`` names the limit, ``value`` what was asked; the message says
    how to get the work done anyway (chunking, ``batch.score``, a larger limit)."""

    def __init__(self, limit: str, value, maximum, hint: str):
        super().__init__(f"{limit}: {value} is above the limit of {maximum} ({hint})")
        self.limit, self.value, self.maximum = limit, value, maximum


class UnknownIdError(RecsysError, KeyError):
    """A user or item id that the model (or id map) has never seen."""

    def __init__(self, kind: str, ids, hint: str = ""):
        ids = list(ids)
        more = f" ... ({len(ids)} in all)" if len(ids) > 5 else ""
        shown = ", ".join(repr(_plain(i)) for i in ids[:5]) + more
        base = f"unknown {kind} id{'s' if len(ids) > 1 else ''}: {shown}"
        message = base + (f" ({hint})" if hint else "")
        super().__init__(message)
        self.kind, self.ids, self.message, self.hint, self.base = kind, ids, message, hint, base

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return self.message


class NotFittedError(RecsysError, RuntimeError):
    """A model method that needs learned state was called before ``fit``."""


class BundleError(RecsysError, ValueError):
    """A saved model bundle that is missing, truncated, tampered with or of another kind."""


class QuantizationError(RecsysError, ValueError):
    """An int8 graph refused by its quality gate (``to_onnx(quantize=...)``): ``ndcg_fp32`` and
    ``ndcg_int8`` are the NDCG@10 figures measured on the validation split, both in the message."""

    def __init__(self, message: str, ndcg_fp32: float | None = None, ndcg_int8: float | None = None):
        super().__init__(message)
        self.ndcg_fp32, self.ndcg_int8 = ndcg_fp32, ndcg_int8


class DataWarning(UserWarning):
    """Input that is usable but incomplete, reported rather than dropped silently (e.g. interactions
    naming items that have no features)."""


class MissingExtraError(RecsysError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, module: str, extra: str):
        super().__init__(
            f"{module} is not installed; install the extra with: pip install 'recsys-fast[{extra}]'"
        )


def _plain(value):
    """numpy scalars print as ``np.int64(3)`` in repr; show the plain Python value instead."""
    return value.item() if hasattr(value, "item") and getattr(value, "shape", None) == () else value
