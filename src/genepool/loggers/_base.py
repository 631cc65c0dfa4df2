"""What a logger is given: the run, batches of points and events, and the lineages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from genepool._errors import invalid
from genepool._redact import shown
from genepool.analysis._curves import LineagePoint, MemberPoint

__all__ = [
    "Batch",
    "LineagePoint",
    "LoggedEvent",
    "Logger",
    "MemberPoint",
    "RunInfo",
    "check_every",
    "thinned",
]

P = TypeVar("P", MemberPoint, LineagePoint)


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
