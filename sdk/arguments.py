"""Checks for the arguments a caller passes, in one place.

Python and numpy scalars are accepted alike wherever a number is expected (a `np.int64` from an
array is as good as an `int`), `bool` never (True is not a count), and non-finite floats are
refused. Each check returns the plain Python value, so nothing downstream sees numpy scalars.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import InvalidArgumentError


def describe(value: Any, limit: int = 60) -> str:
    """A short repr for error messages: a hostile value must not flood the terminal."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    return is_integer(value) or isinstance(value, (float, np.floating))


def _bounds(minimum: float | None, above: float | None, maximum: float | None) -> str:
    low = f"[{minimum}" if minimum is not None else f"({above}" if above is not None else None
    if low is not None and maximum is not None:
        return f" in {low}, {maximum}]"
    if low is not None:
        return f" >= {minimum}" if minimum is not None else f" > {above}"
    return f" <= {maximum}" if maximum is not None else ""


def integer(value: Any, name: str, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
    """`value` as an int, or InvalidArgumentError naming `name` and the allowed range."""
    if not is_integer(value):
        raise InvalidArgumentError(
            f"{name} must be an integer{_bounds(minimum, None, maximum)}, got {describe(value)}",
            param=name)
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise InvalidArgumentError(
            f"{name} must be an integer{_bounds(minimum, None, maximum)}, got {describe(number)}",
            param=name)
    return number


def real(value: Any, name: str, *, minimum: float | None = None, above: float | None = None,
         maximum: float | None = None) -> float:
    """`value` as a finite float within the bounds (`above` is exclusive), or an error."""
    bounds = _bounds(minimum, above, maximum)
    if not is_number(value):
        raise InvalidArgumentError(f"{name} must be a number{bounds}, got {describe(value)}",
                                   param=name)
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise InvalidArgumentError(f"{name} must be a finite number{bounds}, got "
                                   f"{describe(value)}", param=name)
    if ((minimum is not None and number < minimum) or (above is not None and number <= above)
            or (maximum is not None and number > maximum)):
        raise InvalidArgumentError(f"{name} must be a number{bounds}, got {describe(value)}",
                                   param=name)
    return number


def string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be a string, got {type(value).__name__}",
                                   param=name)
    return value
