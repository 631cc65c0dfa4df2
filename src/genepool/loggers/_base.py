"""What a logger is given: the run, batches of points and events, and the lineages."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from genepool._errors import invalid
from genepool._redact import shown
from genepool.analysis._curves import LineagePoint, MemberPoint

__all__ = [
    "LINEAGE_POINTS",
    "RATE",
    "Batch",
    "LineagePoint",
    "LoggedEvent",
    "Logger",
    "MemberPoint",
    "Paced",
    "RunInfo",
    "check_every",
    "check_lineage_points",
    "check_rate",
    "lineage_thinned",
    "thinned",
]

P = TypeVar("P", MemberPoint, LineagePoint)

#: The most points of a member's lineage curve a logger sends by default. The curve is
#: known only when the run ends, so it is sent then, while the user waits: a tracker takes
#: 0.1 to 0.4 ms a value (MLflow's folder and SQLite stores, W&B's offline service, measured
#: here), and without a bound a long run's end would wait minutes (32 members of 100,000
#: steps: 3.2 million values). A thousand points draw the same curve in a chart.
LINEAGE_POINTS = 1000

#: The most points a second a logger sends of the whole run's curves by default (each
#: member's curve at one point every ``population / RATE`` seconds of the run's clock, and
#: its last point; its lineage curve the same, at the end; every event is sent). A
#: tracker takes 0.13 to 0.5 ms of CPU a value (MLflow's folder and SQLite stores), or
#: 0.65 ms a row (W&B offline: 0.4 ms in the driver, 0.25 ms in its service), as
#: benchmarks/logger_cost.py measures them here: five points a second cost under 0.5% of a
#: core whatever the population or the length of a step, where every point of a
#: population of 32 stepping each 10 ms is 3,200 a second, one to two cores. A step slower
#: than ``population / RATE`` seconds is sent every time.
RATE = 5.0


def check_every(every: Any, owner: str) -> int:
    """``every`` checked: a whole number of steps, at least 1.

    Raises:
        InvalidArgumentError: It is not.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        fix = "Fix: every=1 (every step), or every=10 (steps 10, 20, ...; fewer writes)."
        raise invalid(owner, "every", "a whole number of steps >= 1", shown(every), fix)
    return every


def thinned(points: Sequence[P], every: int, *, last: bool = False) -> list[P]:
    """The points at steps that are multiples of ``every`` (all of them for 1), and with
    ``last`` the last point too."""
    if every == 1:
        return list(points)
    kept = [p for p in points if p.step % every == 0]
    if last and points and (not kept or kept[-1] is not points[-1]):
        kept.append(points[-1])
    return kept


def check_lineage_points(value: Any, owner: str) -> int | None:
    """``lineage_points`` checked: ``None`` (every point) or a whole number, at least 2.

    Raises:
        InvalidArgumentError: It is neither.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        fix = "Fix: lineage_points=1000 (the default), or None (every step of the lineage)."
        raise invalid(owner, "lineage_points", "a whole number >= 2, or None", shown(value), fix)
    return value


def check_rate(value: Any, owner: str) -> float | None:
    """``rate`` checked: ``None`` (every point) or a number of points a second above 0.

    Raises:
        InvalidArgumentError: It is neither.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        fix = "Fix: rate=5 (the default: five points a second), or None (every point)."
        raise invalid(owner, "rate", "a number of points a second > 0, or None", shown(value), fix)
    return float(value)


def _due(time: float, last: float | None, interval: float) -> bool:
    """Whether a point at ``time`` is sent when the last one sent was at ``last``: it is
    ``interval`` seconds later or more (or the times do not compare: unknown, or going
    back, as a clock set back does)."""
    return last is None or not 0.0 <= time - last < interval


class Paced:
    """Which of each member's points a logger sends, at most ``rate`` a second for the
    whole run: a member's point when ``population / rate`` seconds of the run's clock or
    more have passed since its last one sent (its first is sent), and, at the end
    (:meth:`rest`), each member's last point if it was not sent. The times are those the
    run recorded, so a run sent afterwards (``export_logs``) sends the same points.
    ``rate=None``: every point.

    Args:
        rate: The most points a second, or ``None``.
        population: The run's members.
    """

    def __init__(self, rate: float | None, population: int) -> None:
        self.interval = 0.0 if rate is None else max(population, 1) / rate
        self._last: dict[int, float] = {}  # each member's last point sent: its time
        self._held: dict[int, MemberPoint] = {}  # each member's last point, if not sent

    def take(self, points: Sequence[MemberPoint]) -> list[MemberPoint]:
        """The points of a batch to send, in order."""
        if self.interval == 0.0:
            return list(points)
        sent = []
        for p in points:
            if _due(p.time, self._last.get(p.member), self.interval):
                sent.append(p)
                self._last[p.member] = p.time
                self._held.pop(p.member, None)
            else:
                self._held[p.member] = p
        return sent

    def rest(self) -> list[MemberPoint]:
        """Each member's last point, where it was not sent (by member); once."""
        held, self._held = self._held, {}
        return [held[m] for m in sorted(held)]


def lineage_thinned(
    points: Sequence[LineagePoint], every: int, most: int | None, interval: float = 0.0
) -> list[LineagePoint]:
    """The points of a lineage curve a logger sends: those :func:`thinned` keeps (with the
    last), of those one every ``interval`` seconds or more of the times they were
    reported (as :class:`Paced` keeps a member's own points; the last kept too), and of
    those, when there are more than ``most``, ``most`` spread evenly over them, the first
    and the last among them. ``most=None``: no bound."""
    kept = thinned(points, every, last=True)
    if interval > 0.0 and kept:
        paced: list[LineagePoint] = []
        for p in kept[:-1]:
            if _due(p.time, paced[-1].time if paced else None, interval):
                paced.append(p)
        kept = [*paced, kept[-1]]
    if most is None or len(kept) <= most:
        return kept
    spacing = (len(kept) - 1) / (most - 1)  # > 1: every index below is a different one
    return [kept[round(i * spacing)] for i in range(most)]


@dataclass(frozen=True)
class RunInfo:
    """The run a logger is sent, as it starts.

    Attributes:
        name: The run's name in its store.
        metric: The metric that ranks members.
        mode: ``"max"`` or ``"min"``.
        seed: The run seed.
        members: Each member's id and its initial hyperparameters.
    """

    name: str
    metric: str
    mode: str
    seed: int
    members: Mapping[int, Mapping[str, Any]]


@dataclass(frozen=True)
class LoggedEvent:
    """An event of a member (an exploit, an explore, a failure, a stop, ...).

    Attributes:
        member: The member it happened to.
        step: Its step then (for an exploit: the step it left).
        time: When (the run's clock).
        kind: ``"exploit"``, ``"explore"``, ``"failure"``, ``"stop"``, ``"revive"``, ...
        text: The event as a line of text, any password in it hidden.
        donor: For an exploit, the member it copied; else ``None``.
        donor_step: For an exploit, the donor's step it continued from; else ``None``.
        hparams: For an exploit or an explore, the new hyperparameters; else ``None``.
    """

    member: int
    step: int
    time: float
    kind: str
    text: str
    donor: int | None = None
    donor_step: int | None = None
    hparams: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Batch:
    """What the run wrote since the last batch: its members' points and events, each in
    the order written.

    Attributes:
        points: One per report: the member, its step, its numeric metrics and the
            hyperparameters that trained the step (:class:`MemberPoint`).
        events: :class:`LoggedEvent` s.
    """

    points: Sequence[MemberPoint] = ()
    events: Sequence[LoggedEvent] = field(default=())


@runtime_checkable
class Logger(Protocol):
    """Something a run sends its members' curves to: implement these three methods.

    The run calls :meth:`start` once, :meth:`log` with each batch (from a thread of the
    driver that reads what the run wrote to its store, never from inside a member's
    round), and :meth:`finish` once at the end with every member's lineage curve. A
    logger that raises is dropped with a warning; the run goes on.

    Example:
        >>> import genepool as gp
        >>> class Count:
        ...     def start(self, run): self.points = 0
        ...     def log(self, batch): self.points += len(batch.points)
        ...     def finish(self, lineages): self.lines = len(lineages)
        >>> def train(member):
        ...     while member.running:
        ...         member.report(score=member.hparams["lr"] * member.step, state=0)
        >>> count = Count()
        >>> result = gp.run(train, gp.Space(lr=gp.Float(0.1, 1.0)), metric="score",
        ...                 population=2, ready=gp.Every(2), budget=gp.Budget(steps=4),
        ...                 seed=0, loggers=[count])
        >>> count.points, count.lines
        (8, 2)
    """

    def start(self, run: RunInfo) -> None:
        """The run starts (or is exported): open what the logger writes to."""

    def log(self, batch: Batch) -> None:
        """Write a batch of points and events."""

    def finish(self, lineages: Mapping[int, Sequence[LineagePoint]]) -> None:
        """The run has ended: write each member's lineage curve, and close."""
