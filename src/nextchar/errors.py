"""The one exception type for mistakes a user can fix (the CLI prints it as a one-line error), and argument checks."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any


class UserError(Exception):
    """Bad input (file, option, checkpoint, request): the message names it and says what is wrong."""


def _kind(value: Any) -> str:
    return type(value).__name__


def check_int(value: Any, name: str, lo: int = 1, hi: int | None = None) -> int:
    """value as an int in [lo, hi] (hi None: no upper bound); else a UserError naming the argument.

    Integers of any kind (numpy's too) are accepted; bools, floats, strings and None are refused, so a k of
    "3", 2.5 or True is a clear error instead of a surprise later.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{name}: expected a whole number, got {_kind(value)} {value!r:.40}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        want = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise UserError(f"{name} {value}: must be {want}")
    return value


def check_float(value: Any, name: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> float:
    """value as a finite float in the interval from lo to hi (ends excluded when *_open); else a UserError naming
    the argument (bools, strings and None are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise UserError(f"{name}: expected a finite number, got {_kind(value)} {value!r:.40}")
    value = float(value)
    if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
        raise UserError(f"{name} {value:g}: must be in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}")
    return value


def check_text(value: Any, name: str) -> str:
    """value if it is a str, else a UserError naming the argument."""
    if not isinstance(value, str):
        raise UserError(f"{name}: expected a string, got {_kind(value)}")
    return value


def check_texts(values: Any, name: str) -> list[str]:
    """values as a list of str (a list, tuple or other sequence; not a str itself), else a UserError naming the
    argument or its first bad item."""
    if hasattr(values, "tolist") and not isinstance(values, str | bytes):
        values = values.tolist()  # a numpy array of strings
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise UserError(f"{name}: expected a list of strings, got {_kind(values)}")
    out = list(values)
    for i, v in enumerate(out):
        if not isinstance(v, str):
            raise UserError(f"{name}[{i}]: expected a string, got {_kind(v)}")
    return out
