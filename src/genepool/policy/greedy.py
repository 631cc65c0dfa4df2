"""Greediness controls: copy a donor only when its lead is beyond the noise.

:class:`Calm` wraps any selection rule (:class:`~genepool.policy.select.Select`) and is one
itself, so it composes with every rule and every driver. Three controls, each off by
default (``Calm(rule)`` chooses as ``rule`` does):

- smoothing (:class:`BestOf`, :class:`MovingAverage`): the rule sees every member ranked by its
  score smoothed over its latest ready rounds (:attr:`MemberView.curve`) instead of the
  latest one alone;
- a lead (DexPBT, Petrenko et al. 2023): the donor the rule chose is copied only if its
  (smoothed) score beats the member's by more than ``lead`` times the population's spread
  and by more than ``lead_of_score`` times the donor's own ``|score|``;
- ``explore_own``: when the rule chose a donor that is not clearly better, the member
  explores new hyperparameters from its own weights (DexPBT's "replace with self") instead
  of training on unchanged (:meth:`Calm.verdict`).

The spread is the interquartile range of the members' (smoothed) scores divided by 1.349:
the standard deviation for normally distributed scores (so DexPBT's
``replace_threshold_frac_std`` carries over as ``lead``), but one that neither a diverged
member (DexPBT trims the worst 20% before its standard deviation for this) nor the few
members truly ahead widen: members of one quality set it, so a donor truly ahead does not
raise the bar it must clear.

Every decision stays a pure function of the snapshot, the member and the generator; the
wrapper draws nothing (only the wrapped rule does), and :meth:`Calm.judge` gives the
numbers behind a verdict as plain data for an event.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeAlias

import numpy as np

from genepool._constraints import Interval, Setting, check
from genepool._errors import invalid
from genepool.member import CURVE_LENGTH, MemberView, Mode, Population
from genepool.policy._checks import shown
from genepool.policy.select import Select

__all__ = ["BestOf", "Calm", "MovingAverage", "Smoothing", "Verdict"]

#: The interquartile range of a normal distribution, in standard deviations
#: (``2 * scipy.stats.norm.ppf(0.75)``).
IQR_OF_NORMAL = 1.3489795003921634


@dataclass(frozen=True, slots=True)
class BestOf:
    """Smoothing by the best score of the member's last ``k`` ready rounds (best in the
    interval: the highest for ``mode="max"``, the lowest for ``"min"``).

    Args:
        k: How many ready rounds, the latest among them, in ``[1, CURVE_LENGTH]``.

    Example:
        >>> BestOf(3).smooth([1.0, 5.0, 2.0, 3.0, 0.0], mode="max")
        [1.0, 5.0, 5.0, 5.0, 3.0]
    """

    k: int

    def __post_init__(self) -> None:
        fix = f"Fix: a member's view keeps its latest {CURVE_LENGTH} ready rounds; try BestOf(3)."
        check("BestOf", {"k": self.k}, {"k": Setting((Interval("int", 1, CURVE_LENGTH),), fix)})
        object.__setattr__(self, "k", int(self.k))

    def smooth(self, scores: Sequence[float], *, mode: Mode) -> list[float]:
        """Each score replaced by the best finite one of its window (a non-finite score,
        a failed round, stays as it is and is never the best of a later window)."""
        best = max if mode == "max" else min
        out = []
        for i, score in enumerate(scores):
            window = [s for s in scores[max(0, i - self.k + 1) : i + 1] if math.isfinite(s)]
            out.append(float(best(window)) if math.isfinite(score) else score)
        return out


@dataclass(frozen=True, slots=True)
class MovingAverage:
    """Smoothing by an exponential moving average of the member's ready rounds, started at
    the first of its curve: ``a = alpha * score + (1 - alpha) * a``.

    Args:
        alpha: The weight of the latest score, in (0, 1] (1: no smoothing).

    Example:
        >>> MovingAverage(0.5).smooth([0.0, 4.0, 2.0], mode="max")
        [0.0, 2.0, 2.0]
    """

    alpha: float

    def __post_init__(self) -> None:
        fix = "Fix: 1 is the latest score alone; smaller values smooth more (try 0.3)."
        interval = Interval("real", 0, 1, "right")
        check("MovingAverage", {"alpha": self.alpha}, {"alpha": Setting((interval,), fix)})
        object.__setattr__(self, "alpha", float(self.alpha))

    def smooth(self, scores: Sequence[float], *, mode: Mode) -> list[float]:
        """Each score replaced by the average up to it (the same in both modes; a
        non-finite score stays as it is and leaves the average unchanged)."""
        out: list[float] = []
        average: float | None = None
        for score in scores:
            if math.isfinite(score):
                average = (
                    score if average is None else self.alpha * score + (1 - self.alpha) * average
                )
                out.append(average)
            else:
                out.append(score)
        return out


Smoothing: TypeAlias = BestOf | MovingAverage


def smoothed_view(member: MemberView, smoothing: Smoothing, mode: Mode) -> MemberView:
    """``member`` with every point of its curve smoothed (what it ranks by,
    :meth:`Population.rank_value`, and is compared by, :meth:`Population.compared`)."""
    if len(member.curve) < 2:
        return member  # one point (or none: it ranks by its checkpoint's score) is itself
    values = smoothing.smooth([score for _, score in member.curve], mode=mode)
    curve = tuple((at, value) for (at, _), value in zip(member.curve, values, strict=True))
    return member if curve == member.curve else dataclasses.replace(member, curve=curve)


@dataclass(frozen=True, slots=True)
class _Smoothed:
    """A population with every member smoothed: a :class:`~genepool.member.Derived` of the
    original, so a snapshot made from it by a write smooths the members written alone."""

    smoothing: Smoothing
    population: Population

    def updated(self, changes: Sequence[tuple[MemberView, MemberView]]) -> Self:
        mode = self.population.mode
        views = [smoothed_view(new, self.smoothing, mode) for _, new in changes]
        return dataclasses.replace(self, population=self.population.with_members(views))


@dataclass(frozen=True, slots=True)
class _Smoothen:
    """Makes the :class:`_Smoothed` of a population (the key :meth:`Population.derived`
    keeps it under: equal smoothings share it; picklable, unlike a closure)."""

    smoothing: Smoothing

    def __call__(self, population: Population) -> _Smoothed:
        mode = population.mode
        members = tuple(smoothed_view(m, self.smoothing, mode) for m in population)
        return _Smoothed(self.smoothing, Population(members, mode))


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :class:`Calm` decided for a member.

    Attributes:
        donor: The member to copy (from the population given, with its real checkpoint);
            ``None``: no exploit.
        explore_own: No donor is clearly better, and the member is to explore new
            hyperparameters from its own weights (only with ``explore_own=True``).
        judgement: :meth:`Calm.judge` of the donor the wrapped rule chose, as plain data
            for an event; ``None`` when the rule chose none.
    """

    donor: MemberView | None
    explore_own: bool = False
    judgement: Mapping[str, Any] | None = None


class Calm(Select):
    """A selection rule made less greedy: smoothed scores, a lead to clear, and an explore
    from the member's own weights when no donor is clearly better.

    The wrapped ``rule`` chooses a donor among the members as ``smoothing`` has them; the
    member copies it only if the donor's smoothed score beats its own by more than
    ``lead * spread`` and by more than ``lead_of_score * |donor's score|`` (DexPBT's
    ``replace_threshold_frac_std`` and ``replace_threshold_frac_absolute``), where spread
    is the population's interquartile range of smoothed scores / 1.349 (see the module).
    With both at 0 every donor the rule chooses is copied; else a donor must be strictly
    better. A member without a score of its own (failed) always copies a donor with one,
    unless a lead is infinite: ``math.inf`` never copies.

    Args:
        rule: The selection rule that chooses a donor (not another :class:`Calm`).
        lead: The least lead, in spreads (robust standard deviations) of the population.
        lead_of_score: The least lead, as a fraction of the donor's ``|score|``.
        smoothing: ``BestOf(k)``, ``MovingAverage(alpha)`` or ``None`` (the latest score).
        explore_own: When the rule chose a donor that is not clearly better, explore from
            the member's own weights (:attr:`Verdict.explore_own`) instead of training on.

    Example:
        >>> import numpy as np, genepool as gp
        >>> from genepool.member import MemberView, Population, CheckpointRef
        >>> def m(i, s):
        ...     ckpt = CheckpointRef(f"c{i}", i, 4, 4, s)
        ...     return MemberView(id=i, hparams={}, score=s, checkpoint=ckpt)
        >>> pop = Population(tuple(m(i, 10.0 + 0.01 * i) for i in range(5)))
        >>> calm = Calm(gp.Truncation(0.2), lead_of_score=0.05)
        >>> calm.select(pop, pop[0], np.random.default_rng(0)) is None  # 0.04 < 0.05 * 10.04
        True
        >>> calm.judge(pop, pop[0], pop[4])["clear"]
        False
    """

    def __init__(
        self,
        rule: Select,
        *,
        lead: float = 0.0,
        lead_of_score: float = 0.0,
        smoothing: Smoothing | None = None,
        explore_own: bool = False,
    ) -> None:
        if not isinstance(rule, Select) or isinstance(rule, Calm):
            raise invalid(
                "Calm",
                "rule",
                "a selection rule such as gp.Truncation(), gp.Tournament() or gp.WelchTTest()",
                shown(rule),
                "Fix: a Calm wraps a plain rule; give one Calm all of its settings.",
            )
        self.rule = rule
        self.lead = _factor("lead", lead, "Fix: DexPBT uses 0.5 (half a standard deviation).")
        self.lead_of_score = _factor(
            "lead_of_score", lead_of_score, "Fix: DexPBT uses 0.05 (5% of the donor's score)."
        )
        if smoothing is not None and not isinstance(smoothing, BestOf | MovingAverage):
            raise invalid(
                "Calm", "smoothing", "BestOf(k), MovingAverage(alpha) or None", shown(smoothing)
            )
        self.smoothing = smoothing
        if type(explore_own) is not bool:
            raise invalid("Calm", "explore_own", "True or False", shown(explore_own))
        self.explore_own = explore_own

    # -- what the wrapped rule sees ------------------------------------------------------
    def smoothed(self, population: Population) -> Population:
        """``population`` as the wrapped rule sees it: each member's curve smoothed (made
        once per snapshot and kept through its writes, :meth:`Population.derived`)."""
        if self.smoothing is None:
            return population
        seen = population.derived(_Smoothen(self.smoothing)).population
        return seen.as_aligned() if population.aligned else seen

    def _member(self, member: MemberView, population: Population) -> MemberView:
        """``member`` smoothed: the smoothed snapshot's view when it is the population's."""
        if self.smoothing is None:
            return member
        try:
            if population[member.id] is member:
                return self.smoothed(population)[member.id]
        except (KeyError, IndexError):
            pass  # a view the snapshot does not hold
        return smoothed_view(member, self.smoothing, population.mode)

    # -- the Select interface -----------------------------------------------------------
    def select(
        self, population: Population, member: MemberView, rng: np.random.Generator
    ) -> MemberView | None:
        """The donor the wrapped rule chooses, if it is clearly better; else ``None``."""
        return self.verdict(population, member, rng).donor

    def never_selects(self, population: Population, member: MemberView) -> bool:
        """True when the wrapped rule never selects (as it sees the population), or when a
        lead is infinite and there is no explore from the member's own weights."""
        if self._infinite() and not self.explore_own:
            return True
        return self.rule.never_selects(self.smoothed(population), self._member(member, population))

    # -- the verdict and its numbers ----------------------------------------------------
    def verdict(
        self, population: Population, member: MemberView, rng: np.random.Generator
    ) -> Verdict:
        """The donor to copy, or none, and whether to explore from the member's own
        weights instead: pure, and drawing from ``rng`` exactly what the wrapped rule
        draws."""
        chosen = self.rule.select(self.smoothed(population), self._member(member, population), rng)
        if chosen is None:
            return Verdict(None)
        donor = population[chosen.id]  # its real checkpoint and score, not the smoothed view
        judgement = self.judge(population, member, donor)
        if judgement["clear"]:
            return Verdict(donor, judgement=judgement)
        return Verdict(None, explore_own=self.explore_own, judgement=judgement)

    def judge(
        self, population: Population, member: MemberView, donor: MemberView
    ) -> dict[str, Any]:
        """The numbers behind copying ``donor``, as plain data (for an event).

        Keys: ``rule`` and ``smoothing`` (their ``repr``), ``donor`` (its id),
        ``donor_score`` and ``member_score`` (smoothed, in the metric's units, as the member
        compares them, :meth:`Population.compared`), ``lead`` (the donor's lead, positive
        when it is better in either mode), ``spread``, ``spread_bar`` (``lead *
        spread``), ``score_bar`` (``lead_of_score * |donor_score|``) and ``clear``
        (whether the lead beats both bars: the donor is copied). A number that is not
        finite (the lead over a failed member, an infinite bar) is ``None``.
        """
        seen = self.smoothed(population)
        theirs, mine = seen.compared(seen[donor.id], self._member(member, population))
        spread = _spread(seen)
        spread_bar = _times(self.lead, spread)
        score_bar = _times(self.lead_of_score, abs(theirs))
        lead = theirs - mine if theirs > -math.inf else -math.inf
        checked = self.lead > 0 or self.lead_of_score > 0
        clear = not checked or (lead > spread_bar and lead > score_bar)
        sign = 1.0 if population.mode == "max" else -1.0
        return {
            "rule": repr(self.rule),
            "smoothing": None if self.smoothing is None else repr(self.smoothing),
            "donor": donor.id,
            "donor_score": _finite(sign * theirs),
            "member_score": _finite(sign * mine),
            "lead": _finite(lead),
            "spread": _finite(spread),
            "spread_bar": _finite(spread_bar),
            "score_bar": _finite(score_bar),
            "clear": bool(clear),
        }

    def _infinite(self) -> bool:
        return math.isinf(self.lead) or math.isinf(self.lead_of_score)

    def __repr__(self) -> str:
        return (
            f"Calm({self.rule!r}, lead={self.lead!r}, lead_of_score={self.lead_of_score!r}, "
            f"smoothing={self.smoothing!r}, explore_own={self.explore_own!r})"
        )


def _factor(name: str, value: Any, fix: str) -> float:
    """``value`` as a float, refused unless it is a number >= 0 (``math.inf`` allowed:
    never copy), not a bool."""
    ok = isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)
    number = float("nan")
    if ok:
        try:
            number = float(value)
        except OverflowError:  # an int beyond any float
            number = math.inf
    if not ok or not number >= 0:
        raise invalid("Calm", name, "a number >= 0 (math.inf: never copy)", shown(value), fix)
    return number


def _spread(population: Population) -> float:
    """The interquartile range of the ranked members' values, in standard deviations of a
    normal distribution (0 for fewer than two)."""
    values = [population.rank_value(m) for m in population.ranked()]
    if len(values) < 2:
        return 0.0
    low, high = np.percentile(values, [25, 75])
    return float(high - low) / IQR_OF_NORMAL


def _times(factor: float, value: float) -> float:
    """``factor * value``, with a factor of 0 always 0 and an infinite one always infinite
    (never ``nan``)."""
    if factor == 0:
        return 0.0
    if math.isinf(factor) or not math.isfinite(value):
        return math.inf
    return factor * value


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
