"""The one validator of arguments: every public function and constructor checks through here.

Each check returns the value coerced to its plain Python type, or raises ``ParameterError``
naming the parameter, the value given and what is allowed, worded the same way everywhere.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from .errors import ParameterError, ParameterTypeError


def integer(name: str, value, minimum: int | None = None, maximum: int | None = None,
            allow_none: bool = False) -> int | None:
    """An int (numpy ints too, never bool or float) within ``[minimum, maximum]``."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, Integral) and not isinstance(value, bool)
    if ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return int(value)
    raise ParameterError(name, value, _range_text("an integer", minimum, maximum, allow_none))


def number(name: str, value, minimum: float | None = None, maximum: float | None = None,
           min_inclusive: bool = True, max_inclusive: bool = True, allow_none: bool = False) -> float | None:
    """A finite real number (not bool) within the given bounds."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        low_ok = minimum is None or (v >= minimum if min_inclusive else v > minimum)
        high_ok = maximum is None or (v <= maximum if max_inclusive else v < maximum)
        if low_ok and high_ok:
            return v
    raise ParameterError(name, value, _range_text("a finite number", minimum, maximum, allow_none,
                                                  min_inclusive, max_inclusive))


def choice(name: str, value, choices) -> object:
    """One of ``choices`` (compared with ==; None may be one of them)."""
    for c in choices:
        if value == c and type(value) is type(c):
            return value
    raise ParameterError(name, value, "one of " + ", ".join(repr(c) for c in choices))


def boolean(name: str, value) -> bool:
    """True or False (numpy bools too)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise ParameterError(name, value, "True or False")


def fraction(name: str, value) -> float:
    """A finite number strictly between 0 and 1 (a test fraction, a share of the data)."""
    return number(name, value, minimum=0.0, maximum=1.0, min_inclusive=False, max_inclusive=False)


def integers(name: str, value, minimum: int | None = None) -> list[int]:
    """One integer or a non-empty sequence of them, each ``>= minimum`` (cutoffs ``k=[10, 20]``)."""
    values = [value] if isinstance(value, Integral) or isinstance(value, (str, bytes, float)) else value
    allowed = _range_text("an integer", minimum, None, False) + " or a non-empty list of them"
    try:
        values = list(values)
    except TypeError:
        raise ParameterError(name, value, allowed) from None
    if not values:
        raise ParameterError(name, value, allowed)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, Integral) or (minimum is not None and v < minimum):
            raise ParameterError(name, value, allowed, hint=f"{_show(v)} is not")
    return [int(v) for v in values]


def names(name: str, value, choices) -> list[str]:
    """One name or a non-empty sequence of names, each one of ``choices`` (case-insensitive)."""
    allowed = "some of " + ", ".join(repr(c) for c in choices)
    values = [value] if isinstance(value, str) else value
    try:
        values = [str(v).lower() for v in values]
    except TypeError:
        raise ParameterError(name, value, allowed) from None
    if not values:
        raise ParameterError(name, value, allowed)
    unknown = [v for v in values if v not in choices]
    if unknown:
        raise ParameterError(name, value, allowed, hint=f"unknown: {', '.join(map(repr, unknown))}")
    return values


def instance(name: str, value, types, allowed: str):
    """An object of one of ``types`` (``ParameterTypeError``, also a TypeError, otherwise)."""
    if isinstance(value, types):
        return value
    raise ParameterTypeError(name, type_of(value), allowed)


class Shown:
    """A description standing for a value in a message (``got a DataFrame``, ``got 3 rows``),
    printed as it is rather than as a quoted repr."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self):
        return self.text


def type_of(value) -> Shown:
    """``a DataFrame``: a wrong-typed argument shown by its type, not by its (long) repr."""
    return Shown(f"a {type(value).__name__}")


def _show(v) -> str:
    return repr(v.item() if hasattr(v, "item") and getattr(v, "shape", None) == () else v)


def _range_text(kind, minimum, maximum, allow_none, min_inclusive=True, max_inclusive=True) -> str:
    parts = []
    if minimum is not None:
        parts.append(f"{'>=' if min_inclusive else '>'} {minimum}")
    if maximum is not None:
        parts.append(f"{'<=' if max_inclusive else '<'} {maximum}")
    text = kind + (" " + " and ".join(parts) if parts else "")
    return text + (" or None" if allow_none else "")


ON_UNKNOWN = ("raise", "pad")  # what an unknown id does, everywhere: raise UnknownIdError, or pad (-1)


def on_unknown(value) -> str:
    """The ``on_unknown=`` choice of id lookups and ``recommend``: "raise" or "pad" (index -1, an
    all-padding row). The old IdMap spelling "mask" is refused with a message naming "pad"."""
    if value == "mask":
        raise ParameterError("on_unknown", value, "one of 'raise', 'pad'", hint="'mask' was renamed 'pad'")
    return choice("on_unknown", value, ON_UNKNOWN)


def renamed(owner: str, given: dict, renames: dict[str, str]) -> None:
    """Refuse keyword arguments passed under an old name, naming the new one.

    ``given`` holds the keywords a function collected in ``**kwargs`` (only old names belong
    there); ``renames`` maps old name -> new name. Any other stray keyword gets the TypeError
    Python would raise. Every rename is listed in the README's "Renames" table.
    """
    for name in given:
        if name in renames:
            raise TypeError(f"{owner}: {name!r} was renamed to {renames[name]!r}; pass {renames[name]}= instead")
    if given:
        raise TypeError(f"{owner} got an unexpected keyword argument {next(iter(given))!r}")
