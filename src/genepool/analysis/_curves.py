"""A run's curves as loggers draw them: each member's points, its events as text, and each
member's lineage as one curve.

The TensorBoard export (:mod:`genepool.analysis._tensorboard`) and the MLflow and Weights &
Biases loggers (:mod:`genepool.loggers`) all draw from here, so they show the same curves:

- :class:`CurveReader` turns a run's reports into :class:`MemberPoint` s (the numeric
  metrics of one report and the hyperparameters that trained its step), reading only what
  it has not read before;
- :func:`describe_event` is an event as one line of text, any password in it hidden;
- :func:`lineage_curves` is, per member, the run's metric along its ancestry (each step's
  score from the member that trained it: :meth:`genepool.Result.ancestry_scores`) with the
  schedule's hyperparameters at each step; it indexes the reports once for the whole
  population, and each curve then costs its length.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genepool._redact import redact_url
from genepool.analysis._lineage import (
    Timeline,
    hparams_of_reports,
    hparams_timeline,
    reports_by_step,
    scores_along,
)
from genepool.member import Event, Population, Report

if TYPE_CHECKING:
    from genepool.result import Result

__all__ = [
    "CurveReader",
    "LineagePoint",
    "MemberPoint",
    "describe_event",
    "lineage_curves",
    "number",
    "points_of",
    "points_with",
]


def number(value: Any) -> float | None:
    """``value`` as a scalar a chart can draw, or ``None`` (text, lists, ...)."""
    if isinstance(value, str | bytes) or not hasattr(value, "__float__"):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries of ``values`` that are numbers, as floats."""
    out = {}
    for name, value in values.items():
        found = number(value)
        if found is not None:
            out[str(name)] = found
    return out


@dataclass(frozen=True)
class MemberPoint:
    """One report of a member, as a logger draws it.

    Attributes:
        member: The member that reported.
        step: Its step after the report (after an exploit it goes back to the donor's).
        time: When (the run's clock, seconds since the epoch for the system clock).
        metrics: The report's numeric metrics.
        hparams: The hyperparameters that trained this step.
    """

    member: int
    step: int
    time: float
    metrics: Mapping[str, float]
    hparams: Mapping[str, Any]


@dataclass(frozen=True)
class LineagePoint:
    """One step of a member's lineage curve.

    Attributes:
        step: The step.
        score: The run's metric at that step, from the member that trained it.
        member: The member that trained it (an ancestor, or the member itself).
        hparams: The hyperparameters that trained it (the schedule's).
        time: When it was reported (``nan`` if unknown).
    """

    step: int
    score: float
    member: int
    hparams: Mapping[str, Any]
    time: float


class CurveReader:
    """Turns a run's reports into :class:`MemberPoint` s, each report once.

    :meth:`read` takes the run's whole history as it stands (reports per member in the
    order written) and returns only the points of the reports it has not returned before;
    :meth:`new_events` the same for events.
    """

    def __init__(self) -> None:
        self._reports_done: dict[int, int] = {}
        self._events_done: dict[int, int] = {}

    def read(
        self, reports: Sequence[Report], events: Sequence[Event], population: Population
    ) -> list[MemberPoint]:
        """The points of the reports not read before, in the order they were written."""
        seen: dict[int, int] = {}
        new = []
        for report in reports:
            count = seen[report.member] = seen.get(report.member, 0) + 1
            if count > self._reports_done.get(report.member, 0):
                new.append(report)
        self._reports_done.update(seen)
        return points_of(new, events, population)

    def new_events(self, events: Sequence[Event]) -> list[Event]:
        """The events not returned before, in the order they were written."""
        seen: dict[int, int] = {}
        out = []
        for event in events:
            count = seen[event.member] = seen.get(event.member, 0) + 1
            if count > self._events_done.get(event.member, 0):
                out.append(event)
        self._events_done.update(seen)
        return out


def points_of(
    reports: Sequence[Report], events: Sequence[Event], population: Population
) -> list[MemberPoint]:
    """The reports as points, each with the hyperparameters that trained its step (read
    from the run's ``events``: all of them so far)."""
    return points_with(reports, hparams_timeline(events, population))


def points_with(reports: Sequence[Report], timelines: Mapping[int, Timeline]) -> list[MemberPoint]:
    """:func:`points_of`, with the members' hyperparameter timelines given."""
    trained = hparams_of_reports(timelines, reports)
    return [
        MemberPoint(report.member, report.step, report.time, numbers(report.metrics), hparams)
        for report, hparams in zip(reports, trained, strict=True)
    ]


def describe_event(event: Event) -> str:
    """An event as a line of text (a failure's error with any password in it hidden)."""
    return redact_url(_event_text(event))


def _event_text(event: Event) -> str:
    data = event.data
    if event.kind == "exploit":
        return (
            f"exploited member {data.get('donor')}'s checkpoint at step {data.get('donor_step')} "
            f"(score {data.get('donor_score')}), leaving step {data.get('old_step')}; "
            f"hyperparameters {data.get('old_hparams')} -> {data.get('new_hparams')}"
        )
    if event.kind == "explore":
        return f"explored: {data.get('old_hparams')} -> {data.get('new_hparams')}"
    if event.kind == "failure":
        return f"failed: {data.get('error')}"
    if event.kind == "stop":
        return f"stopped: {data.get('reason')}"
    if event.kind == "revive":
        return (
            f"revived (it had stopped: {data.get('reason')}; crashes {data.get('crashes')}, "
            f"failures {data.get('failures')})"
        )
    return f"{event.kind}: {dict(data)}"


def lineage_curves(
    result: Result, members: Iterable[int] | None = None
) -> dict[int, list[LineagePoint]]:
    """Each member's lineage as one curve (all members by default).

    A member's curve is :meth:`genepool.Result.ancestry_scores` (the run's metric at each
    step along the line of its final weights, from whichever ancestor trained the step)
    with the hyperparameters of :meth:`genepool.Result.schedule` that trained each step.
    The reports are read once for the whole population; each curve then costs its length.
    """
    chosen = [m.id for m in result.population] if members is None else list(members)
    by_step = reports_by_step(result.reports)
    events = result.events
    curves = {}
    for member in chosen:
        line = result.lineage(member)
        changes = result.schedule(member).changes
        starts = [c.step for c in changes]  # as Schedule.at reads them, without its checks
        points = []
        for step, score, who in scores_along(by_step, events, line, result.metric):
            hparams = changes[bisect_right(starts, step - 1) - 1].hparams
            reports = by_step.get((who, step))
            when = reports[0].time if reports else math.nan
            points.append(LineagePoint(step, score, who, dict(hparams), when))
        curves[member] = points
    return curves
