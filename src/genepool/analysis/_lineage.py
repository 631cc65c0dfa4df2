"""Lineage and hyperparameters in effect, read from a run's events.

Every change of a member's hyperparameters is an event in the store: an ``"exploit"``
(the member continues from a donor's checkpoint at ``donor_step`` with ``new_hparams``) or
an ``"explore"`` (the member keeps its weights and goes on at its step with
``new_hparams``). Both carry ``old_hparams``, so a member's starting hyperparameters are the
``old_hparams`` of its first change (or its current ones when it never changed). Nothing
here reads a log file or guesses: the events are the whole story.

Steps count completed training steps. A change made when a member stands at step ``s``
governs the steps that take it from ``s`` to ``s + 1`` and on: :meth:`Schedule.at`
``(s)`` is what trains step ``s + 1``.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from genepool._errors import invalid
from genepool.member import Event, Population, Report

__all__ = [
    "Change",
    "Jump",
    "Lineage",
    "Segment",
    "ancestry_scores",
    "event_index",
    "hparams_at_report",
    "hparams_of_reports",
    "hparams_timeline",
    "lineage",
    "schedule_changes",
]

_CHANGES = ("exploit", "explore")

#: Per member, the indices of its changes in the run's events (:func:`event_index`).
EventIndex = Mapping[int, list[int]]
#: A member's hyperparameter changes as ``(time, step, hparams)`` (:func:`hparams_timeline`).
Timeline = list[tuple[float, int, dict[str, Any]]]


@dataclass(frozen=True)
class Segment:
    """A stretch of training done by one member, from ``start`` (exclusive) to ``end``.

    Attributes:
        member: The member that trained these steps.
        start: The step it started the stretch from.
        end: The step it reached.
        generation: Its generation (number of exploits so far) during the stretch.
        until_event: Index in the run's events at which the stretch ended (the exploit of
            a descendant that copied it, or ``len(events)`` for the member's own present).
    """

    member: int
    start: int
    end: int
    generation: int
    until_event: int


@dataclass(frozen=True)
class Jump:
    """An exploit: ``recipient`` dropped its weights at ``old_step`` and continued from
    ``donor``'s checkpoint at ``step``.

    Attributes:
        recipient: The member that exploited.
        donor: The member it copied.
        step: The donor's step, where the recipient continued from.
        old_step: The step the recipient had reached before it exploited.
        time: When it happened (the run's clock).
        event: Index of the exploit in the run's events.
    """

    recipient: int
    donor: int
    step: int
    old_step: int
    time: float
    event: int


@dataclass(frozen=True)
class Lineage:
    """The family line of a member's current weights, oldest first.

    Attributes:
        member: The member whose line this is.
        segments: Who trained which steps: the root member from step 0, then each
            descendant from the step it copied. Consecutive segments meet at a jump.
        jumps: The exploits along the line, oldest first.
    """

    member: int
    segments: tuple[Segment, ...]
    jumps: tuple[Jump, ...]

    @property
    def ancestors(self) -> tuple[int, ...]:
        """The members along the line, root first, ending with :attr:`member`."""
        return tuple(s.member for s in self.segments)

    @property
    def root(self) -> int:
        """The member whose initial weights the line started from."""
        return self.segments[0].member

    @property
    def final_step(self) -> int:
        """The step the line has reached."""
        return self.segments[-1].end

    def owner(self, step: int) -> int:
        """The member that trained step ``step`` (``1 <= step <= final_step``) of the line."""
        for seg in self.segments:
            if seg.start < step <= seg.end:
                return seg.member
        raise invalid(
            "Lineage.owner",
            "step",
            f"a step from 1 to {self.final_step}",
            repr(step),
            "Ask for a step this line has trained.",
        )


@dataclass(frozen=True)
class Change:
    """Hyperparameters set at ``step`` along a line, in effect from step ``step + 1``.

    Attributes:
        step: The step at which they were set.
        hparams: The hyperparameters.
        member: The member that set them (the owner of the line from here).
        generation: Its generation after the change.
        cause: ``"start"``, ``"exploit"`` or ``"explore"``.
    """

    step: int
    hparams: Mapping[str, Any]
    member: int
    generation: int
    cause: str


def event_index(events: Sequence[Event]) -> dict[int, list[int]]:
    """Per member, the indices of its changes (exploits, explores) that stand: those a
    later fallback rolled back (its checkpoint lost, the member went back to an older
    one, at that one's step and generation) are left out. One pass over the events: build
    it once for the lines of a whole population (``index=`` of :func:`lineage` and
    :func:`schedule_changes`)."""
    by_member: dict[int, list[int]] = {}
    _index_on(events, by_member, start=0)
    return by_member


def _index_on(events: Sequence[Event], by_member: dict[int, list[int]], *, start: int) -> set[int]:
    """Add what ``events[start:]`` change to ``by_member`` (:func:`event_index` of
    ``events[:start]``), and return the members they concern."""
    touched: set[int] = set()
    for i in range(start, len(events)):
        e = events[i]
        if e.kind in _CHANGES:
            by_member.setdefault(e.member, []).append(i)
            touched.add(e.member)
        elif e.kind == "fallback" and type(e.data.get("generation")) is int:
            mine = by_member.get(e.member, [])
            by_member[e.member] = _standing(events, mine, e.data["generation"], e.step)
            touched.add(e.member)
    return touched


def _standing(events: Sequence[Event], indices: list[int], generation: int, step: int) -> list[int]:
    """The changes among ``indices`` made before the member, rolled back to ``step`` of
    ``generation``, passed that point: its first ``generation`` exploits, and the
    explores of that generation before ``step``."""
    kept: list[int] = []
    exploits = 0
    for i in indices:
        e = events[i]
        if e.kind == "exploit":
            exploits += 1
            if exploits > generation:
                break
        elif exploits == generation and e.step >= step:
            break
        kept.append(i)
    return kept


def _check_member(population: Population, member: int, owner: str) -> None:
    ids = {m.id for m in population}
    if member not in ids:
        raise invalid(
            owner,
            "member",
            f"the id of a member of the run (0 to {len(ids) - 1})",
            repr(member),
        )


def lineage(
    events: Sequence[Event],
    population: Population,
    member: int,
    *,
    index: EventIndex | None = None,
) -> Lineage:
    """The line of ``member``'s weights as they stand in ``population`` (``index``: the
    events' :func:`event_index`, built here if not given).

    Walks back from the member's present through its last exploit to the donor's state at
    that moment, and so on to a member that never exploited before the moment in question.
    A donor that was itself exploited earlier is followed through its own jump; a member
    exploited several times contributes only the stretch since its last exploit. Where the
    exploit recorded the donor's generation, the stretch is that generation's, even if the
    donor exploited again before the copy was recorded (it decided on a population read a
    moment earlier); else the donor's last stretch before the copy.
    """
    _check_member(population, member, "lineage")
    by_member = event_index(events) if index is None else index
    segments: list[Segment] = []
    jumps: list[Jump] = []
    current = member
    end_step = population[member].step
    until = len(events)
    wanted: int | None = None  # the generation of ``current`` whose checkpoint was copied
    for _ in range(len(events) + 1):  # each pass moves strictly back in the events
        indices = by_member.get(current, [])
        cut = bisect_right(indices, until - 1)
        exploits = [i for i in indices[:cut] if events[i].kind == "exploit"]
        if wanted is not None and wanted < len(exploits):
            # the copied checkpoint is older than the donor's later exploits (the decision
            # read the population a moment before them): its stretch ended at the next one
            until = exploits[wanted]
            del exploits[wanted:]
        last_exploit = exploits[-1] if exploits else None
        generation = len(exploits)
        if last_exploit is None:
            segments.append(Segment(current, 0, end_step, generation, until))
            break
        e = events[last_exploit]
        donor_step = int(e.data.get("donor_step", e.step))
        segments.append(Segment(current, donor_step, end_step, generation, until))
        jumps.append(
            Jump(
                recipient=current,
                donor=int(e.data["donor"]),
                step=donor_step,
                old_step=int(e.data.get("old_step", donor_step)),
                time=e.time,
                event=last_exploit,
            )
        )
        copied = e.data.get("donor_generation")  # absent from older runs' events
        wanted = int(copied) if copied is not None else None
        current, end_step, until = int(e.data["donor"]), donor_step, last_exploit
    segments.reverse()
    jumps.reverse()
    return Lineage(member=member, segments=tuple(segments), jumps=tuple(jumps))


def _initial_hparams(
    events: Sequence[Event], indices: Sequence[int], current: Mapping[str, Any]
) -> dict[str, Any]:
    if indices:
        return dict(events[indices[0]].data.get("old_hparams", current))
    return dict(current)


def schedule_changes(
    events: Sequence[Event],
    population: Population,
    line: Lineage,
    *,
    index: EventIndex | None = None,
) -> tuple[Change, ...]:
    """The hyperparameters in effect along ``line``, as the changes that set them
    (``index``: the events' :func:`event_index`, built here if not given)."""
    by_member = event_index(events) if index is None else index
    changes: list[Change] = []
    for k, seg in enumerate(line.segments):
        indices = by_member.get(seg.member, [])
        if k == 0:
            start_gen = 0
            hp = _initial_hparams(events, indices, population[seg.member].hparams)
            changes.append(Change(0, hp, seg.member, 0, "start"))
            lo = -1
        else:
            jump = line.jumps[k - 1]
            e = events[jump.event]
            start_gen = int(e.data.get("generation", seg.generation))
            changes.append(
                Change(seg.start, dict(e.data["new_hparams"]), seg.member, start_gen, "exploit")
            )
            lo = jump.event
        for i in indices:
            if lo < i < seg.until_event and events[i].kind == "explore":
                e = events[i]
                if seg.start <= e.step < seg.end:
                    changes.append(
                        Change(
                            e.step, dict(e.data["new_hparams"]), seg.member, start_gen, "explore"
                        )
                    )
    # a later change at the same step wins (an explore right after an exploit, say)
    merged: list[Change] = []
    for c in changes:
        if merged and merged[-1].step == c.step and c.cause == "explore":
            prev = merged[-1]
            merged[-1] = Change(c.step, c.hparams, prev.member, prev.generation, prev.cause)
        else:
            merged.append(c)
    return tuple(merged)


def hparams_timeline(events: Sequence[Event], population: Population) -> dict[int, Timeline]:
    """Per member, its hyperparameter changes in order as ``(time, step, hparams)``.

    The first entry is its starting hyperparameters at time ``-inf``, step 0.
    """
    by_member = event_index(events)
    return {m.id: _timeline(events, by_member.get(m.id, []), m.hparams) for m in population}


def _timeline(
    events: Sequence[Event], indices: Sequence[int], current: Mapping[str, Any]
) -> Timeline:
    """One member's :func:`hparams_timeline` from the indices of its standing changes."""
    rows = [(-math.inf, 0, _initial_hparams(events, indices, current))]
    for i in indices:
        e = events[i]
        step = int(e.data.get("donor_step", e.step)) if e.kind == "exploit" else e.step
        rows.append((e.time, step, dict(e.data["new_hparams"])))
    return rows


class TimelinesReadOn:
    """:func:`hparams_timeline` of a run whose events are read on (a logger's feed): each
    :meth:`read` indexes only the events added since the last one and rebuilds only the
    timelines of the members they concern, so a poll costs what is new, not the run."""

    def __init__(self) -> None:
        self._index: dict[int, list[int]] = {}
        self._indexed = 0  # how many of the events are in the index
        self._timelines: dict[int, Timeline] = {}

    def read(self, events: Sequence[Event], population: Population) -> dict[int, Timeline]:
        """The timelines of ``population`` from ``events``: the events of the last call,
        with more written after them."""
        touched = _index_on(events, self._index, start=self._indexed)
        self._indexed = len(events)
        for m in population:
            if m.id in touched or m.id not in self._timelines:  # else: as it was
                self._timelines[m.id] = _timeline(events, self._index.get(m.id, []), m.hparams)
        return {m.id: self._timelines[m.id] for m in population}


def hparams_at_report(
    timeline: Sequence[tuple[float, int, dict[str, Any]]], report: Report
) -> dict[str, Any]:
    """The hyperparameters a member trained ``report``'s step with.

    The latest change made before the report; a change at the same instant counts when it
    was set at a step below the report's (so a frozen test clock still reads right).
    """
    chosen = timeline[0][2]
    for time, step, hp in timeline[1:]:
        if time < report.time or (time == report.time and step < report.step):
            chosen = hp
        else:
            break
    return chosen


def hparams_of_reports(
    timelines: Mapping[int, Timeline],
    reports: Iterable[Report],
) -> list[dict[str, Any]]:
    """:func:`hparams_at_report` of each of ``reports`` ({} for a member without a
    timeline), each in the log of its member's changes rather than their number.

    The rule reads a member's changes in order and stops at the first one not made
    before the report. So does a binary search over the running greatest ``(time, step)``
    of the changes, which never decreases, whatever order the clocks put them in: its
    first entry not before the report's is where that first change is. (A time that is
    not a number orders nothing: such a member or report is read by the rule itself.)
    """
    running: dict[int, list[tuple[float, int]] | None] = {}  # per member, on first use
    found: list[dict[str, Any]] = []
    for report in reports:
        timeline = timelines.get(report.member)
        if timeline is None:
            found.append({})
            continue
        if report.member not in running:
            times = [(time, step) for time, step, _ in timeline[1:]]  # the first: the start
            ordered = not any(math.isnan(time) for time, _ in times)
            running[report.member] = list(itertools.accumulate(times, max)) if ordered else None
        keys = running[report.member]
        if keys is None or math.isnan(report.time):
            found.append(hparams_at_report(timeline, report))
            continue
        before = bisect_left(keys, (report.time, report.step))  # changes made before it
        found.append(timeline[before][2])
    return found


def ancestry_scores(
    reports: Iterable[Report], events: Sequence[Event], line: Lineage, metric: str
) -> list[tuple[int, float, int]]:
    """The scores along ``line``: ``(step, score, member)``, one per step, oldest first.

    Each segment contributes its member's reports of its steps made before the segment
    ended (a step redone after a failure or a resume counts once, its last report).
    """
    return scores_along(reports_by_step(reports), events, line, metric)


def reports_by_step(reports: Iterable[Report]) -> dict[tuple[int, int], list[Report]]:
    """The reports by ``(member, step)``, each list in the order written: read once for
    the lines of a whole population (:func:`scores_along`)."""
    found: dict[tuple[int, int], list[Report]] = {}
    for r in reports:
        found.setdefault((r.member, r.step), []).append(r)
    return found


def scores_along(
    by_step: Mapping[tuple[int, int], Sequence[Report]],
    events: Sequence[Event],
    line: Lineage,
    metric: str,
) -> list[tuple[int, float, int]]:
    """:func:`ancestry_scores` from the run's reports by step (:func:`reports_by_step`):
    each step of each segment its member's last report of it, made before the segment
    ended, with the metric as a number (the segments hold different steps)."""
    found: dict[int, tuple[float, int]] = {}
    for seg in line.segments:
        limit = events[seg.until_event].time if seg.until_event < len(events) else math.inf
        for step in range(seg.start + 1, seg.end + 1):
            for r in reversed(by_step.get((seg.member, step), ())):
                value = r.metrics.get(metric)
                if r.time <= limit and isinstance(value, int | float):
                    found[step] = (float(value), seg.member)
                    break
    return [(step, score, who) for step, (score, who) in sorted(found.items())]
