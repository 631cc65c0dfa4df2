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

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from genepool._errors import InvalidArgumentError, invalid

__all__ = ["Choice", "Domain", "Fixed", "Float", "Int", "Space"]


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _check_factor(factor: float) -> None:
    if not (math.isfinite(factor) and factor > 0):
        raise invalid("perturb", "factor", "a finite number > 0", repr(factor))


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

    def _check_bounds(self, low: Any, high: Any, log: bool) -> None:
        owner = type(self).__name__
        for arg, v in (("low", low), ("high", high)):
            if not _is_real(v) or not math.isfinite(float(v)):
                raise invalid(owner, arg, "a finite number", repr(v))
        if not low < high:
            raise invalid(
                owner,
                "low",
                "less than 'high'",
                f"low={low!r}, high={high!r}",
                "Fix: swap them, or use gp.Fixed(value) for a value that never changes.",
            )
        if not isinstance(log, bool):
            raise invalid(owner, "log", "True or False", repr(log))
        if log and low <= 0:
            raise invalid(
                owner,
                "low",
                "> 0 when log=True",
                f"low={low!r}",
                "Fix: use a positive lower bound, or log=False for a linear scale.",
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


class Float(_Numeric):
    """A real hyperparameter in ``[low, high]``, uniform or (``log=True``) log-uniform.

    Perturbing multiplies by the factor (for a log scale that is a shift in log space);
    a value that multiplication cannot move (0 on a linear scale) moves by
    ``(factor - 1) * (high - low)``. Results are clipped to the bounds.
    """

    def __init__(self, low: float, high: float, *, log: bool = False) -> None:
        self._check_bounds(low, high, log)
        self.low = float(low)
        self.high = float(high)
        self.log = log

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
        if not _is_real(value) or not math.isfinite(float(value)):
            raise invalid(
                "Float",
                name,
                "a finite real number",
                repr(value),
                "Fix: give a number (not a bool, a string or NaN).",
            )
        v = float(value)
        if not self.low <= v <= self.high:
            raise invalid(
                "Float",
                name,
                f"within [{self.low!r}, {self.high!r}]",
                repr(value),
                "Fix: change the value or widen the declared bounds.",
            )
        return v


class Int(_Numeric):
    """An integer hyperparameter in ``[low, high]`` (both included), optionally log-uniform.

    Perturbing multiplies by the factor and rounds; it always moves by at least one unit
    in the factor's direction, unless the value sits on that bound already.
    """

    def __init__(self, low: int, high: int, *, log: bool = False) -> None:
        for arg, v in (("low", low), ("high", high)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)):
                raise invalid("Int", arg, "an integer", repr(v), "Fix: use gp.Float for reals.")
        self._check_bounds(low, high, log)
        self.low = int(low)
        self.high = int(high)
        self.log = log

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
        ok = _is_real(value) and math.isfinite(float(value)) and float(value).is_integer()
        if not ok:
            raise invalid(
                "Int",
                name,
                "an integer",
                repr(value),
                "Fix: give a whole number (not a bool), or declare the hyperparameter gp.Float.",
            )
        v = int(value)
        if not self.low <= v <= self.high:
            raise invalid(
                "Int",
                name,
                f"within [{self.low}, {self.high}]",
                repr(value),
                "Fix: change the value or widen the declared bounds.",
            )
        return v


class Choice(Domain):
    """A categorical hyperparameter.

    With ``ordered=True`` the options are a scale (say batch sizes): perturbing moves to the
    neighbour in the factor's direction and noise moves along the index. Unordered options
    have no neighbours, so exploring one resamples it from the prior.
    """

    def __init__(self, options: Sequence[Any], *, ordered: bool = False) -> None:
        if isinstance(options, (str, bytes)) or not isinstance(options, Sequence):
            raise invalid("Choice", "options", "a list of options", repr(options))
        if len(options) == 0:
            raise invalid(
                "Choice", "options", "a non-empty list", "[]", "Fix: give at least one option."
            )
        for i, a in enumerate(options):
            for b in options[i + 1 :]:
                if isinstance(a, bool) == isinstance(b, bool) and a == b:
                    raise invalid(
                        "Choice",
                        "options",
                        "a list without duplicates",
                        f"{a!r} twice",
                        "Fix: remove the duplicate.",
                    )
        if not isinstance(ordered, bool):
            raise invalid("Choice", "ordered", "True or False", repr(ordered))
        self.options: tuple[Any, ...] = tuple(options)
        self.ordered = ordered

    def index(self, value: Any) -> int:
        """The position of ``value`` among the options."""
        for i, option in enumerate(self.options):
            if type(option) is type(value) and option == value:
                return i
        for i, option in enumerate(self.options):
            if option == value and not isinstance(value, bool) and not isinstance(option, bool):
                return i
        raise invalid("Choice", "value", f"one of {list(self.options)!r}", repr(value))

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
                f"one of {list(self.options)!r}",
                repr(value),
                "Fix: use one of the options, or add the value to gp.Choice([...]).",
            ) from None

    def __repr__(self) -> str:
        ordered = ", ordered=True" if self.ordered else ""
        return f"Choice({list(self.options)!r}{ordered})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Choice)
            and self.options == other.options
            and self.ordered == other.ordered
        )

    def __hash__(self) -> int:
        return hash(("Choice", self.ordered, len(self.options)))


class Fixed(Domain):
    """A value that is part of every config but never explored."""

    mutable = False

    def __init__(self, value: Any) -> None:
        self.value = value

    def sample(self, rng: np.random.Generator) -> Any:
        return self.value

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> Any:
        return self.value

    def noise(self, value: Any, sigma: float, rng: np.random.Generator) -> Any:
        return self.value

    def validate(self, value: Any, *, name: str = "value") -> Any:
        same_kind = isinstance(value, bool) == isinstance(self.value, bool)
        if value is self.value or (same_kind and value == self.value):
            return self.value
        raise invalid(
            "Fixed",
            name,
            f"the fixed value {self.value!r}",
            repr(value),
            "Fix: drop it from the config, or declare it with gp.Float/gp.Int/gp.Choice.",
        )

    def __repr__(self) -> str:
        return f"Fixed({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fixed) and bool(self.value == other.value)

    def __hash__(self) -> int:
        try:
            return hash(("Fixed", self.value))
        except TypeError:  # an unhashable fixed value (a list): equal objects still agree
            return hash("Fixed")


class Space(Mapping[str, Domain]):
    """The named hyperparameters of a population.

    Args:
        params: A mapping of names to domains (alternative to keyword arguments).
        **kwargs: Names to domains. A plain value (a number, a string, ``None``) is fixed;
            a list, tuple, set or dict is refused, because whether it means categories or a
            fixed value would depend on its type: wrap it in :class:`Choice` or :class:`Fixed`.
    """

    def __init__(self, params: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
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
        domains: dict[str, Domain] = {}
        for name, spec in merged.items():
            if not isinstance(name, str) or not name:
                raise invalid("Space", "name", "a non-empty string", repr(name))
            if isinstance(spec, Domain):
                domains[name] = spec
            elif isinstance(spec, (list, tuple, set, frozenset, dict)):
                raise invalid(
                    "Space",
                    name,
                    "a domain (gp.Float, gp.Int, gp.Choice, gp.Fixed) or a plain value",
                    repr(spec),
                    f"Fix: gp.Choice({list(spec)!r}) for categories, or gp.Fixed(...) for a value "
                    "that never changes.",
                )
            else:
                domains[name] = Fixed(spec)
        self._domains = domains
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
            raise invalid("Space.validate", name, "a dict of hyperparameters", repr(config))
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
            raise invalid("Space.complete", name, "a dict of hyperparameters", repr(config))
        full = dict(config)
        for key, domain in self._domains.items():
            if key not in full:
                full[key] = domain.sample(rng)
        return self.validate(full, name=name)
