"""The categorical domain: :class:`Choice` among options, ordered or not."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from genepool._errors import InvalidArgumentError, invalid
from genepool._redact import shown
from genepool.space._base import Domain, check_factor, is_domain
from genepool.space._values import same_value, value_key


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
        #: Where each hashable option is, by its key (:func:`value_key`).
        self._positions: dict[tuple[str, Any], int] = {}
        #: Where the unhashable options are.
        self._unhashable: list[int] = []
        for i, option in enumerate(self.options):
            self._add(i, option)

    def _add(self, i: int, option: Any) -> None:
        """Register option ``i``, refusing a domain or a duplicate of an earlier one."""
        if is_domain(option):
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
        key = value_key(option)
        if key is None:
            self._unhashable.append(i)
        else:
            self._positions[key] = i

    def _find(self, value: Any) -> int | None:
        """The position of the option that is the same as ``value`` (:func:`same_value`),
        or ``None``."""
        key = value_key(value)
        if key is not None:
            found = self._positions.get(key)
            if found is not None:
                return found
            candidates = self._unhashable
        else:  # an unhashable value: compare it with every option
            candidates = [*self._positions.values(), *self._unhashable]
        return next((i for i in candidates if same_value(self.options[i], value)), None)

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
        check_factor(factor)
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
            and all(same_value(a, b) for a, b in zip(self.options, other.options, strict=True))
        )

    def __hash__(self) -> int:
        return hash(("Choice", self.ordered, len(self.options)))
