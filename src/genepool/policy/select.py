"""Exploit: the paper's three rules for choosing whom a member copies.

Each rule is a small strategy whose :meth:`Select.select` is a pure function of the
population snapshot, the member and a random generator: it returns the donor, or ``None``
to keep training. Only members that can donate (a checkpoint of their own with a finite
score, not failed) are ever returned. Every member ranks by the score of its own latest
ready, even one that has copied another since (:meth:`Population.rank_value`), so that a
member that just exploited still counts in the population it was measured in. A member
whose latest round failed ranks worst.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from genepool._errors import invalid, missing_dependency
from genepool.member import MemberView, Population
from genepool.policy._checks import check_integer, shown
from genepool.policy._ranking import Ranking

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


def _tie_break(round_: int, member: int) -> int:
    """A pseudo-random order of members for one round (splitmix64 of the two): equal
    scores favour no id, and every decision of a round orders the same ties the same
    way (a synchronous round exploits exactly its bottom ``k``)."""
    z = (round_ * 0x9E3779B97F4A7C15 + member * 0xBF58476D1CE4E5B9 + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


class Truncation(Select):
    """Truncation selection: the bottom ``fraction`` copies a uniformly chosen member of the top.

    Every live member with a score ranks, by the score of its own latest ready (one that
    has exploited since still counts, by what it showed); a member exploits if it is in
    the bottom ``k = ceil(fraction x n)`` of the ``n`` ranked, and copies one of the top
    ``k`` that can donate (or tied with them), drawn uniformly. Ties at the bottom are
    ordered pseudo-randomly for the round (the same for every decision of the round), so
    equal scores favour no id, and a synchronous round exploits exactly ``k`` members.

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
                shown(fraction),
                "Fix: the paper uses 0.2 (bottom 20% copy the top 20%).",
            )
        self.fraction = float(fraction)

    def select(
        self, population: Population, member: MemberView, rng: np.random.Generator
    ) -> MemberView | None:
        ranking = population.derived(Ranking.of)
        k = truncation_split(ranking.others(population, member) + 1, self.fraction)
        if k == 0 or self._below(population, member, ranking) >= k:
            return None  # not in the bottom k
        # the donor is drawn among the top k, as this member sees the others, and those
        # tied with the last of them
        return ranking.draw(population, member, k, rng)

    @staticmethod
    def _below(population: Population, member: MemberView, ranking: Ranking) -> int:
        """How many of the others rank below ``member``, each compared with it (ties in
        the round's order)."""
        round_ = member.ready_count
        return ranking.count_below(population, member, lambda other: _tie_break(round_, other))

    def never_selects(self, population: Population, member: MemberView) -> bool:
        """True when ``k`` members or more rank below the member (ties in the round's
        order): it is not in the bottom ``k``. (Never for a subclass with its own
        :meth:`select`.)"""
        if type(self).select is not Truncation.select:
            return False
        ranking = population.derived(Ranking.of)
        k = truncation_split(ranking.others(population, member) + 1, self.fraction)
        return k == 0 or self._below(population, member, ranking) >= k

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
        theirs, mine = population.compared(other, member)
        return other if theirs > mine else None

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
        check_integer("WelchTTest", "window", window, at_least=2)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            raise invalid("WelchTTest", "alpha", "in (0, 1)", shown(alpha))
        check_integer("WelchTTest", "min_samples", min_samples, at_least=2, at_most=window)
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
