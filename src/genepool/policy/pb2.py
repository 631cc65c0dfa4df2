"""PB2 and PB2-Mix as explore strategies: new values for an exploited member chosen by a
time-varying Gaussian-process bandit over the run's past intervals.

Each member keeps its latest intervals of training (:attr:`MemberView.intervals`: where
its ready counter ended, the change of its score per unit of the counter since the
checkpoint it started from, and the values it trained with); the store keeps them with the
member, so they survive a resume and reach every driver in the population snapshot. At a
decision, :class:`PB2` hands the latest ``window`` of them, across the population, to
:func:`genepool.policy._pb2.suggest` (the model, the acquisition and the bandit; see
there), with the members that copied a donor and have not reported since as pending
points, so that one round's exploits spread. The decision stays a pure function of the
snapshot and the member's random stream. What chose the values (each value's rule, the
model's prediction at the point chosen) goes into the exploit's event (``"explored"``).

PB2 needs scikit-learn (``pip install 'genepool[pb2]'``), imported at the first decision.

Example:
    >>> import genepool as gp
    >>> def climb(member):
    ...     x = member.restore() or 0.0
    ...     while member.running:
    ...         x += member.hparams["lr"] * (1.0 - x)
    ...         member.report(score=x, state=x)
    >>> result = gp.run(climb, gp.Space(lr=gp.Float(0.001, 0.5, log=True)), metric="score",
    ...                 population=4, ready=gp.Every(2), budget=gp.Budget(steps=12),
    ...                 explore=gp.PB2(), seed=0, progress=False)
    >>> any("explored" in e.data for e in result.events if e.kind == "exploit")
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from genepool._errors import invalid
from genepool.member import MemberView, Population
from genepool.policy._checks import check_integer
from genepool.policy.explore import Explore
from genepool.space import Space

__all__ = ["PB2", "PB2Mix"]


class PB2(Explore):
    """PB2's explore (Parker-Holder et al., 2020): a time-varying GP-UCB bandit.

    Args:
        window: How many of the run's latest intervals the model reads (the paper's W).
        per_member: How many of its latest intervals each member keeps; by default
            enough for the window across the run's population (``window / population``,
            at least 2; 32 where the population is not known).
        min_rows: With fewer intervals than this, values are drawn at random (flagged
            ``"fallback"`` in the event).
        fit_rows: The kernel is fitted on the latest ``fit_rows`` intervals, then
            conditioned on the whole window.

    Unordered choices (``gp.Choice(..., ordered=False)``) are refused: use
    :class:`PB2Mix`, which draws them with a bandit.
    """

    mix = False

    def __init__(
        self,
        *,
        window: int = 1000,
        per_member: int | None = None,
        min_rows: int = 4,
        fit_rows: int = 250,
    ) -> None:
        owner = type(self).__name__
        check_integer(owner, "window", window, at_least=2)
        if per_member is not None:
            check_integer(owner, "per_member", per_member, at_least=2)
        check_integer(owner, "min_rows", min_rows, at_least=2)
        check_integer(owner, "fit_rows", fit_rows, at_least=2)
        self.window, self.per_member = window, per_member
        self.min_rows, self.fit_rows = min_rows, fit_rows
        self.intervals = 32 if per_member is None else per_member

    def intervals_for(self, population: int | None) -> int:
        if self.per_member is not None or not population:
            return self.intervals
        return max(2, math.ceil(self.window / population))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(window={self.window}, per_member={self.per_member}, "
            f"min_rows={self.min_rows}, fit_rows={self.fit_rows})"
        )

    def check(self, space: Space) -> None:
        from genepool.policy import _pb2  # scikit-learn: a missing extra is named here

        _pb2.check_space(space, mix=self.mix)

    def explore(
        self, space: Space, hparams: Mapping[str, Any], rng: np.random.Generator
    ) -> dict[str, Any]:
        raise invalid(
            type(self).__name__,
            "explore",
            "called by the policy, with the population (explore_in)",
            "a call with the member's values alone",
            f"Fix: pass it to a run (gp.run(..., explore=gp.{type(self).__name__}())).",
        )

    def explore_in(
        self,
        space: Space,
        hparams: Mapping[str, Any],
        rng: np.random.Generator,
        *,
        population: Population,
        member: MemberView,
    ) -> tuple[dict[str, Any], Mapping[str, Any] | None]:
        from genepool.policy import _pb2  # scikit-learn, at the first decision

        sign = 1.0 if population.mode == "max" else -1.0  # PB2 maximises the improvement
        rows = sorted(
            (
                _pb2.Row(time, values, sign * change)
                for m in population
                for time, change, values in m.intervals
            ),
            key=lambda row: row.time,
        )[-self.window :]
        pending = [
            dict(m.hparams)
            for m in population
            if m.id != member.id
            and not m.failed
            and m.checkpoint is not None
            and m.checkpoint.member != m.id  # it copied a donor and has not reported since
        ]
        now = member.curve[-1][0] if member.curve else member.ready_counter
        new, info = _pb2.suggest(
            space,
            rows,
            now=now,
            rng=rng,
            pending=pending,
            state=_latest_fit(population),
            mix=self.mix,
            window=self.window,
            min_rows=self.min_rows,
            fit_rows=self.fit_rows,
        )
        kernel = info.pop("kernel", None)
        state = None if kernel is None else {"time": now, "kernel": kernel}
        return new, {"rule": type(self).__name__, **info, "state": state}


def _latest_fit(population: Population) -> Mapping[str, float] | None:
    """The kernel parameters the population's latest PB2 decision fitted (kept in the view
    of the member it decided for): the next fit starts there."""
    states = [
        m.explore_state
        for m in population
        if m.explore_state is not None and "kernel" in m.explore_state
    ]
    if not states:
        return None
    latest = max(states, key=lambda state: float(state.get("time", 0.0)))
    kernel: Mapping[str, float] = latest["kernel"]
    return kernel


class PB2Mix(PB2):
    """PB2-Mix (Parker-Holder et al., 2021): :class:`PB2`, with unordered choices drawn
    first by a time-varying EXP3 bandit, then the GP conditioned on them."""

    mix = True
