"""When a run ends: a member's budget, and the run-level criteria (time, target, plateau)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from genepool._errors import invalid
from genepool.member import ACTIVE, FAILED, Event, MemberView, Mode, Population
from genepool.policy._checks import check_integer, check_number

__all__ = [
    "BEST_EVENT",
    "ActiveCount",
    "Budget",
    "PlateauTracker",
    "ended_because",
    "run_stop_reason",
]

#: The kind of the event a worker records, with ``Budget.plateau`` set, when it sees the
#: best score improve: its data is :meth:`PlateauTracker.event_data`, from which a resumed
#: run's tracker starts (:meth:`PlateauTracker.restore`).
BEST_EVENT = "best"


@dataclass(frozen=True)
class Budget:
    """When the run ends; the first criterion met ends it.

    Args:
        steps: Each member trains until its ready counter (``steps`` unless the ready rule
            names another counter) reaches this value.
        seconds: Wall-time limit of one call (members checkpoint and stay resumable; a
            resumed run gets the time again).
        target: End as soon as the best checkpoint score reaches this value.
        plateau: End when every active member has done this many ready rounds since the
            best score last improved by more than ``min_delta``.
        min_delta: The improvement that counts for ``plateau``.

    Example:
        >>> import genepool as gp
        >>> gp.Budget(steps=200, target=1.19)
        Budget(steps=200, seconds=None, target=1.19, plateau=None, min_delta=0.0)
    """

    steps: float | None = None
    seconds: float | None = None
    target: float | None = None
    plateau: int | None = None
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        check_number("Budget", "steps", self.steps, above=0, optional=True)
        check_number("Budget", "seconds", self.seconds, above=0, optional=True)
        check_number("Budget", "target", self.target, optional=True)
        if self.plateau is not None:
            check_integer("Budget", "plateau", self.plateau, at_least=1)
        check_number("Budget", "min_delta", self.min_delta, at_least=0)
        if self.steps is None and self.seconds is None:
            raise invalid(
                "Budget",
                "steps",
                "set (or 'seconds' set)",
                "neither",
                "Fix: gp.Budget(steps=200) trains each member 200 steps; a run needs an end "
                "that is sure to come.",
            )


class PlateauTracker:
    """Follows the best score to tell when it stopped improving (for ``Budget.plateau``).

    When the best score improves it notes every member's ready count then, so that the
    plateau counts each member's own rounds since (members may be out of step).

    Its state survives a resume: the worker records it in the store as a
    :data:`BEST_EVENT` event whenever it changes, and a resumed worker starts from the
    recorded events (:meth:`restore`).

    Example:
        >>> from genepool.member import CheckpointRef, MemberView, Population
        >>> def pop(score, rounds):
        ...     ckpt = CheckpointRef("c", 0, 4, 4, score)
        ...     view = MemberView(0, {}, score=score, checkpoint=ckpt, ready_count=rounds)
        ...     return Population((view,))
        >>> tracker = PlateauTracker(min_delta=0.1)
        >>> tracker.observe(pop(0.5, 1)), tracker.observe(pop(0.55, 2))
        (True, False)
        >>> tracker.plateaued(pop(0.55, 3), rounds=2)
        True
        >>> again = PlateauTracker.restore([Event("best", 0, 4, tracker.event_data(), 0.0)])
        >>> again.plateaued(pop(0.55, 3), rounds=2)
        True
    """

    def __init__(self, *, min_delta: float = 0.0) -> None:
        self.min_delta = min_delta
        self.best = -math.inf
        self.score: float | None = None
        self.rounds_at_best: dict[int, int] = {}

    def observe(self, population: Population) -> bool:
        """Take in the population; True when the best score improved (by more than
        ``min_delta``, or for the first time): the tracker's state changed."""
        best = population.best()
        if best is None:
            return False
        fitness = population.fitness(best)
        if fitness > self.best + self.min_delta or self.best == -math.inf:
            self.best = fitness
            self.score = best.score
            self.rounds_at_best = {m.id: m.ready_count for m in population}
            return True
        return False

    def event_data(self) -> dict[str, Any]:
        """The tracker's state as the data of a :data:`BEST_EVENT` event (JSON-friendly):
        the best score and every member's ready count when it was reached."""
        size = max(self.rounds_at_best, default=-1) + 1
        return {
            "score": self.score,
            "rounds": [self.rounds_at_best.get(i, 0) for i in range(size)],
        }

    @classmethod
    def restore(
        cls, events: Iterable[Event], *, mode: Mode = "max", min_delta: float = 0.0
    ) -> PlateauTracker:
        """A tracker in the state the recorded :data:`BEST_EVENT` events describe: that of
        the best score among them, reached first (several workers may have recorded the
        same improvement, each when it saw it). A fresh tracker if there is none."""
        tracker = cls(min_delta=min_delta)
        sign = 1.0 if mode == "max" else -1.0
        for event in events:
            if event.kind != BEST_EVENT:
                continue
            score = event.data.get("score")
            if not isinstance(score, (int, float)) or not math.isfinite(score):
                continue
            fitness = sign * float(score)
            if fitness > tracker.best:
                tracker.best = fitness
                tracker.score = float(score)
                tracker.rounds_at_best = dict(enumerate(int(r) for r in event.data["rounds"]))
        return tracker

    def plateaued(self, population: Population, rounds: int) -> bool:
        """Whether every active member has done ``rounds`` ready rounds since the best."""
        if self.best == -math.inf:
            return False
        active = [m for m in population if m.status == ACTIVE]
        return bool(active) and all(
            m.ready_count >= self.rounds_at_best.get(m.id, 0) + rounds for m in active
        )


@dataclass(frozen=True, slots=True)
class ActiveCount:
    """How many members of a population are active: a
    :class:`~genepool.member.Derived` of it, kept up to date from write to write."""

    count: int

    @classmethod
    def of(cls, population: Population) -> ActiveCount:
        return cls(sum(m.status == ACTIVE for m in population))

    def updated(self, changes: Sequence[tuple[MemberView, MemberView]]) -> ActiveCount:
        gained = sum((new.status == ACTIVE) - (old.status == ACTIVE) for old, new in changes)
        return ActiveCount(self.count + gained)


def run_stop_reason(
    population: Population,
    budget: Budget,
    *,
    elapsed: float,
    plateau: PlateauTracker | None = None,
) -> str | None:
    """Why the whole run should end now, or ``None``. Pure but for the tracker it reads."""
    if population.derived(ActiveCount.of).count == 0:
        return "budget"
    if budget.seconds is not None and elapsed >= budget.seconds:
        return "time"
    if budget.target is not None:
        best = population.best()
        if best is not None and best.score is not None:
            reached = (
                best.score >= budget.target
                if population.mode == "max"
                else (best.score <= budget.target)
            )
            if reached:
                return "target"
    if (
        budget.plateau is not None
        and plateau is not None
        and plateau.plateaued(population, budget.plateau)
    ):
        return "plateau"
    return None


def ended_because(population: Population) -> str:
    """Why a run whose members all stopped ended: a run-level reason if one stopped them,
    ``"all_failed"`` if every member failed, else ``"budget"``."""
    reasons = {m.stop_reason for m in population}
    for reason in ("time", "target", "plateau"):
        if reason in reasons:
            return reason
    if all(m.status == FAILED for m in population):
        return "all_failed"
    return "budget"
