"""A run's settings, declared once: what each may be, and the one check of them all.

In scikit-learn's style: :data:`RUN` maps each setting of :func:`genepool.run` to the
constraints its value may meet (an interval, a set of options, a type), and
:func:`check` tests values against the table and raises one message shape::

    The 'workers' parameter of run must be an integer in [1, 1024]. Got 0 instead. Fix: ...

``gp.run``, :meth:`genepool.Result.open`, the config file of ``genepool run`` (and its
``--check``) all check with it, so a value gets the same answer wherever it is given.

Example:
    >>> check("run", {"workers": 2, "lease_seconds": 30.0})
    >>> check("run", {"workers": 0})  # doctest: +ELLIPSIS
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
from genepool.checkpoints import CheckpointStore
from genepool.policy import Budget, Ready
from genepool.space import Space
from genepool.store import Store

__all__ = [
    "CONFIG_FILE",
    "READ_BACK",
    "RUN",
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
    "shown",
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


#: Every setting of :func:`genepool.run`: what its value may be.
RUN: dict[str, Setting] = {
    "space": Setting((TypeOf((Space,), "a gp.Space"),), "Fix: gp.Space(lr=gp.Float(1e-4, 1e-1))."),
    "metric": Setting((Text("the name of a reported metric"),), "Fix: metric='accuracy'."),
    "ready": Setting((TypeOf((Ready,), "a ready rule (gp.Every(4))"),), "Fix: ready=gp.Every(4)."),
    "budget": Setting((TypeOf((Budget,), "a gp.Budget"),), "Fix: budget=gp.Budget(steps=200)."),
    "mode": Setting((Options(("max", "min")),)),
    "population": Setting((Interval("int", 1, 1_000_000), NONE), "Fix: population=16."),
    "initial": Setting((ListOfTables(), NONE), "Fix: initial=[{'lr': 0.01}, {'lr': 0.1}]."),
    "seed": Setting((Interval("int", 0, 2**63 - 1), NONE), "Fix: seed=0."),
    "name": Setting((Text("a run name"),), "Fix: name='run'."),
    "max_failures": Setting((Interval("int", 1, 10**9),), "Fix: max_failures=3."),
    "storage": Setting(
        (Text("a store URL"), TypeOf((Store,), "a gp.Store"), NONE),
        "Fix: storage='sqlite:///pbt.db', 'postgresql://user@host/db' or 'memory'.",
    ),
    "checkpoints": Setting(
        (
            Text("a folder or an fsspec URL", path=True),
            TypeOf((CheckpointStore,), "a gp.CheckpointStore"),
            NONE,
        ),
        "Fix: checkpoints='checkpoints/' (a folder every worker can reach).",
    ),
    "workers": Setting(
        (Interval("int", 1, 1024),), "Fix: workers=2 (worker processes; 1 trains in this process)."
    ),
    "executor": Setting((HasMethod("run", "an executor (gp.ProcessExecutor(workers=2))"), NONE)),
    "resume": Setting((BOOL, NONE), "Fix: resume=None continues the run if it exists."),
    "revive": Setting((BOOL,)),
    "allow_config_change": Setting((BOOL,)),
    "synchronous": Setting((BOOL,)),
    "aligned": Setting((BOOL, NONE), "Fix: aligned=None (on for an asynchronous run)."),
    "lease_seconds": Setting(
        (Interval("real", 0, None, closed="neither"),),
        "Fix: lease_seconds=30 (how long a claim lasts without a heartbeat).",
    ),
    "progress_timeout": Setting(
        (Interval("real", 0, None, closed="neither"), NONE),
        "Fix: progress_timeout=None (ten times the slowest round, at least ten minutes).",
    ),
    "max_crashes": Setting(
        (Interval("int", 1, 10**9),), "Fix: max_crashes=3 (worker deaths before it stops)."
    ),
    "max_ahead": Setting(
        (Interval("int", 0, 10**9), NONE),
        "Fix: max_ahead=None (no limit), or how many ready rounds, e.g. max_ahead=2.",
    ),
    "max_resident": Setting(
        (Interval("int", 1, 1_000_000), NONE),
        "Fix: pass how many members' sessions a worker may keep, e.g. max_resident=4.",
    ),
    "keep": Setting(
        (Interval("int", 0, 1_000_000),),
        "Fix: pass how many previous checkpoints each member keeps, e.g. keep=1.",
    ),
    "fsync": Setting((BOOL,)),
    "clock": Setting((HasMethod("now", "a clock (gp.ManualClock())"), NONE)),
    "recent_window": Setting((Interval("int", 2, 1_000_000),), "Fix: recent_window=100."),
    "metrics_every": Setting((Interval("int", 1, 10**9),), "Fix: metrics_every=1."),
    "store": Setting((TypeOf((Store,), "a gp.Store"), NONE), "Fix: pass the URL as storage=."),
    "progress": Setting((BOOL,)),
    # never from a file or a store: it lets checkpoints run code when read
    "trust_checkpoints": Setting((BOOL,)),
}

#: The settings a config file of ``genepool run`` may hold at its top level (beside its
#: tables ``space``, ``ready``, ``budget``, ``exploit`` and ``explore``): those that are
#: plain data. ``trust_checkpoints`` is a flag only, never read from a file.
CONFIG_FILE = frozenset(RUN) - {
    "space",
    "ready",
    "budget",
    "executor",
    "clock",
    "store",
    "progress",
    "trust_checkpoints",
}


#: What reading a run back (:meth:`genepool.Result.open`) takes: a store is required.
READ_BACK: dict[str, Setting] = {
    **RUN,
    "storage": Setting(
        (Text("a store URL"), TypeOf((Store,), "a gp.Store")),
        "Fix: storage='sqlite:///pbt.db' (the run's store).",
    ),
}


def check(owner: str, values: Mapping[str, Any], table: Mapping[str, Setting] = RUN) -> None:
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
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"
