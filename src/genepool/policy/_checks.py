"""Checks of the policy constructors' arguments, with the run's constraints
(:mod:`genepool._constraints`): each refuses a bad value with an
:class:`~genepool.InvalidArgumentError` in the one message shape, naming the argument,
never a raw error (an ``OverflowError`` for ``2**1100``, a ``TypeError`` for ``None``)."""

from __future__ import annotations

from typing import Any

from genepool._constraints import NONE, Constraint, Interval, Setting, check
from genepool._redact import shown

__all__ = ["check_integer", "check_number", "check_probability", "shown"]


def check_number(
    owner: str,
    name: str,
    value: Any,
    *,
    above: float | None = None,
    at_least: float | None = None,
    optional: bool = False,
) -> None:
    """Refuse ``value`` unless it is a real number (not a bool) that a float holds
    finitely, ``> above`` or ``>= at_least`` when given; ``None`` too if ``optional``."""
    low = above if above is not None else at_least
    interval = Interval("real", low, None, "neither" if above is not None else "both")
    constraints: tuple[Constraint, ...] = (interval, NONE) if optional else (interval,)
    check(owner, {name: value}, {name: Setting(constraints)})


def check_integer(
    owner: str, name: str, value: Any, *, at_least: int, at_most: int | None = None
) -> None:
    """Refuse ``value`` unless it is an integer (not a bool) in ``[at_least, at_most]``."""
    check(owner, {name: value}, {name: Setting((Interval("int", at_least, at_most),))})


def check_probability(owner: str, name: str, p: Any) -> float:
    """``p`` as a float, refused unless it is a number in ``[0, 1]`` (not a bool)."""
    check(owner, {name: p}, {name: Setting((Interval("real", 0, 1),))})
    return float(p)
