"""When a run ends: a member's budget, and the run-level criteria (time, target, plateau)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from genepool._errors import invalid
from genepool.member import ACTIVE, Population

__all__ = ["Budget", "PlateauTracker", "run_stop_reason"]


def _optional_number(name: str, value: float | None, *, positive: bool = True) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid("Budget", name, "a finite number or None", repr(value))
    if positive and value <= 0:
        raise invalid("Budget", name, "> 0", repr(value))


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
        _optional_number("steps", self.steps)
        _optional_number("seconds", self.seconds)
        _optional_number("target", self.target, positive=False)
        if self.plateau is not None and (
            isinstance(self.plateau, bool) or not isinstance(self.plateau, int) or self.plateau < 1
        ):
            raise invalid("Budget", "plateau", "an integer >= 1 or None", repr(self.plateau))
        _optional_number("min_delta", self.min_delta, positive=False)
        if self.min_delta < 0:
            raise invalid("Budget", "min_delta", ">= 0", repr(self.min_delta))
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
    """

    def __init__(self, *, min_delta: float = 0.0) -> None:
        self.min_delta = min_delta
        self.best = -math.inf
        self.rounds_at_best: dict[int, int] = {}

    def observe(self, population: Population) -> None:
        best = population.best()
        if best is None:
            return
        fitness = population.fitness(best)
        if fitness > self.best + self.min_delta or self.best == -math.inf:
            self.best = fitness
            self.rounds_at_best = {m.id: m.ready_count for m in population}

    def plateaued(self, population: Population, rounds: int) -> bool:
        """Whether every active member has done ``rounds`` ready rounds since the best."""
        if self.best == -math.inf:
            return False
        active = [m for m in population if m.status == ACTIVE]
        return bool(active) and all(
            m.ready_count >= self.rounds_at_best.get(m.id, 0) + rounds for m in active
        )


def run_stop_reason(
    population: Population,
    budget: Budget,
    *,
    elapsed: float,
    plateau: PlateauTracker | None = None,
) -> str | None:
    """Why the whole run should end now, or ``None``. Pure but for the tracker it reads."""
    active = [m for m in population if m.status == ACTIVE]
    if not active:
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
