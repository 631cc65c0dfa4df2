"""Checks of the policy constructors' arguments: each refuses a bad value with an
:class:`~genepool.InvalidArgumentError` that names the argument, never a raw error (an
``OverflowError`` for ``2**1100``, a ``TypeError`` for ``None``)."""

from __future__ import annotations

from typing import Any

from genepool._errors import invalid
from genepool._redact import shown
from genepool.space import finite_float

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
    """Refuse ``value`` unless it is an int or a float (not a bool) that a float holds
    finitely, ``> above`` and ``>= at_least`` when given; ``None`` too if ``optional``."""
    if optional and value is None:
        return
    number = finite_float(value) if isinstance(value, (int, float)) else None
    if number is None:
        kind = "a finite number" + (" or None" if optional else "")
        raise invalid(owner, name, kind, shown(value))
    if above is not None and not number > above:
        raise invalid(owner, name, f"> {above}", shown(value))
    if at_least is not None and not number >= at_least:
        raise invalid(owner, name, f">= {at_least}", shown(value))


def check_integer(
    owner: str, name: str, value: Any, *, at_least: int, at_most: int | None = None
) -> None:
    """Refuse ``value`` unless it is an int (not a bool) in ``[at_least, at_most]``."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= at_least
    if not ok or (at_most is not None and value > at_most):
        bounds = f">= {at_least}" if at_most is None else f"in [{at_least}, {at_most}]"
        raise invalid(owner, name, f"an integer {bounds}", shown(value))


def check_probability(owner: str, name: str, p: Any) -> float:
    """``p`` as a float, refused unless it is a number in ``[0, 1]`` (not a bool)."""
    number = finite_float(p) if isinstance(p, (int, float)) else None
    if number is None or not 0.0 <= number <= 1.0:
        raise invalid(owner, name, "a probability in [0, 1]", shown(p))
    return number
