"""What the domains ask of a value: is it a real number, a whole number, NaN, the same as
another? Shared by every domain and free of any of them."""

from __future__ import annotations

import cmath
import math
from typing import Any

import numpy as np

#: The range of numpy's int64, in which an :class:`~genepool.space.Int` samples
#: (``rng.integers``).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """Whether ``value`` is a real number: an int or a float, numpy's included, not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not is_bool(value)


def finite_float(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` when it is none: not a real number (a bool,
    a string), NaN, an infinity, or an int too large for a float (``2**1100``)."""
    if not is_real(value):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def as_int(value: Any) -> int | None:
    """``value`` as an int if it is a whole number (``3``, ``3.0``, ``np.int64(3)``), else
    ``None`` (a bool, ``2.5``, NaN, a string)."""
    if is_bool(value):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    number = finite_float(value)
    return int(number) if number is not None and number.is_integer() else None


def is_nan(value: Any) -> bool:
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    if isinstance(value, (complex, np.complexfloating)):
        return cmath.isnan(value)
    return False


def same_value(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same option or fixed value: equal (``1`` and
    ``1.0`` are), a bool only to a bool, and NaN to NaN. An object whose ``==`` gives no
    truth value (a numpy array) is the same only as itself."""
    if a is b:
        return True
    if is_bool(a) != is_bool(b):
        return False
    if is_nan(a) or is_nan(b):
        return is_nan(a) and is_nan(b)
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def value_key(value: Any) -> tuple[str, Any] | None:
    """The key by which a :class:`~genepool.space.Choice` finds an option: values of equal
    keys are the same (:func:`same_value`). ``None`` for an unhashable value (a list)."""
    if is_nan(value):
        return ("nan", None)
    try:
        hash(value)
    except TypeError:
        return None
    return ("bool" if is_bool(value) else "value", value)
