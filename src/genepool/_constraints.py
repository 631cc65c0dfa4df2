"""Constraints on a value, and the one check of values against a table of them.

In scikit-learn's style (written here, not imported from its private module): a
:class:`Setting` lists the constraints a value may meet (an :class:`Interval`, a few
:class:`Options`, a type), and :func:`check` tests values against a table of settings and
raises one message shape::

    The 'workers' parameter of run must be an integer in [1, 1024]. Got 0 instead. Fix: ...

This module knows no genepool type, so every module may use it: the tables of a run's
settings are in :mod:`genepool._settings`, the rules' checks in
:mod:`genepool.policy._checks`.

Example:
    >>> table = {"workers": Setting((Interval("int", 1, 1024),), "Fix: workers=2.")}
    >>> check("run", {"workers": 2}, table)
    >>> check("run", {"workers": 0}, table)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    genepool._errors.InvalidArgumentError: The 'workers' parameter of run must be ... Got 0 ...
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from genepool._errors import invalid
from genepool._redact import shown

__all__ = [
    "BOOL",
    "NONE",
    "BoolValue",
    "Constraint",
    "HasMethod",
    "Interval",
    "ListOfTables",
    "Options",
    "Setting",
    "Text",
    "TypeOf",
    "check",
]


class Constraint(Protocol):
    """One thing a value may be: ``accepts`` it or not, and says what it is in words."""

    def accepts(self, value: object) -> bool: ...

    def __str__(self) -> str: ...


@dataclass(frozen=True)
class Interval:
    """A number in an interval: an integer (``kind="int"``, never a bool) or any real
    number (``"real"``, finite). ``None`` for an open end."""

    kind: Literal["int", "real"]
    low: float | None
    high: float | None
    closed: Literal["both", "left", "right", "neither"] = "both"

    def accepts(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False  # a bool is no count; a string is no number
        number: float
        if self.kind == "int":
            if not isinstance(value, numbers.Integral):
                return False
            number = int(value)  # exact, however large
        else:
            try:
                number = float(value)
            except OverflowError:  # an int beyond any float
                return False
            if not math.isfinite(number):
                return False
        low_open = self.closed in ("right", "neither")
        high_open = self.closed in ("left", "neither")
        above_low = self.low is None or number > self.low or (number == self.low and not low_open)
        below_high = (
            self.high is None or number < self.high or (number == self.high and not high_open)
        )
        return above_low and below_high

    def __str__(self) -> str:
        what = "an integer" if self.kind == "int" else "a finite number"
        if self.low is not None and self.high is not None:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            return f"{what} in {left}{_number(self.low)}, {_number(self.high)}{right}"
        if self.low is not None:
            sign = ">=" if self.closed in ("both", "left") else ">"
            return f"{what} {sign} {_number(self.low)}"
        if self.high is not None:
            sign = "<=" if self.closed in ("both", "right") else "<"
            return f"{what} {sign} {_number(self.high)}"
        return what


@dataclass(frozen=True)
class Options:
    """One of a few values (compared by type and value: ``1`` is not ``True``)."""

    values: tuple[object, ...]

    def accepts(self, value: object) -> bool:
        return any(type(value) is type(v) and value == v for v in self.values)

    def __str__(self) -> str:
        return " or ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class TypeOf:
    """An instance of one of ``types``, described as ``described`` (``"a gp.Space"``)."""

    types: tuple[type, ...]
    described: str

    def accepts(self, value: object) -> bool:
        return isinstance(value, self.types)

    def __str__(self) -> str:
        return self.described


class HasMethod:
    """Any object with a method ``method`` (a protocol such as a clock's ``now``)."""

    def __init__(self, method: str, described: str) -> None:
        self.method = method
        self.described = described

    def accepts(self, value: object) -> bool:
        return not isinstance(value, type) and callable(getattr(value, self.method, None))

    def __str__(self) -> str:
        return self.described


class BoolValue:
    """``True`` or ``False``, never a truthy string or number (``"no"`` is not false)."""

    def accepts(self, value: object) -> bool:
        return type(value) is bool

    def __str__(self) -> str:
        return "True or False"


class Text:
    """A non-empty string (``"path"``: also an :class:`os.PathLike`)."""

    def __init__(self, described: str = "a non-empty string", *, path: bool = False) -> None:
        self.described = described
        self.path = path

    def accepts(self, value: object) -> bool:
        if self.path and isinstance(value, os.PathLike):
            value = os.fspath(value)
        return isinstance(value, str) and bool(value) and "\x00" not in value

    def __str__(self) -> str:
        return self.described


class ListOfTables:
    """A list of mappings with string keys (``initial``: one config per member)."""

    def accepts(self, value: object) -> bool:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            return False
        return all(isinstance(c, Mapping) and all(isinstance(k, str) for k in c) for c in value)

    def __str__(self) -> str:
        return "a list of dicts (one config per member)"


NONE = Options((None,))
BOOL = BoolValue()


@dataclass(frozen=True)
class Setting:
    """A setting's constraints (its value must meet one) and how to fix a wrong value."""

    constraints: tuple[Constraint, ...]
    fix: str = ""


def check(owner: str, values: Mapping[str, Any], table: Mapping[str, Setting]) -> None:
    """Check ``values`` against ``table``; the first that meets none of its constraints
    raises. Names the table does not have are left to the caller.

    Raises:
        InvalidArgumentError: ``The 'x' parameter of owner must be ... Got ... instead.``
    """
    for name, value in values.items():
        setting = table.get(name)
        if setting is None or any(c.accepts(value) for c in setting.constraints):
            continue
        must = _one_of([word for c in setting.constraints for word in _words(c)])
        raise invalid(owner, name, must, shown(value), setting.fix or None)


def _words(constraint: Constraint) -> list[str]:
    """What a constraint accepts, as the items of a list (``True``, ``False``)."""
    if isinstance(constraint, BoolValue):
        return ["True", "False"]
    if isinstance(constraint, Options):
        return [repr(v) for v in constraint.values]
    return [str(constraint)]


def _one_of(words: Sequence[str]) -> str:
    """``"a, b or c"``."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _number(x: float) -> str:
    """A bound as a message shows it: an int exactly (``9223372036854775807``), a float
    short (``1e+09``)."""
    if isinstance(x, int):
        return str(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f"{x:g}"
