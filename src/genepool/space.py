"""The search space: which hyperparameters exist, their bounds, and how each one moves.

A :class:`Space` maps names to domains. Each domain knows how to ``sample`` from its prior,
``perturb`` a value by a factor (the paper's x0.8 / x1.2), add ``noise`` to it, and
``validate`` a value given by a user. Every value a domain returns lies inside its declared
bounds and has its declared type: a :class:`Float` returns ``float``, an :class:`Int`
returns ``int``, a :class:`Choice` returns one of its options.

Example:
    >>> import numpy as np
    >>> import genepool as gp
    >>> space = gp.Space(
    ...     lr=gp.Float(1e-4, 1e-1, log=True),
    ...     layers=gp.Int(1, 8),
    ...     batch_size=gp.Choice([32, 64, 128], ordered=True),
    ...     optimizer="adam",  # a plain value is fixed: never mutated
    ... )
    >>> config = space.sample(np.random.default_rng(0))
    >>> sorted(config)
    ['batch_size', 'layers', 'lr', 'optimizer']
    >>> space.validate({"lr": 0.01, "layers": 3, "batch_size": 64, "optimizer": "adam"})["lr"]
    0.01
"""

from __future__ import annotations

import cmath
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from genepool._errors import InvalidArgumentError, invalid
from genepool._redact import shown

__all__ = ["Choice", "Domain", "Fixed", "Float", "Int", "Space"]


#: The range of numpy's int64, in which an :class:`Int` samples (``rng.integers``).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    """Whether ``value`` is a real number: an int or a float, numpy's included, not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not _is_bool(value)


def finite_float(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` when it is none: not a real number (a bool,
    a string), NaN, an infinity, or an int too large for a float (``2**1100``)."""
    if not _is_real(value):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _as_int(value: Any) -> int | None:
    """``value`` as an int if it is a whole number (``3``, ``3.0``, ``np.int64(3)``), else
    ``None`` (a bool, ``2.5``, NaN, a string)."""
    if _is_bool(value):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    number = finite_float(value)
    return int(number) if number is not None and number.is_integer() else None


def _is_nan(value: Any) -> bool:
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    if isinstance(value, (complex, np.complexfloating)):
        return cmath.isnan(value)
    return False


def _same_value(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same option or fixed value: equal (``1`` and
    ``1.0`` are), a bool only to a bool, and NaN to NaN. An object whose ``==`` gives no
    truth value (a numpy array) is the same only as itself."""
    if a is b:
        return True
    if _is_bool(a) != _is_bool(b):
        return False
    if _is_nan(a) or _is_nan(b):
        return _is_nan(a) and _is_nan(b)
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _value_key(value: Any) -> tuple[str, Any] | None:
    """The key by which a :class:`Choice` finds an option: values of equal keys are the
    same (:func:`_same_value`). ``None`` for an unhashable value (a list)."""
    if _is_nan(value):
        return ("nan", None)
    try:
        hash(value)
    except TypeError:
        return None
    return ("bool" if _is_bool(value) else "value", value)


def _is_domain(value: Any) -> bool:
    """Whether ``value`` is a domain, or a domain class (``gp.Float`` for ``gp.Float(0, 1)``)."""
    return isinstance(value, Domain) or (isinstance(value, type) and issubclass(value, Domain))


def _check_factor(factor: float) -> None:
    number = finite_float(factor)
    if number is None or number <= 0:
        raise invalid("perturb", "factor", "a finite number > 0", shown(factor))


class Domain(ABC):
    """One hyperparameter's domain: its prior, its bounds and how its values move."""

    #: Whether exploration may change the value (``False`` only for :class:`Fixed`).
    mutable: bool = True

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Any:
        """Draw a value from the prior."""

    @abstractmethod
    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> Any:
        """Move ``value`` by ``factor`` (> 1 up, < 1 down), staying inside the bounds."""

    @abstractmethod
    def noise(self, value: Any, sigma: float, rng: np.random.Generator) -> Any:
        """Add Gaussian noise whose scale is ``sigma`` times the domain's width."""

    @abstractmethod
    def validate(self, value: Any, *, name: str = "value") -> Any:
        """Return ``value`` in its canonical type, or raise :class:`InvalidArgumentError`."""

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a valid value of this domain."""
        try:
            self.validate(value)
        except InvalidArgumentError:
            return False
        return True


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
    if not isinstance(value, (int, np.integer)) or _is_bool(value):
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
        _check_factor(factor)
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
        _check_factor(factor)
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
        v = _as_int(value)
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


class Choice(Domain):
    """A categorical hyperparameter.

    With ``ordered=True`` the options are a scale (say batch sizes): perturbing moves to the
    neighbour in the factor's direction and noise moves along the index. Unordered options
    have no neighbours, so exploring one resamples it from the prior.

    Options are matched by equality, as in a set: ``1``, ``1.0`` and ``np.int64(1)`` are
    the same option (so giving two of them is refused as a duplicate, and a value matches
    the option whatever its numeric type), except that a bool is never a number (``True``
    and ``1`` are two options) and NaN is the same as NaN. A hashable value is found in
    constant time; unhashable options (lists, dicts) are compared one by one.
    """

    def __init__(self, options: Sequence[Any], *, ordered: bool = False) -> None:
        if isinstance(options, (str, bytes, bytearray)) or not isinstance(options, Sequence):
            raise invalid(
                "Choice",
                "options",
                "a list of options",
                shown(options),
                "Fix: gp.Choice(['adam', 'sgd']).",
            )
        if len(options) == 0:
            raise invalid(
                "Choice", "options", "a non-empty list", "[]", "Fix: give at least one option."
            )
        if not isinstance(ordered, bool):
            raise invalid("Choice", "ordered", "True or False", shown(ordered))
        self.options: tuple[Any, ...] = tuple(options)
        self.ordered = ordered
        #: Where each hashable option is, by its key (:func:`_value_key`).
        self._positions: dict[tuple[str, Any], int] = {}
        #: Where the unhashable options are.
        self._unhashable: list[int] = []
        for i, option in enumerate(self.options):
            self._add(i, option)

    def _add(self, i: int, option: Any) -> None:
        """Register option ``i``, refusing a domain or a duplicate of an earlier one."""
        if _is_domain(option):
            raise invalid(
                "Choice",
                "options",
                "plain values (numbers, strings, None, lists), not domains",
                shown(option),
                "Fix: choose among values; a domain cannot be nested in another.",
            )
        if self._find(option) is not None:
            raise invalid(
                "Choice",
                "options",
                "a list without duplicates",
                f"{shown(option)} twice",
                "Fix: remove the duplicate.",
            )
        key = _value_key(option)
        if key is None:
            self._unhashable.append(i)
        else:
            self._positions[key] = i

    def _find(self, value: Any) -> int | None:
        """The position of the option that is the same as ``value`` (:func:`_same_value`),
        or ``None``."""
        key = _value_key(value)
        if key is not None:
            found = self._positions.get(key)
            if found is not None:
                return found
            candidates = self._unhashable
        else:  # an unhashable value: compare it with every option
            candidates = [*self._positions.values(), *self._unhashable]
        return next((i for i in candidates if _same_value(self.options[i], value)), None)

    def index(self, value: Any) -> int:
        """The position of ``value`` among the options."""
        found = self._find(value)
        if found is None:
            raise invalid("Choice", "value", f"one of {self._shown_options()}", shown(value))
        return found

    def _shown_options(self) -> str:
        return shown(list(self.options))

    def sample(self, rng: np.random.Generator) -> Any:
        return self.options[int(rng.integers(len(self.options)))]

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> Any:
        _check_factor(factor)
        i = self.index(value)
        if not self.ordered:
            return self.sample(rng)
        if factor == 1.0:
            return self.options[i]
        j = i + (1 if factor > 1.0 else -1)
        return self.options[min(len(self.options) - 1, max(0, j))]

    def noise(self, value: Any, sigma: float, rng: np.random.Generator) -> Any:
        i = self.index(value)
        if not self.ordered:
            return self.sample(rng)
        span = len(self.options) - 1
        j = round(min(float(span), max(0.0, i + sigma * span * float(rng.standard_normal()))))
        return self.options[j]

    def validate(self, value: Any, *, name: str = "value") -> Any:
        try:
            return self.options[self.index(value)]
        except InvalidArgumentError:
            raise invalid(
                "Choice",
                name,
                f"one of {self._shown_options()}",
                shown(value),
                "Fix: use one of the options, or add the value to gp.Choice([...]).",
            ) from None

    def __repr__(self) -> str:
        ordered = ", ordered=True" if self.ordered else ""
        return f"Choice({list(self.options)!r}{ordered})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Choice)
            and self.ordered == other.ordered
            and len(self.options) == len(other.options)
            and all(_same_value(a, b) for a, b in zip(self.options, other.options, strict=True))
        )

    def __hash__(self) -> int:
        return hash(("Choice", self.ordered, len(self.options)))


class Fixed(Domain):
    """A value that is part of every config but never explored."""

    mutable = False

    def __init__(self, value: Any) -> None:
        if _is_domain(value):
            raise invalid(
                "Fixed",
                "value",
                "a plain value, not a domain",
                shown(value),
                "Fix: declare the hyperparameter with the domain itself, such as "
                "gp.Float(1e-4, 1e-1), or fix a plain value: gp.Fixed(0.01).",
            )
        self.value = value

    def sample(self, rng: np.random.Generator) -> Any:
        return self.value

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> Any:
        return self.value

    def noise(self, value: Any, sigma: float, rng: np.random.Generator) -> Any:
        return self.value

    def validate(self, value: Any, *, name: str = "value") -> Any:
        if _same_value(value, self.value):
            return self.value
        raise invalid(
            "Fixed",
            name,
            f"the fixed value {shown(self.value)}",
            shown(value),
            "Fix: drop it from the config, or declare it with gp.Float/gp.Int/gp.Choice.",
        )

    def __repr__(self) -> str:
        return f"Fixed({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fixed) and _same_value(self.value, other.value)

    def __hash__(self) -> int:
        # an unhashable fixed value (a list) hashes as None: equal objects still agree
        return hash(("Fixed", _value_key(self.value)))


#: How to declare each kind of domain, for the message that refuses the class itself.
_DECLARE = {
    "Float": "gp.Float(1e-4, 1e-1)",
    "Int": "gp.Int(1, 8)",
    "Choice": "gp.Choice(['adam', 'sgd'])",
    "Fixed": "gp.Fixed(0.9)",
}


def _checked_name(name: Any) -> str:
    """A hyperparameter's name: a non-empty string."""
    if not isinstance(name, str) or not name:
        raise invalid("Space", "name", "a non-empty string", shown(name))
    return name


def _as_domain(name: str, spec: Any) -> Domain:
    """The domain of hyperparameter ``name`` declared as ``spec``: a domain, or a plain
    value that is fixed. A domain class and a collection are refused."""
    if isinstance(spec, Domain):
        return spec
    if isinstance(spec, type) and issubclass(spec, Domain):
        example = _DECLARE.get(spec.__name__, _DECLARE["Float"])
        raise invalid(
            "Space",
            name,
            "a domain (an instance such as gp.Float(low, high)) or a plain value, not a class",
            shown(spec),
            f"Fix: give its bounds or options, such as {name}={example}.",
        )
    if isinstance(spec, (list, tuple, set, frozenset, dict)):
        raise invalid(
            "Space",
            name,
            "a domain (gp.Float, gp.Int, gp.Choice, gp.Fixed) or a plain value",
            shown(spec),
            f"Fix: gp.Choice({shown(list(spec))}) for categories, or gp.Fixed(...) for a value "
            "that never changes.",
        )
    return Fixed(spec)


class Space(Mapping[str, Domain]):
    """The named hyperparameters of a population.

    Args:
        params: A mapping of names to domains (alternative to keyword arguments).
        **kwargs: Names to domains. A plain value (a number, a string, ``None``) is fixed;
            a list, tuple, set or dict is refused, because whether it means categories or a
            fixed value would depend on its type: wrap it in :class:`Choice` or :class:`Fixed`.
    """

    def __init__(self, params: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        if params is not None and not isinstance(params, Mapping):
            raise invalid(
                "Space",
                "params",
                "a mapping of names to domains (a dict) or None",
                shown(params),
                "Fix: gp.Space({'lr': gp.Float(1e-4, 1e-1)}) or gp.Space(lr=gp.Float(1e-4, 1e-1)).",
            )
        merged: dict[str, Any] = dict(params or {})
        for key in kwargs:
            if key in merged:
                raise invalid("Space", key, "declared once", "it twice")
        merged.update(kwargs)
        if not merged:
            raise invalid(
                "Space",
                "params",
                "at least one hyperparameter",
                "none",
                "Fix: gp.Space(lr=gp.Float(1e-4, 1e-1, log=True)).",
            )
        domains = {_checked_name(name): _as_domain(name, spec) for name, spec in merged.items()}
        self._domains: dict[str, Domain] = domains
        self.mutable_names: tuple[str, ...] = tuple(n for n, d in domains.items() if d.mutable)

    def __getitem__(self, name: str) -> Domain:
        return self._domains[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._domains)

    def __len__(self) -> int:
        return len(self._domains)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={d!r}" for n, d in self._domains.items())
        return f"Space({inner})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self._domains == other._domains

    def __hash__(self) -> int:
        return hash(frozenset(self._domains))

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw a whole config from the prior."""
        return {name: d.sample(rng) for name, d in self._domains.items()}

    def validate(self, config: Mapping[str, Any], *, name: str = "config") -> dict[str, Any]:
        """Check a whole config and return it with canonical types.

        Raises:
            InvalidArgumentError: a key not in the space, a missing key, or a bad value.
        """
        if not isinstance(config, Mapping):
            raise invalid("Space.validate", name, "a dict of hyperparameters", shown(config))
        unknown = [k for k in config if k not in self._domains]
        if unknown:
            raise invalid(
                "Space.validate",
                name,
                f"made of the space's keys {list(self._domains)}",
                f"the unknown key(s) {unknown}",
                "Fix: declare them in gp.Space(...) or remove them from the config.",
            )
        missing = [k for k in self._domains if k not in config]
        if missing:
            raise invalid(
                "Space.validate",
                name,
                "complete",
                f"no value for {missing}",
                "Fix: give a value for each hyperparameter.",
            )
        return {k: d.validate(config[k], name=f"{name}[{k!r}]") for k, d in self._domains.items()}

    def complete(
        self, config: Mapping[str, Any], rng: np.random.Generator, *, name: str = "config"
    ) -> dict[str, Any]:
        """Validate a partial config, drawing the missing values from the prior."""
        if not isinstance(config, Mapping):
            raise invalid("Space.complete", name, "a dict of hyperparameters", shown(config))
        full = dict(config)
        for key, domain in self._domains.items():
            if key not in full:
                full[key] = domain.sample(rng)
        return self.validate(full, name=name)
