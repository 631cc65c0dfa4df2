"""What every domain does (:class:`Domain`): sample, perturb, noise, validate."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from genepool._errors import InvalidArgumentError, invalid
from genepool._redact import shown
from genepool.space._values import finite_float


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


def is_domain(value: Any) -> bool:
    """Whether ``value`` is a domain, or a domain class (``gp.Float`` for ``gp.Float(0, 1)``)."""
    return isinstance(value, Domain) or (isinstance(value, type) and issubclass(value, Domain))


def check_factor(factor: float) -> None:
    """Refuse a perturbation factor that is not a finite number > 0."""
    number = finite_float(factor)
    if number is None or number <= 0:
        raise invalid("perturb", "factor", "a finite number > 0", shown(factor))
