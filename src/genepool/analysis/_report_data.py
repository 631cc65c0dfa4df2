"""The report's data: what a run's HTML report and its PNG figures draw, read once.

:func:`collect` reads a :class:`~genepool.Result` into a :class:`ReportData`: each member's
score line (downsampled: at most ``max_points`` points per line, the minimum and maximum of
every bucket so that spikes survive; the winning line keeps its exploit jumps exact), each
member's stretches between exploits, how each hyperparameter is drawn (its axis, from
:mod:`genepool.analysis._hparam_axes`), the exploits, the failures and the lines that
survive, and the best member's lineage and schedule.

Both renderers, the SVG of :mod:`genepool.analysis._svg` and the matplotlib figures of
:mod:`genepool.analysis._figures`, draw from it alone, with what this module derives for
them: the hyperparameters' step lines, the marks of the best line's exploits, the winning
ancestry's path, the tree's rows, when the tree hides dead exploits, and the colours.
"""

from __future__ import annotations

import colorsys
import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from genepool._errors import invalid
from genepool.analysis._hparam_axes import Axis, fit_axes, is_number
from genepool.analysis._lineage import (
    Jump,
    Lineage,
    ancestry_scores,
)
from genepool.analysis._report_judged import Judged, judged
from genepool.analysis._schedule import Schedule
from genepool.member import Event, Population

if TYPE_CHECKING:
    from genepool.result import MemberResult, Result

__all__ = [
    "DEFAULT_MAX_POINTS",
    "MANY_JUMPS",
    "ReportData",
    "Stretch",
    "ancestry_path",
    "collect",
    "exploit_marks",
    "hparam_lines",
    "member_color",
    "member_rgb",
    "schedule_line",
    "short",
    "step_line",
]

#: Points per member's score line, at most (more than a plot's width in pixels).
DEFAULT_MAX_POINTS = 600
#: With more exploits than this, the tree hides those whose line died out (a toggle shows them).
MANY_JUMPS = 300
_CHANGES = ("exploit", "explore")


@dataclass(frozen=True)
class Stretch:
    """A stretch of one member's life, between two exploits: from ``start`` to ``end``
    (steps), with the hyperparameters set along it as ``(step, hparams)``, first at start."""

    member: int
    start: int
    end: int
    changes: tuple[tuple[int, Mapping[str, Any]], ...]


@dataclass
class ReportData:
    """Everything the report draws, read from a :class:`~genepool.Result` by :func:`collect`.

    Attributes:
        name: The run's name.
        metric: The run's metric, and ``mode`` its direction (``"max"`` or ``"min"``).
        members: Every member at the end (or now, for a run still going).
        names: Every hyperparameter, in first-seen order.
        axes: How each hyperparameter that varies is drawn.
        constants: The hyperparameters that never vary, with their value.
        max_step: The furthest step any member reached or reported.
        scores: Per member, its score line as pieces (steps, scores), split where its
            step went back, downsampled.
        lives: Per member, its stretches (for the tree and the hyperparameter plots).
        jumps: Every exploit in the run.
        failures: ``(member, step)`` of every failed round; ``failure_errors`` the error
            of each, in the same order (``""`` when its event has none).
        surviving: ``(member, start, end)`` stretches on the line of some member's present
            weights; ``surviving_jumps`` the exploits (event indices) on such lines.
        best: The best member, ``None`` when no member has a score.
        line: The best member's lineage, and ``schedule`` its schedule.
        best_scores: The scores along the best member's line (steps, scores), downsampled
            with every exploit jump kept exact.
        counts: How many events of each kind.
    """

    name: str
    metric: str
    mode: str
    seed: int
    stop_reason: str
    members: list[MemberResult]
    names: list[str]
    axes: dict[str, Axis]
    constants: dict[str, Any]
    max_step: int
    scores: dict[int, list[tuple[np.ndarray, np.ndarray]]]
    lives: dict[int, list[Stretch]]
    jumps: list[Jump]
    failures: list[tuple[int, int]]
    surviving: set[tuple[int, int, int]]
    surviving_jumps: set[int]
    best: MemberResult | None
    line: Lineage | None
    schedule: Schedule | None
    best_scores: tuple[np.ndarray, np.ndarray]
    counts: dict[str, int]
    reports: int
    config: Mapping[str, Any]
    failure_errors: list[str] = field(default_factory=list)
    #: The latest exploits and explores whose rules said why (:func:`judged`).
    judged: list[Judged] = field(default_factory=list)

    def score_range(self) -> tuple[float, float] | None:
        """The lowest and highest score drawn, ``None`` with no score at all."""
        lows, highs = [], []
        for pieces in self.scores.values():
            for _, ys in pieces:
                if len(ys):
                    lows.append(float(ys.min()))
                    highs.append(float(ys.max()))
        if len(self.best_scores[1]):
            lows.append(float(self.best_scores[1].min()))
            highs.append(float(self.best_scores[1].max()))
        if not lows:
            return None
        return min(lows), max(highs)

    @property
    def step_end(self) -> float:
        """Where the step axis ends: a little past the furthest step."""
        return float(self.max_step) * 1.01

    @property
    def hides_dead_jumps(self) -> bool:
        """Whether the tree hides the exploits whose line died out: there are many."""
        return len(self.jumps) > MANY_JUMPS

    def varying(self, names: Iterable[str]) -> list[Axis]:
        """The axes of those of ``names`` that vary, in their order."""
        return [self.axes[n] for n in names if n in self.axes]

    def rows(self) -> dict[int, int]:
        """Each member's row in the lineage tree, in member order."""
        return {m: i for i, m in enumerate(sorted(self.lives))}


def _lives(events: Sequence[Event], population: Population) -> dict[int, list[Stretch]]:
    """Each member's stretches between exploits, with the changes along each."""
    by_member: dict[int, list[Event]] = {}
    for e in events:
        if e.kind in _CHANGES:
            by_member.setdefault(e.member, []).append(e)
    out: dict[int, list[Stretch]] = {}
    for m in population:
        changes_of = by_member.get(m.id, [])
        first = dict(changes_of[0].data.get("old_hparams", m.hparams)) if changes_of else m.hparams
        start = 0
        changes: list[tuple[int, Mapping[str, Any]]] = [(0, dict(first))]
        stretches: list[Stretch] = []
        for e in changes_of:
            new = dict(e.data.get("new_hparams", {}))
            if e.kind == "explore":
                changes.append((max(start, int(e.step)), new))
                continue
            donor_step = int(e.data.get("donor_step", e.step))
            end = max(start, int(e.data.get("old_step", donor_step)))
            stretches.append(Stretch(m.id, start, end, tuple(changes)))
            start, changes = donor_step, [(donor_step, new)]
        stretches.append(Stretch(m.id, start, max(start, int(m.step)), tuple(changes)))
        out[m.id] = stretches
    return out


def _minmax(xs: np.ndarray, ys: np.ndarray, budget: int, keep: np.ndarray | None = None) -> Any:
    """At most about ``budget`` points of a line: per bucket its lowest and highest point
    (in order), the first and last points, and the indices in ``keep``."""
    n = len(xs)
    if n <= max(budget, 2):
        return xs, ys
    buckets = max(1, budget // 2)
    b = (np.arange(n) * buckets) // n
    order = np.lexsort((ys, b))
    sorted_b = b[order]
    ids = np.arange(buckets)
    lo = order[np.searchsorted(sorted_b, ids, "left")]
    hi = order[np.searchsorted(sorted_b, ids, "right") - 1]
    parts = [lo, hi, np.array([0, n - 1])]
    if keep is not None and len(keep):
        parts.append(keep)
    idx = np.unique(np.concatenate(parts))
    return xs[idx], ys[idx]


def _score_pieces(
    result: Result, population: Population, max_points: int
) -> tuple[dict[int, list[tuple[np.ndarray, np.ndarray]]], int]:
    """Each member's score line in pieces, split where its step went back (an exploit of a
    donor behind it, a failed round redone); an exploit forward is drawn as a jump."""
    metric = result.metric
    cols: dict[int, tuple[list[int], list[float]]] = {m.id: ([], []) for m in population}
    max_step = 0
    for r in result.reports:
        v = r.metrics.get(metric)
        kind = type(v)
        if kind is not float and kind is not int and (v is None or not is_number(v)):
            continue
        col = cols.get(r.member)
        if col is None:
            col = cols[r.member] = ([], [])
        col[0].append(r.step)
        col[1].append(float(v))  # type: ignore[arg-type]
    out: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for member, (steps_l, scores_l) in cols.items():
        if not steps_l:
            out[member] = []
            continue
        steps = np.asarray(steps_l, dtype=np.int64)
        scores = np.asarray(scores_l, dtype=np.float64)
        max_step = max(max_step, int(steps.max()))
        brk = np.zeros(len(steps), dtype=bool)
        brk[1:] = np.diff(steps) <= 0
        finite = np.isfinite(scores)
        bounds = [0, *np.flatnonzero(brk).tolist(), len(steps)]
        total = int(finite.sum())
        pieces = []
        for a, b in itertools.pairwise(bounds):
            ok = finite[a:b]
            xs, ys = steps[a:b][ok], scores[a:b][ok]
            if not len(xs):
                continue
            budget = max(2, (max_points * len(xs)) // max(total, 1))
            pieces.append(_minmax(xs, ys, budget))
        out[member] = pieces
    return out, max_step


def collect(result: Result, *, max_points: int = DEFAULT_MAX_POINTS) -> ReportData:
    """Read what the report draws from a run (downsampled to ``max_points`` per line)."""
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 10:
        raise invalid("write_report", "max_points", "an int >= 10", repr(max_points))
    population = result.population
    events = result.events
    config = result.config
    lives = _lives(events, population)
    scores, max_step = _score_pieces(result, population, max_points)
    for stretches in lives.values():
        for s in stretches:
            max_step = max(max_step, s.end)
    # hyperparameter values seen anywhere, to lay out the axes
    values: dict[str, list[Any]] = {}
    for stretches in lives.values():
        for s in stretches:
            for _, hp in s.changes:
                for k, v in hp.items():
                    values.setdefault(k, []).append(v)
    for m in population:
        for k, v in m.hparams.items():
            values.setdefault(k, []).append(v)
    axes, constants = fit_axes(values, config)
    jumps = []
    failures = []
    failure_errors = []
    for i, e in enumerate(events):
        if e.kind == "exploit":
            donor_step = int(e.data.get("donor_step", e.step))
            jumps.append(
                Jump(
                    recipient=e.member,
                    donor=int(e.data["donor"]),
                    step=donor_step,
                    old_step=int(e.data.get("old_step", donor_step)),
                    time=e.time,
                    event=i,
                )
            )
        elif e.kind == "failure":
            failures.append((e.member, int(e.step)))
            failure_errors.append(str(e.data.get("error", "")))
    surviving: set[tuple[int, int, int]] = set()
    surviving_jumps: set[int] = set()
    for m in population:
        line_m = result.lineage(m.id)
        surviving.update((s.member, s.start, s.end) for s in line_m.segments)
        surviving_jumps.update(j.event for j in line_m.jumps)
    best_view = population.best()
    best = line = schedule = None
    best_scores: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))
    if best_view is not None:
        best = result.best
        line = result.lineage(best.id)
        schedule = result.schedule(best.id)
        along = ancestry_scores(result.reports, events, line, result.metric)
        xs = np.asarray([s for s, _, _ in along], dtype=np.int64)
        ys = np.asarray([v for _, v, _ in along], dtype=np.float64)
        ok = np.isfinite(ys)
        xs, ys = xs[ok], ys[ok]
        if len(xs):
            jump_steps = np.asarray([j.step for j in line.jumps], dtype=np.int64)
            at = np.searchsorted(xs, jump_steps)
            keep = np.unique(np.clip(np.concatenate([at - 1, at, at + 1]), 0, len(xs) - 1))
            best_scores = _minmax(xs, ys, max_points, keep)
    counts = Counter(e.kind for e in events)
    return ReportData(
        judged=judged(events),
        name=result.name,
        metric=result.metric,
        mode=population.mode,
        seed=result.seed,
        stop_reason=result.stop_reason,
        members=result.members,
        names=list(values),
        axes=axes,
        constants=constants,
        max_step=max(1, max_step),
        scores=scores,
        lives=lives,
        jumps=jumps,
        failures=failures,
        failure_errors=failure_errors,
        surviving=surviving,
        surviving_jumps=surviving_jumps,
        best=best,
        line=line,
        schedule=schedule,
        best_scores=best_scores,
        counts=dict(counts),
        reports=len(result.reports),
        config=config,
    )


# -- what both renderers derive from the data ----------------------------------------------
def step_line(
    changes: Sequence[tuple[int, Mapping[str, Any]]],
    end: int,
    axis: Axis,
    *,
    within: tuple[int, int] | None = None,
    jitter: float = 0.0,
) -> tuple[list[float], list[float]]:
    """One hyperparameter along ``changes`` (``(step, hparams)``, in order) as a step line:
    each value holds from its step to the next change's, the last one's to ``end``.
    ``within`` clips the steps to a stretch ``(start, end)``; ``jitter`` moves the values."""
    xs: list[float] = []
    ys: list[float] = []
    for k, (step, hp) in enumerate(changes):
        if axis.name not in hp:
            continue
        a, b = step, (changes[k + 1][0] if k + 1 < len(changes) else end)
        if within is not None:
            lo, hi = within
            a, b = min(max(a, lo), hi), min(max(b, lo), hi)
        v = axis.value(hp[axis.name]) + jitter
        xs += [a, b]
        ys += [v, v]
    return xs, ys


def hparam_lines(data: ReportData, axis: Axis) -> list[tuple[int, list[float], list[float]]]:
    """Every member's values of one hyperparameter as step lines ``(member, xs, ys)``.

    Stretches that meet (an exploit at the step the member stood at) are joined by a
    vertical jump; a stretch that starts elsewhere starts a new line. Categories are
    spread a little per member so that overlapping lines stay apart.
    """
    rows: list[tuple[int, list[float], list[float]]] = []
    for member, stretches in sorted(data.lives.items()):
        jitter = ((member % 9) - 4) * 0.035 if axis.kind == "category" else 0.0
        prev_end: int | None = None
        for s in stretches:
            xs, ys = step_line(s.changes, s.end, axis, within=(s.start, s.end), jitter=jitter)
            if rows and prev_end == s.start and rows[-1][0] == member:
                rows[-1][1].extend(xs)
                rows[-1][2].extend(ys)
            else:
                rows.append((member, xs, ys))
            prev_end = s.end
    return rows


def schedule_line(data: ReportData, axis: Axis) -> tuple[list[float], list[float]]:
    """The best member's schedule of one hyperparameter as a step line (empty: none)."""
    if data.schedule is None:
        return [], []
    changes = [(c.step, c.hparams) for c in data.schedule.changes]
    return step_line(changes, data.schedule.final_step, axis)


def exploit_marks(data: ReportData) -> list[tuple[Jump, float, float]]:
    """Where the best line's exploits sit on it, ``(jump, step, score)``: its first point at
    or after each exploit's step (none for an exploit after its last point)."""
    if data.line is None:
        return []
    bx, by = data.best_scores
    marks = []
    for j in data.line.jumps:
        i = int(np.searchsorted(bx, j.step))
        if i < len(bx):
            marks.append((j, float(bx[i]), float(by[i])))
    return marks


def ancestry_path(line: Lineage) -> list[tuple[int, int]]:
    """The winning ancestry as a path through the tree: ``(step, member)`` at both ends of
    each of its segments, in order (where the member changes, an exploit's jump)."""
    return [(step, seg.member) for seg in line.segments for step in (seg.start, seg.end)]


def short(text: str, n: int = 16) -> str:
    """``text`` cut to ``n`` characters, an ellipsis last where cut."""
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _hue(member: int) -> float:
    """Hues spread by the golden angle, none red (red is the best member's line)."""
    hue = (200.0 + member * 137.508) % 360.0
    return (hue + 60.0) % 360.0 if hue >= 330.0 or hue < 30.0 else hue


def member_color(member: int) -> str:
    """A member's colour (CSS)."""
    return f"hsl({_hue(member):.0f},62%,42%)"


def member_rgb(member: int) -> tuple[float, float, float]:
    """The same colour as :func:`member_color`, as RGB fractions (for matplotlib)."""
    return colorsys.hls_to_rgb(_hue(member) / 360.0, 0.42, 0.62)
