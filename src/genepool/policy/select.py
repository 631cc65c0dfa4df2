"""Exploit: the paper's three rules for choosing whom a member copies.

Each rule is a small strategy whose :meth:`Select.select` is a pure function of the
population snapshot, the member and a random generator: it returns the donor, or ``None``
to keep training. Only members that can donate (a checkpoint with a finite score, not
failed) are ever returned, and a member ranks by the score attached to its checkpoint.
A member whose latest round failed ranks worst.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from genepool._errors import invalid, missing_dependency
from genepool.member import MemberView, Population

__all__ = ["Select", "Tournament", "Truncation", "WelchTTest", "truncation_split"]


class Select(ABC):
    """Chooses a donor for a ready member, or none."""

    @abstractmethod
    def select(
        self, population: Population, member: MemberView, rng: np.random.Generator
    ) -> MemberView | None:
        """Return the member to copy, or ``None`` to keep training as is."""

    def never_selects(self, population: Population, member: MemberView) -> bool:
        """Whether :meth:`select` returns ``None`` whatever the generator draws (then no
        generator need be made: making one costs more than the rest of a decision). The
        default, ``False``, always asks :meth:`select`."""
        return False


def truncation_split(n: int, fraction: float) -> int:
    """How many members the bottom and the top each hold in a population of ``n``.

    ``ceil(fraction * n)``, at least one, and never more than ``n // 2`` so that the two
    never overlap (a population of 2 has one of each).
    """
    if n < 2:
        return 0
    return min(n // 2, max(1, math.ceil(fraction * n - 1e-9)))


class Truncation(Select):
    """Truncation selection: the bottom ``fraction`` copies a uniformly chosen member of the top.

    Ties are broken at random (from the decision's generator), so equal scores do not favour
    low ids. The member itself is ranked by its own latest checkpoint score.

    Args:
        fraction: The share of the population in the bottom and in the top, in (0, 0.5].

    Example:
        >>> import numpy as np, genepool as gp
        >>> from genepool.member import MemberView, Population, CheckpointRef
        >>> def m(i, s):
        ...     ckpt = CheckpointRef(f"c{i}", i, 4, 4, s)
        ...     return MemberView(id=i, hparams={}, score=s, checkpoint=ckpt)
        >>> pop = Population(tuple(m(i, float(i)) for i in range(5)))
        >>> gp.Truncation(0.2).select(pop, pop[0], np.random.default_rng(0)).id
        4
    """

    def __init__(self, fraction: float = 0.2) -> None:
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float))
            or not (0 < fraction <= 0.5)
        ):
            raise invalid(
                "Truncation",
                "fraction",
                "in (0, 0.5]",
                repr(fraction),
                "Fix: the paper uses 0.2 (bottom 20% copy the top 20%).",
            )
        self.fraction = float(fraction)

    def select(
        self, population: Population, member: MemberView, rng: np.random.Generator
    ) -> MemberView | None:
        ranked = population.donors(exclude=member.id)
        ranked.append(member)
        n = len(ranked)
        k = truncation_split(n, self.fraction)
        if k == 0:
            return None
        # random order first, then a stable sort: ties fall in random order
        order = rng.permutation(n)
        shuffled = [ranked[i] for i in order]
        shuffled.sort(key=population.fitness)
        bottom = shuffled[:k]
        if not any(m is member for m in bottom):
            return None
        top: list[MemberView] = shuffled[n - k :]
        donor: MemberView = top[int(rng.integers(k))]
        return donor

    def never_selects(self, population: Population, member: MemberView) -> bool:
        """True when ``k`` members or more rank strictly below the member: no order of the
        ties puts it in the bottom ``k``. (Never for a subclass with its own :meth:`select`.)"""
        if type(self).select is not Truncation.select:
            return False
        ranked = population.donors(exclude=member.id)
        k = truncation_split(len(ranked) + 1, self.fraction)
        if k == 0:
            return True
        fitness = population.fitness
        mine = fitness(member)
        return sum(1 for m in ranked if fitness(m) < mine) >= k

    def __repr__(self) -> str:
        return f"Truncation({self.fraction!r})"


class Tournament(Select):
    """Binary tournament: compare with one uniformly chosen member; copy it if it is better.

    Example:
        >>> import numpy as np, genepool as gp
        >>> from genepool.member import MemberView, Population, CheckpointRef
        >>> def m(i, s):
        ...     ckpt = CheckpointRef(f"c{i}", i, 4, 4, s)
        ...     return MemberView(id=i, hparams={}, score=s, checkpoint=ckpt)
        >>> pop = Population((m(0, 0.1), m(1, 0.9)))
        >>> gp.Tournament().select(pop, pop[0], np.random.default_rng(0)).id
        1
    """

    def select(
        self, population: Population, member: MemberView, rng: np.random.Generator
    ) -> MemberView | None:
        others = population.donors(exclude=member.id)
        if not others:
            return None
        other = others[int(rng.integers(len(others)))]
        return other if population.fitness(other) > population.fitness(member) else None

    def __repr__(self) -> str:
        return "Tournament()"


class WelchTTest(Select):
    """Welch's t-test selection (the paper's rule for RL).

    Compare with one uniformly chosen member: copy it if the mean of its last ``window``
    scores since its last exploit is better than the member's and Welch's t-test (unequal
    variances, ``scipy.stats.ttest_ind``) finds the difference significant at ``alpha``.
    Both need at least ``min_samples`` scores. A failed member copies without a test.

    Args:
        window: How many recent scores to compare (the paper: the last 10 episodes).
        alpha: The significance level.
        min_samples: The fewest scores either side needs for a test (at least 2).
    """

    def __init__(self, window: int = 10, *, alpha: float = 0.05, min_samples: int = 2) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise invalid("WelchTTest", "window", "an integer >= 2", repr(window))
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            raise invalid("WelchTTest", "alpha", "in (0, 1)", repr(alpha))
        if (
            isinstance(min_samples, bool)
            or not isinstance(min_samples, int)
            or not 2 <= min_samples <= window
        ):
            raise invalid(
                "WelchTTest",
                "min_samples",
                f"an integer in [2, window={window}]",
                repr(min_samples),
            )
        try:
            from scipy import stats
        except ImportError:
            raise missing_dependency("scipy", "scipy", "WelchTTest selection") from None
        self._ttest: Any = stats.ttest_ind
        self.window = window
        self.alpha = float(alpha)
        self.min_samples = min_samples

    def select(
        self, population: Population, member: MemberView, rng: np.random.Generator
    ) -> MemberView | None:
        others = population.donors(exclude=member.id)
        if not others:
            return None
        other = others[int(rng.integers(len(others)))]
        if member.failed:
            return other
        sign = 1.0 if population.mode == "max" else -1.0
        mine = [sign * s for s in member.recent[-self.window :] if math.isfinite(s)]
        theirs = [sign * s for s in other.recent[-self.window :] if math.isfinite(s)]
        if len(mine) < self.min_samples or len(theirs) < self.min_samples:
            return None
        if float(np.mean(theirs)) <= float(np.mean(mine)):
            return None
        if np.ptp(theirs) == 0 and np.ptp(mine) == 0:
            return other  # both constant (saturated scores): the difference is certain
        with warnings.catch_warnings():
            # scipy warns of precision loss when one sample is (nearly) constant
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(self._ttest(theirs, mine, equal_var=False).pvalue)
        if math.isnan(p):
            return None
        return other if p < self.alpha else None

    def __repr__(self) -> str:
        return f"WelchTTest(window={self.window}, alpha={self.alpha})"
