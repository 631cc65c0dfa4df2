"""Explore: how a member's hyperparameters change after it exploits.

Each strategy is pure: ``explore(space, hparams, rng)`` returns a new dict and leaves the
input alone. Fixed values never change, and every value stays inside its declared bounds
with its declared type (the space's domains guarantee it; a user function is checked).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from genepool._errors import InvalidArgumentError, invalid
from genepool.member import MemberView, Population
from genepool.policy._checks import check_number, check_probability, shown
from genepool.space import Domain, Space

__all__ = ["Explore", "ExploreFunction", "GaussianNoise", "Perturb", "Resample"]


class Explore(ABC):
    """Turns a member's hyperparameters into new ones."""

    #: How many of its latest intervals (:attr:`MemberView.intervals`) each member keeps
    #: for this strategy to read: 0 for one that reads none (the store keeps none).
    intervals: int = 0

    @abstractmethod
    def explore(
        self, space: Space, hparams: Mapping[str, Any], rng: np.random.Generator
    ) -> dict[str, Any]:
        """Return new hyperparameters (a new dict; ``hparams`` is not changed)."""

    def intervals_for(self, population: int | None) -> int:
        """:attr:`intervals` for a run of ``population`` members (``None``: not known)."""
        return self.intervals

    def check(self, space: Space) -> None:  # noqa: B027 - most strategies explore any space
        """Refuse a ``space`` this strategy cannot explore (called when the policy is made)."""

    def explore_in(
        self,
        space: Space,
        hparams: Mapping[str, Any],
        rng: np.random.Generator,
        *,
        population: Population,
        member: MemberView,
    ) -> tuple[dict[str, Any], Mapping[str, Any] | None]:
        """New hyperparameters for ``member`` deciding in ``population``, and what chose
        them as plain data for the event (``None``: nothing to record). A strategy that
        reads the population (:class:`genepool.PB2`) overrides it; others explore
        ``hparams`` alone."""
        return self.explore(space, hparams, rng), None


class _PerValue(Explore):
    """Moves each mutable value on its own, or (probability ``resample``) redraws it."""

    resample: float = 0.0

    @abstractmethod
    def _move(self, domain: Domain, value: Any, rng: np.random.Generator) -> Any:
        """The moved value (inside the domain)."""

    def explore(
        self, space: Space, hparams: Mapping[str, Any], rng: np.random.Generator
    ) -> dict[str, Any]:
        new = dict(hparams)
        for name in space.mutable_names:
            domain = space[name]
            if self.resample > 0.0 and rng.random() < self.resample:
                new[name] = domain.sample(rng)
            else:
                new[name] = self._move(domain, new[name], rng)
        return new


class Perturb(_PerValue):
    """The paper's perturb: multiply each value by a factor drawn from ``factors``.

    With probability ``resample`` a value is instead drawn again from its prior. For a
    log-scale value the factor is a shift in log space; integers move by at least one unit;
    ordered choices move to the neighbour on the factor's side; unordered choices have no
    neighbours and are resampled. Results are clipped to the bounds.

    Args:
        factors: The factors to draw from, each > 0 (the paper: 0.8 and 1.2).
        resample: The probability, per hyperparameter, of resampling from the prior.

    Example:
        >>> import numpy as np, genepool as gp
        >>> space = gp.Space(lr=gp.Float(1e-4, 1.0, log=True))
        >>> new = gp.Perturb().explore(space, {"lr": 0.1}, np.random.default_rng(0))
        >>> round(new["lr"], 6) in (0.08, 0.12)
        True
    """

    def __init__(self, factors: Sequence[float] = (0.8, 1.2), *, resample: float = 0.0) -> None:
        if isinstance(factors, (str, bytes)) or not isinstance(factors, Sequence) or not factors:
            raise invalid("Perturb", "factors", "a non-empty list of numbers > 0", shown(factors))
        for f in factors:
            check_number("Perturb", "factors", f, above=0)
        self.factors = tuple(float(f) for f in factors)
        self.resample = check_probability("Perturb", "resample", resample)

    def _move(self, domain: Domain, value: Any, rng: np.random.Generator) -> Any:
        factor = self.factors[int(rng.integers(len(self.factors)))]
        return domain.perturb(value, factor, rng)

    def __repr__(self) -> str:
        return f"Perturb({list(self.factors)!r}, resample={self.resample!r})"


class Resample(Explore):
    """Draw each hyperparameter again from its prior with probability ``probability``."""

    def __init__(self, probability: float = 1.0) -> None:
        self.probability = check_probability("Resample", "probability", probability)

    def explore(
        self, space: Space, hparams: Mapping[str, Any], rng: np.random.Generator
    ) -> dict[str, Any]:
        new = dict(hparams)
        for name in space.mutable_names:
            if rng.random() < self.probability:
                new[name] = space[name].sample(rng)
        return new

    def __repr__(self) -> str:
        return f"Resample({self.probability!r})"


class GaussianNoise(_PerValue):
    """Add Gaussian noise (the paper's toy example) to each hyperparameter.

    The noise's standard deviation is ``sigma`` times the domain's width, measured on the
    domain's own scale (log space for ``log=True``; the index for ordered choices), so one
    ``sigma`` suits every hyperparameter. Results are clipped to the bounds; integers and
    ordered choices are rounded; unordered choices are resampled.

    Args:
        sigma: The standard deviation as a fraction of each domain's width (> 0).
        resample: The probability, per hyperparameter, of resampling from the prior instead.
    """

    def __init__(self, sigma: float = 0.1, *, resample: float = 0.0) -> None:
        check_number("GaussianNoise", "sigma", sigma, above=0)
        self.sigma = float(sigma)
        self.resample = check_probability("GaussianNoise", "resample", resample)

    def _move(self, domain: Domain, value: Any, rng: np.random.Generator) -> Any:
        return domain.noise(value, self.sigma, rng)

    def __repr__(self) -> str:
        return f"GaussianNoise({self.sigma!r}, resample={self.resample!r})"


class ExploreFunction(Explore):
    """A user's own explore rule: ``fn(hparams, rng) -> new hparams``.

    The result is checked against the space: a value out of bounds, of the wrong type, a
    changed fixed value or an unknown key raises :class:`~genepool.InvalidArgumentError`.
    Keys the function leaves out keep their values.
    """

    def __init__(
        self, fn: Callable[[dict[str, Any], np.random.Generator], Mapping[str, Any]]
    ) -> None:
        if not callable(fn):
            raise invalid("ExploreFunction", "fn", "a callable (hparams, rng) -> dict", shown(fn))
        self.fn = fn

    def explore(
        self, space: Space, hparams: Mapping[str, Any], rng: np.random.Generator
    ) -> dict[str, Any]:
        out = self.fn(dict(hparams), rng)
        if not isinstance(out, Mapping):
            raise invalid(
                "ExploreFunction",
                "fn",
                "a function returning a dict",
                f"{type(out).__name__} from {self.fn!r}",
            )
        merged = {**hparams, **out}
        try:
            return space.validate(merged, name="explored hparams")
        except InvalidArgumentError as err:
            raise InvalidArgumentError(
                f"The explore function {getattr(self.fn, '__name__', self.fn)!r} returned "
                f"hyperparameters outside the space: {err}"
            ) from None

    def __repr__(self) -> str:
        return f"ExploreFunction({getattr(self.fn, '__name__', self.fn)!r})"
