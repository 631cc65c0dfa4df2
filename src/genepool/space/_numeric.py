"""The numeric domains: :class:`Float` and :class:`Int`, uniform or log-uniform in
``[low, high]``, and what they share (:class:`_Numeric`: bounds, log scale, unit mapping)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from genepool._errors import invalid
from genepool._redact import shown
from genepool.space._base import Domain, check_factor
from genepool.space._values import INT64_MAX, INT64_MIN, as_int, finite_float, is_bool


class _Numeric(Domain):
    """Shared logic of :class:`Float` and :class:`Int`: bounds, log scale, unit mapping."""

    low: float
    high: float
    log: bool

    def _check_order(self, low: Any, high: Any, less: bool) -> None:
        """Refuse bounds that are not ``low < high`` (``less``, compared as stored)."""
        if not less:
            raise invalid(
                type(self).__name__,
                "low",
                "less than 'high'",
                f"low={shown(low)}, high={shown(high)}",
                "Fix: swap them, or use gp.Fixed(value) for a value that never changes.",
            )

    def _check_log(self, log: Any, low: Any, positive: bool) -> None:
        """Refuse a ``log`` that is not a bool, and ``log=True`` without ``low > 0``."""
        owner = type(self).__name__
        if not isinstance(log, bool):
            raise invalid(owner, "log", "True or False", shown(log))
        if log and not positive:
            raise invalid(
                owner,
                "low",
                "> 0 when log=True",
                f"low={shown(low)}",
                "Fix: use a positive lower bound, or log=False for a linear scale.",
            )

    def _check_log_width(self, low: float, high: float) -> None:
        """Refuse log bounds so close that their logarithms are equal as floats (the
        log scale would have no width)."""
        if self.log and not math.log(low) < math.log(high):
            raise invalid(
                type(self).__name__,
                "high",
                "far enough above 'low' that log(high) > log(low) as floats",
                f"low={low!r}, high={high!r}",
                "Fix: use log=False: the range is too narrow for a log scale.",
            )

    def _to_unit(self, value: float) -> float:
        if self.log:
            return (math.log(value) - math.log(self.low)) / (
                math.log(self.high) - math.log(self.low)
            )
        return (value - self.low) / (self.high - self.low)

    def _from_unit(self, unit: float) -> float:
        unit = min(1.0, max(0.0, unit))
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return math.exp(lo + unit * (hi - lo))
        return self.low + unit * (self.high - self.low)

    def _clip(self, value: float) -> float:
        return min(self.high, max(self.low, value))

    def __repr__(self) -> str:
        log = ", log=True" if self.log else ""
        return f"{type(self).__name__}({self.low!r}, {self.high!r}{log})"

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and isinstance(other, _Numeric)
            and (self.low, self.high, self.log) == (other.low, other.high, other.log)
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.low, self.high, self.log))


def _float_bound(name: str, value: Any) -> float:
    """A bound of :class:`Float` as a float: a finite real number that a float holds."""
    number = finite_float(value)
    if number is None:
        raise invalid(
            "Float",
            name,
            "a finite number that a float holds (between -1.8e308 and 1.8e308)",
            shown(value),
            "Fix: give a number such as 1e-4 (not a bool, a string, NaN or an infinity).",
        )
    return number


def _int_bound(name: str, value: Any) -> int:
    """A bound of :class:`Int` as an int: an integer in numpy's int64 range, where an
    :class:`Int` samples."""
    if not isinstance(value, (int, np.integer)) or is_bool(value):
        raise invalid("Int", name, "an integer", shown(value), "Fix: use gp.Float for reals.")
    number = int(value)
    if not INT64_MIN <= number <= INT64_MAX:
        raise invalid(
            "Int",
            name,
            f"an integer in numpy's int64 range [-2**63, 2**63 - 1] = [{INT64_MIN}, {INT64_MAX}]",
            shown(value),
            "Fix: use narrower bounds, or gp.Float(low, high, log=True) for a range that wide.",
        )
    return number


class Float(_Numeric):
    """A real hyperparameter in ``[low, high]``, uniform or (``log=True``) log-uniform.

    Perturbing multiplies by the factor (for a log scale that is a shift in log space);
    a value that multiplication cannot move (0 on a linear scale) moves by
    ``(factor - 1) * (high - low)``. Results are clipped to the bounds.
    """

    def __init__(self, low: float, high: float, *, log: bool = False) -> None:
        lo, hi = _float_bound("low", low), _float_bound("high", high)
        self._check_order(low, high, lo < hi)
        self._check_log(log, low, lo > 0)
        if not math.isfinite(hi - lo):
            raise invalid(
                "Float",
                "high",
                "less than 'low' + 1.8e308 (the width high - low must be a finite float)",
                f"low={shown(low)}, high={shown(high)}",
                "Fix: narrow the bounds, or use log=True for a range of many magnitudes.",
            )
        self.low, self.high, self.log = lo, hi, log
        self._check_log_width(lo, hi)

    def sample(self, rng: np.random.Generator) -> float:
        return self._clip(self._from_unit(float(rng.random())))

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> float:
        check_factor(factor)
        v = self.validate(value)
        moved = v * factor
        if moved == v:  # 0 on a linear scale (or an underflow): step by a fraction of the range
            moved = v + (factor - 1.0) * (self.high - self.low)
        return self._clip(moved)

    def noise(self, value: Any, sigma: float, rng: np.random.Generator) -> float:
        v = self.validate(value)
        return self._clip(self._from_unit(self._to_unit(v) + sigma * float(rng.standard_normal())))

    def validate(self, value: Any, *, name: str = "value") -> float:
        v = finite_float(value)
        if v is None:
            raise invalid(
                "Float",
                name,
                "a finite real number",
                shown(value),
                "Fix: give a number (not a bool, a string or NaN).",
            )
        if not self.low <= v <= self.high:
            raise invalid(
                "Float",
                name,
                f"within [{self.low!r}, {self.high!r}]",
                shown(value),
                "Fix: change the value or widen the declared bounds.",
            )
        return v


class Int(_Numeric):
    """An integer hyperparameter in ``[low, high]`` (both included), optionally log-uniform.

    Perturbing multiplies by the factor and rounds; it always moves by at least one unit
    in the factor's direction, unless the value sits on that bound already.
    """

    def __init__(self, low: int, high: int, *, log: bool = False) -> None:
        lo, hi = _int_bound("low", low), _int_bound("high", high)
        self._check_order(low, high, lo < hi)
        self._check_log(log, low, lo > 0)
        self.low, self.high, self.log = lo, hi, log
        self._check_log_width(lo, hi)

    low: int
    high: int

    def sample(self, rng: np.random.Generator) -> int:
        if not self.log:
            return int(rng.integers(self.low, self.high + 1))
        # log-uniform over [low, high + 1), floored: every integer has the mass of its interval
        lo, hi = math.log(self.low), math.log(self.high + 1)
        return int(self._clip(math.floor(math.exp(lo + float(rng.random()) * (hi - lo)))))

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> int:
        check_factor(factor)
        v = self.validate(value)
        scaled = self._clip(v * factor)  # clip first: a huge factor must not overflow round()
        moved = round(scaled)
        if moved == v and factor != 1.0:
            # rounding cancelled the move: step one unit the way multiplication moves it
            up = factor > 1.0 if v >= 0 else factor < 1.0
            moved = v + (1 if up else -1)
        return int(self._clip(moved))

    def noise(self, value: Any, sigma: float, rng: np.random.Generator) -> int:
        v = self.validate(value)
        unit = self._to_unit(v) + sigma * float(rng.standard_normal())
        return int(self._clip(round(self._from_unit(unit))))

    def validate(self, value: Any, *, name: str = "value") -> int:
        v = as_int(value)
        if v is None:
            raise invalid(
                "Int",
                name,
                "an integer",
                shown(value),
                "Fix: give a whole number (not a bool), or declare the hyperparameter gp.Float.",
            )
        if not self.low <= v <= self.high:
            raise invalid(
                "Int",
                name,
                f"within [{self.low}, {self.high}]",
                shown(value),
                "Fix: change the value or widen the declared bounds.",
            )
        return v
