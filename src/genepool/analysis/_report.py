"""The run's report: one self-contained HTML file (inline SVG, no network, no server).

It shows the population's scores over steps, every member's hyperparameters over steps,
the lineage as a phylogenetic tree (members as lines through steps, exploits as jumps, the
winning ancestry highlighted), a table of members and the best member's schedule. Every
name and value from the run is escaped (the schedule's JSON too, so that it cannot close
its ``<script>``), and the page's Content-Security-Policy runs only its own script and
style, by their SHA-256 hashes: no inline ``style`` or ``on*`` attribute, nothing loaded
from elsewhere. Long runs are downsampled: each member's score line keeps at most
``max_points`` points (the minimum and maximum of every bucket, so spikes survive), and
the winning line keeps its exploit jumps exact.

:func:`collect` gathers what both the HTML report and the PNG figures draw.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import html
import itertools
import json
import logging
import math
import os
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genepool._errors import GenepoolError, invalid
from genepool.analysis._lineage import Jump, Lineage, ancestry_scores, lineage
from genepool.analysis._schedule import Schedule
from genepool.member import Event, Population

if TYPE_CHECKING:
    from genepool.result import MemberResult, Result

__all__ = ["DEFAULT_MAX_POINTS", "ReportData", "collect", "write_report"]

log = logging.getLogger(__name__)

#: Points per member's score line, at most (more than a plot's width in pixels).
DEFAULT_MAX_POINTS = 600
#: With more exploits than this, the tree hides those whose line died out (a toggle shows them).
MANY_JUMPS = 300
_CHANGES = ("exploit", "explore")


# -- the data both renderers draw ----------------------------------------------------------
@dataclass(frozen=True)
class Axis:
    """How a hyperparameter is drawn: on a linear or log scale, or as category levels.

    Attributes:
        name: The hyperparameter.
        kind: ``"linear"``, ``"log"`` or ``"category"``.
        levels: For categories, the labels of the levels, in order (values are indices).
    """

    name: str
    kind: str
    levels: tuple[str, ...] = ()
    _index: Mapping[tuple[str, str], int] = field(default_factory=dict, repr=False)

    def value(self, v: Any) -> float:
        """Where ``v`` sits on this axis: the number itself, or its level's index."""
        if self.kind == "category":
            return float(self._index.get(_cat_key(v), -1))
        return float(v)


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


def _cat_key(v: Any) -> tuple[str, str]:
    """A category's identity: its type and repr (so True and 1 stay apart)."""
    return (type(v).__name__, repr(v))


def fmt_value(v: Any) -> str:
    """A hyperparameter or score as a short text."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float | np.floating):
        return f"{float(v):.4g}"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, str):
        return v
    return repr(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(
        v, bool | np.bool_
    )


def _declared(config: Mapping[str, Any], names: Iterable[str]) -> dict[str, tuple[str, Any]]:
    """What the stored space says of each hyperparameter: ``("log", True)``,
    ``("options", [...])``; read from its repr without evaluating it."""
    text = config.get("space")
    out: dict[str, tuple[str, Any]] = {}
    if not isinstance(text, str):
        return out
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):  # a name that is no identifier: look for numbers only
        for name in names:
            for before in ("(", ", "):
                at = text.find(f"{before}{name}=")
                if at < 0:
                    continue
                rest = text[at + len(before) + len(name) + 1 :]
                if rest.startswith(("Float(", "Int(")):
                    out[name] = ("log", "log=True" in rest[: rest.find(")")])
                    break
        return out
    call = tree.body
    if not isinstance(call, ast.Call):
        return out
    for kw in call.keywords:
        dom = kw.value
        if kw.arg is None or not isinstance(dom, ast.Call) or not isinstance(dom.func, ast.Name):
            continue
        kind = dom.func.id
        if kind in ("Float", "Int"):
            log_kw = [k for k in dom.keywords if k.arg == "log"]
            is_log = (
                bool(log_kw)
                and isinstance(log_kw[0].value, ast.Constant)
                and (log_kw[0].value.value is True)
            )
            out[kw.arg] = ("log", is_log)
        elif kind == "Choice" and dom.args:
            try:
                options = ast.literal_eval(dom.args[0])
            except (ValueError, SyntaxError, TypeError):
                continue
            if isinstance(options, list):
                out[kw.arg] = ("options", options)
    return out


def _axes(
    values: Mapping[str, list[Any]], config: Mapping[str, Any]
) -> tuple[dict[str, Axis], dict[str, Any]]:
    declared = _declared(config, values)
    axes: dict[str, Axis] = {}
    constants: dict[str, Any] = {}
    for name, seen in values.items():
        keys: dict[tuple[str, str], Any] = {}
        for v in seen:
            keys.setdefault(_cat_key(v), v)
        if len(keys) <= 1:
            constants[name] = seen[0] if seen else None
            continue
        info = declared.get(name)
        if all(_is_number(v) and math.isfinite(float(v)) for v in keys.values()):
            is_log = info is not None and info[0] == "log" and bool(info[1])
            if is_log and min(float(v) for v in keys.values()) <= 0:
                is_log = False
            axes[name] = Axis(name, "log" if is_log else "linear")
            continue
        ordered: list[Any] = []
        if info is not None and info[0] == "options":
            ordered = [o for o in info[1] if _cat_key(o) in keys]
        known = {_cat_key(o) for o in ordered}
        ordered += [v for k, v in keys.items() if k not in known]
        index = {_cat_key(v): i for i, v in enumerate(ordered)}
        axes[name] = Axis(name, "category", tuple(fmt_value(v) for v in ordered), index)
    return axes, constants


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
        if kind is not float and kind is not int and (v is None or not _is_number(v)):
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
    try:
        config: Mapping[str, Any] = result._store.run_config(result.name)
    except (KeyError, GenepoolError):
        config = {}
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
    axes, constants = _axes(values, config)
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
        line_m = lineage(events, population, m.id)
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


# -- scales and SVG ------------------------------------------------------------------------
def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]``, about ``n`` of them."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9)
    return [k * step for k in range(first, math.floor(hi / step + 1e-9) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Decades inside ``[lo, hi]`` (with 2 and 5 between when there are few)."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mults = (1.0,) if b - a > 2 else (1.0, 2.0, 5.0)
    out = [m * 10.0**k for k in range(a, b + 1) for m in mults]
    inside = [t for t in out if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
    if len(inside) >= 2:
        return inside
    return [t for t in nice_ticks(lo, hi, 4) if t > 0] or [lo, hi]  # within one octave


def fmt_tick(v: float) -> str:
    """A tick's label."""
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{v:.6g}"


@dataclass(frozen=True)
class Scale:
    """Maps data values to ``0..1`` along an axis: linear, log or category levels."""

    lo: float
    hi: float
    kind: str = "linear"
    levels: tuple[str, ...] = ()

    @classmethod
    def fit(cls, lo: float, hi: float, kind: str = "linear", pad: float = 0.04) -> Scale:
        """A scale that shows ``[lo, hi]`` with a little room."""
        if kind == "log":
            a, b = math.log10(lo), math.log10(hi)
            if b <= a:
                a, b = a - 0.5, b + 0.5
            span = b - a
            return cls(10 ** (a - pad * span), 10 ** (b + pad * span), "log")
        if not math.isfinite(lo) or not math.isfinite(hi):
            lo, hi = 0.0, 1.0
        if hi <= lo:
            width = abs(lo) * 0.1 or 1.0
            lo, hi = lo - width, hi + width
        span = hi - lo
        return cls(lo - pad * span, hi + pad * span, "linear")

    @classmethod
    def category(cls, levels: Sequence[str]) -> Scale:
        """Levels ``0 .. n-1``, each in its own band."""
        return cls(-0.6, len(levels) - 0.4, "category", tuple(levels))

    def norm(self, v: np.ndarray) -> np.ndarray:
        """Values as fractions of the axis."""
        if self.kind == "log":
            with np.errstate(divide="ignore", invalid="ignore"):
                lv = np.log10(np.maximum(v, 1e-300))
            out = (lv - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            out = (v - self.lo) / (self.hi - self.lo)
        return np.asarray(out, dtype=np.float64)

    def ticks(self) -> list[tuple[float, str]]:
        """Tick positions and labels."""
        if self.kind == "category":
            return [(float(i), label) for i, label in enumerate(self.levels)]
        if self.kind == "log":
            return [(t, fmt_tick(t)) for t in log_ticks(self.lo, self.hi)]
        return [(t, fmt_tick(t)) for t in nice_ticks(self.lo, self.hi)]


def _e(text: Any) -> str:
    """Text from the run, escaped for HTML text and double-quoted attributes."""
    return html.escape(str(text), quote=True)


def _short(text: str, n: int = 16) -> str:
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
    import colorsys

    return colorsys.hls_to_rgb(_hue(member) / 360.0, 0.42, 0.62)


class _Svg:
    """One plot: a frame with axes, and the paths drawn in it."""

    def __init__(
        self,
        xs: Scale,
        ys: Scale,
        *,
        width: int = 900,
        height: int = 320,
        left: int = 64,
        label: str,
        xlabel: str = "step",
        ylabel: str = "",
    ) -> None:
        self.xs, self.ys = xs, ys
        self.w, self.h = width, height
        self.left, self.r, self.t, self.b = left, 14, 12, 40
        self.parts: list[str] = []
        self.label, self.xlabel, self.ylabel = label, xlabel, ylabel

    def px(self, x: np.ndarray) -> np.ndarray:
        return self.left + self.xs.norm(np.asarray(x, dtype=np.float64)) * (
            self.w - self.left - self.r
        )

    def py(self, y: np.ndarray) -> np.ndarray:
        inner = self.h - self.t - self.b
        return self.t + (1.0 - self.ys.norm(np.asarray(y, dtype=np.float64))) * inner

    def d(self, xs: Any, ys: Any) -> str:
        """An SVG path's data through the points."""
        px, py = self.px(np.asarray(xs)), self.py(np.asarray(ys))
        if not len(px):
            return ""
        pairs = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px.tolist(), py.tolist(), strict=True))
        return "M" + pairs

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def render(self) -> str:
        w, h, lf, r, t, b = self.w, self.h, self.left, self.r, self.t, self.b
        out = [
            f'<svg class="plot" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
            f'aria-label="{_e(self.label)}" xmlns="http://www.w3.org/2000/svg">',
            f'<rect class="frame" x="{lf}" y="{t}" width="{w - lf - r}" height="{h - t - b}"/>',
        ]
        for v, text in self.xs.ticks():
            x = float(self.px(np.asarray([v]))[0])
            if lf - 0.5 <= x <= w - r + 0.5:
                out.append(
                    f'<line class="grid" x1="{x:.1f}" y1="{t}" x2="{x:.1f}" y2="{h - b}"/>'
                    f'<text class="tick" x="{x:.1f}" y="{h - b + 14}" '
                    f'text-anchor="middle">{_e(text)}</text>'
                )
        for v, text in self.ys.ticks():
            y = float(self.py(np.asarray([v]))[0])
            if t - 0.5 <= y <= h - b + 0.5:
                out.append(
                    f'<line class="grid" x1="{lf}" y1="{y:.1f}" x2="{w - r}" y2="{y:.1f}"/>'
                    f'<text class="tick" x="{lf - 5}" y="{y + 4:.1f}" text-anchor="end">'
                    f"<title>{_e(text)}</title>{_e(_short(text))}</text>"
                )
        out.append(
            f'<text class="axis" x="{(lf + w - r) / 2:.0f}" y="{h - 6}" '
            f'text-anchor="middle">{_e(self.xlabel)}</text>'
        )
        if self.ylabel:
            out.append(
                f'<text class="axis" x="12" y="{(t + h - b) / 2:.0f}" text-anchor="middle" '
                f'transform="rotate(-90 12 {(t + h - b) / 2:.0f})">{_e(self.ylabel)}</text>'
            )
        out.append(f"<g>{''.join(self.parts)}</g></svg>")
        return "".join(out)


def _path(d: str, cls: str, member: int | None, title: str) -> str:
    """A path with a tooltip; a member's path in its colour (an SVG ``stroke`` attribute,
    which the page's CSP allows where it refuses inline ``style``)."""
    if not d:
        return ""
    m = f' data-m="{int(member)}" stroke="{member_color(member)}"' if member is not None else ""
    return f'<path class="{cls}"{m} d="{d}"><title>{_e(title)}</title></path>'


# -- the figures -----------------------------------------------------------------------------
def _x_scale(data: ReportData) -> Scale:
    return Scale(0.0, float(data.max_step) * 1.01, "linear")


def _scores_svg(data: ReportData) -> str:
    rng = data.score_range()
    if rng is None:
        return '<p class="empty">No scores were reported.</p>'
    svg = _Svg(
        _x_scale(data),
        Scale.fit(*rng),
        height=360,
        label=f"{data.metric} of every member over steps",
        ylabel=data.metric,
    )
    for member, pieces in sorted(data.scores.items()):
        d = " ".join(svg.d(xs, ys) for xs, ys in pieces)
        svg.add(_path(d, "m line", member, f"member {member}"))
    bx, by = data.best_scores
    if data.best is not None and len(bx):
        svg.add(
            _path(
                svg.d(bx, by),
                "best",
                None,
                f"the best member's line (member {data.best.id} and its ancestors)",
            )
        )
        if data.line is not None:
            svg.add(_jump_marks(svg, data, bx, by))
    return svg.render()


def _jump_title(j: Jump) -> str:
    return _e(f"step {j.step}: member {j.recipient} copied member {j.donor}")


def _jump_marks(svg: _Svg, data: ReportData, bx: np.ndarray, by: np.ndarray) -> str:
    assert data.line is not None
    out = []
    for j in data.line.jumps:
        i = int(np.searchsorted(bx, j.step))
        if i >= len(bx):
            continue
        x = float(svg.px(np.asarray([bx[i]]))[0])
        y = float(svg.py(np.asarray([by[i]]))[0])
        out.append(
            f'<circle class="jump" cx="{x:.1f}" cy="{y:.1f}" r="3">'
            f"<title>{_jump_title(j)}</title></circle>"
        )
    return "".join(out)


def _stretch_points(s: Stretch, axis: Axis, jitter: float) -> tuple[list[float], list[float]]:
    xs: list[float] = []
    ys: list[float] = []
    changes = list(s.changes)
    for k, (step, hp) in enumerate(changes):
        if axis.name not in hp:
            continue
        v = axis.value(hp[axis.name]) + jitter
        nxt = changes[k + 1][0] if k + 1 < len(changes) else s.end
        a, b = min(max(step, s.start), s.end), min(max(nxt, s.start), s.end)
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
            xs, ys = _stretch_points(s, axis, jitter)
            if rows and prev_end == s.start and rows[-1][0] == member:
                rows[-1][1].extend(xs)
                rows[-1][2].extend(ys)
            else:
                rows.append((member, xs, ys))
            prev_end = s.end
    return rows


def _axis_scale(axis: Axis, values: Iterable[float]) -> Scale:
    if axis.kind == "category":
        return Scale.category(axis.levels)
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return Scale.fit(0.0, 1.0)
    return Scale.fit(min(vals), max(vals), axis.kind)


def _hparam_svg(data: ReportData, axis: Axis, *, schedule_only: bool = False) -> str:
    rows = [] if schedule_only else hparam_lines(data, axis)
    n = max(1, len(data.members))
    sched_x: list[float] = []
    sched_y: list[float] = []
    if data.schedule is not None:
        changes = list(data.schedule.changes)
        for k, c in enumerate(changes):
            if axis.name not in c.hparams:
                continue
            nxt = changes[k + 1].step if k + 1 < len(changes) else data.schedule.final_step
            v = axis.value(c.hparams[axis.name])
            sched_x += [c.step, nxt]
            sched_y += [v, v]
    all_y = [y for _, _, ys in rows for y in ys] + sched_y
    ys_scale = _axis_scale(axis, all_y)
    left = 64
    if axis.kind == "category":
        left = min(130, 18 + 7 * max((len(_short(t)) for t in axis.levels), default=4))
    svg = _Svg(
        _x_scale(data),
        ys_scale,
        width=440,
        height=220 if n <= 64 else 260,
        left=left,
        label=f"hyperparameter {axis.name} over steps",
        ylabel=_short(axis.name, 28) + (" (log)" if axis.kind == "log" else ""),
    )
    by_member: dict[int, list[str]] = {}
    for member, xs, ys in rows:
        by_member.setdefault(member, []).append(svg.d(xs, ys))
    for member, ds in by_member.items():
        svg.add(_path(" ".join(ds), "m hp", member, f"member {member}"))
    if sched_x:
        title = "the best member's schedule"
        svg.add(_path(svg.d(sched_x, sched_y), "best", None, title))
    return svg.render()


def _tree_svg(data: ReportData) -> str:
    members = sorted(data.lives)
    n = max(1, len(members))
    row_h = max(5.0, min(34.0, 520.0 / n))
    height = int(max(150.0, 52 + row_h * n))
    rows = {m: i for i, m in enumerate(members)}
    # rows are members, member 0 on top; the member labels stand for y ticks
    ys = Scale(-0.7, n - 0.3, "category", ())
    svg = _Svg(
        _x_scale(data),
        ys,
        height=height,
        left=64,
        label="lineage: members as lines through steps, exploits as jumps",
        ylabel="member",
    )

    def row_y(member: int) -> float:
        return float(svg.py(np.asarray([n - 1 - rows.get(member, 0)]))[0])

    parts: list[str] = []
    for m in members:  # member labels instead of numeric ticks
        if n <= 40 or m % max(1, n // 32) == 0:
            parts.append(
                f'<text class="tick" x="{svg.left - 5}" y="{row_y(m) + 3.5:.1f}" '
                f'text-anchor="end">{int(m)}</text>'
            )
    for m in members:
        y = row_y(m)
        for s in data.lives[m]:
            x0, x1 = svg.px(np.asarray([s.start, s.end])).tolist()
            alive = (m, s.start, s.end) in data.surviving
            cls = "life alive" if alive else "life"
            title = _e(f"member {m}: steps {s.start} to {s.end}")
            parts.append(
                f'<line class="m {cls}" data-m="{int(m)}" x1="{x0:.1f}" y1="{y:.1f}" '
                f'x2="{x1:.1f}" y2="{y:.1f}"><title>{title}</title></line>'
            )
    # the surviving lines' own stretches (a lineage segment may be part of a stretch)
    for member, start, end in sorted(data.surviving):
        if member not in rows:
            continue
        x0, x1 = svg.px(np.asarray([start, end])).tolist()
        y = row_y(member)
        parts.append(
            f'<line class="alive-seg" x1="{x0:.1f}" y1="{y:.1f}" x2="{x1:.1f}" y2="{y:.1f}"/>'
        )
    alive_jumps: list[str] = []
    dead_jumps: list[str] = []
    for j in data.jumps:
        if j.donor not in rows or j.recipient not in rows:
            continue
        x = float(svg.px(np.asarray([j.step]))[0])
        alive = j.event in data.surviving_jumps
        (alive_jumps if alive else dead_jumps).append(
            f'<line class="jumpline{" alive" if alive else ""}" x1="{x:.1f}" '
            f'y1="{row_y(j.donor):.1f}" x2="{x:.1f}" y2="{row_y(j.recipient):.1f}">'
            f"<title>{_jump_title(j)}</title></line>"
        )
    # exploits whose line died out: hidden by a toggle when there are many
    parts.append(f'<g class="dead-jumps">{"".join(dead_jumps)}</g>{"".join(alive_jumps)}')
    errors = data.failure_errors or [""] * len(data.failures)
    for (member, step), error in zip(data.failures, errors, strict=True):
        if member in rows:
            x = float(svg.px(np.asarray([step]))[0])
            y = row_y(member)
            title = f"member {member} failed at step {step}" + (f": {error}" if error else "")
            parts.append(
                f'<path class="failure" d="M{x - 3:.1f},{y - 3:.1f} l6,6 m0,-6 l-6,6">'
                f"<title>{_e(_short(title, 300))}</title></path>"
            )
    if data.line is not None:
        line = data.line
        d = []
        for k, seg in enumerate(line.segments):
            x0, x1 = svg.px(np.asarray([seg.start, seg.end])).tolist()
            y = row_y(seg.member)
            if k == 0:
                d.append(f"M{x0:.1f},{y:.1f}")
            else:
                d.append(f"L{x0:.1f},{y:.1f}")
            d.append(f"L{x1:.1f},{y:.1f}")
        parts.append(
            _path(
                " ".join(d),
                "best",
                None,
                "the winning ancestry: " + " \u2192 ".join(str(a) for a in line.ancestors),
            )
        )
    svg.parts = parts
    return svg.render()


# -- tables ----------------------------------------------------------------------------------
def _members_table(data: ReportData) -> str:
    names = data.names
    best_id = data.best.id if data.best is not None else None
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    rows = []
    for m in data.members:
        cls = ' class="top"' if m.id == best_id else ""
        hp = "".join(f"<td>{_e(fmt_value(m.hparams.get(n, '')))}</td>" for n in names)
        parent = "" if m.parent is None else str(int(m.parent))
        score = "" if m.score is None else fmt_value(m.score)
        rows.append(
            f'<tr{cls} data-m="{int(m.id)}"><td>{int(m.id)}</td><td>{_e(m.status)}</td>'
            f"<td>{int(m.step)}</td><td>{_e(score)}</td><td>{int(m.generation)}</td>"
            f"<td>{parent}</td>{hp}</tr>"
        )
    return (
        '<table class="members"><thead><tr><th>member</th><th>status</th><th>step</th>'
        f"<th>{_e(data.metric)}</th><th>generation</th><th>parent</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _schedule_table(schedule: Schedule) -> str:
    names = schedule.names
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    rows = []
    for c in schedule.changes:
        hp = "".join(f"<td>{_e(fmt_value(c.hparams.get(n, '')))}</td>" for n in names)
        rows.append(
            f'<tr data-m="{int(c.member)}"><td>{int(c.step)}</td><td>{_e(c.cause)}</td>'
            f"<td>{int(c.member)}</td><td>{int(c.generation)}</td>{hp}</tr>"
        )
    return (
        '<table class="schedule"><thead><tr><th>from step</th><th>cause</th><th>member</th>'
        f"<th>generation</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` appear raw."""
    text = json.dumps(value, allow_nan=False, default=str, ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


_CSS = """
:root{--fg:#1d1d1f;--muted:#6b6b70;--line:#d8d8dc;--best:#d62728}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
margin:0 auto;max-width:960px;padding:16px 20px 48px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:17px;margin:28px 0 6px}
p.lead,p.note,p.empty{color:var(--muted);margin:4px 0 8px}
nav a{margin-right:12px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:10px 0}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;word-break:break-word}
svg.plot{display:block;max-width:100%;height:auto;background:#fff}
.plots{display:flex;flex-wrap:wrap;gap:8px}
.plots figure{margin:0}.plots figcaption{font-size:12px;color:var(--muted);word-break:break-all}
rect.frame{fill:none;stroke:#bbb;stroke-width:1}
line.grid{stroke:#eee;stroke-width:1}
text.tick{font-size:10px;fill:#555}text.axis{font-size:12px;fill:#333}
path.line,path.hp{fill:none;stroke-width:1;stroke-opacity:.55;stroke-linejoin:round}
path.best{fill:none;stroke:var(--best);stroke-width:2;stroke-opacity:.85;stroke-linejoin:round}
circle.jump{fill:#fff;stroke:var(--best);stroke-width:1.5}
line.life{stroke:#cfcfd4;stroke-width:1.2}
line.alive-seg{stroke:#6b6b70;stroke-width:1.6}
line.jumpline{stroke:#e2e2e6;stroke-width:.6}line.jumpline.alive{stroke:#8a8a90;stroke-width:1}
body.crowd path.line,body.crowd path.hp{stroke-opacity:.3}
body.hide-dead g.dead-jumps{display:none}
label.toggle{font-size:12.5px;color:var(--muted)}
path.failure{stroke:#b00;stroke-width:1.5;fill:none}
body.picking .m:not(.on){opacity:.12}
path.m.on{stroke-width:2.2;stroke-opacity:1}line.m.on{stroke:#1f77b4;stroke-width:3}
tr.on td{background:#e8f0fb}
[data-m]{cursor:pointer}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0;display:block;overflow-x:auto}
th,td{border-bottom:1px solid #eee;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f6f6f8;position:sticky;top:0}
tr.top td{font-weight:600}
.legend span{display:inline-block;margin-right:14px}
.legend .swatch{display:inline-block;width:18px;height:3px;vertical-align:middle;margin:0 4px 0 0;
background:var(--best)}
#picked{font-weight:600}
"""

_JS = """
(function () {
  var picked = null;
  function pick(m) {
    picked = picked === m ? null : m;
    document.body.classList.toggle('picking', picked !== null);
    var on = document.querySelectorAll('.on');
    for (var i = 0; i < on.length; i++) on[i].classList.remove('on');
    if (picked !== null) {
      var els = document.querySelectorAll('[data-m="' + picked + '"]');
      for (var k = 0; k < els.length; k++) els[k].classList.add('on');
    }
    var label = document.getElementById('picked');
    if (label) label.textContent = picked === null ? '' : 'member ' + picked + ' picked';
  }
  var dead = document.getElementById('show-dead');
  if (dead) dead.addEventListener('change', function () {
    document.body.classList.toggle('hide-dead', !dead.checked);
  });
  document.addEventListener('click', function (ev) {
    var t = ev.target;
    while (t && t.getAttribute && !t.getAttribute('data-m')) t = t.parentNode;
    var m = t && t.getAttribute ? t.getAttribute('data-m') : null;
    if (m && /^[0-9]+$/.test(m)) pick(m);
  });
})();
"""


def csp_source(text: str) -> str:
    """The CSP source that allows an inline ``<script>`` or ``<style>`` holding ``text``."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


#: The page's Content-Security-Policy: nothing but its own script and style (by hash); no
#: inline ``style`` or ``on*`` attribute, no ``javascript:`` URL, nothing from elsewhere.
CSP = (
    f"default-src 'none'; script-src {csp_source(_JS)}; style-src {csp_source(_CSS)}; "
    "base-uri 'none'; form-action 'none'"
)


def render(data: ReportData, *, title: str | None = None) -> str:
    """The report as HTML text."""
    from genepool.version import __version__

    heading = title if title is not None else f"genepool report: {data.name}"
    many_jumps = len(data.jumps) > MANY_JUMPS
    body_classes = ["crowd" if len(data.members) > 16 else "few"]
    if many_jumps:
        body_classes.append("hide-dead")
    best = data.best
    facts = [
        ("run", data.name),
        ("metric", f"{data.metric} ({'higher' if data.mode == 'max' else 'lower'} is better)"),
        ("members", str(len(data.members))),
        ("reports", f"{data.reports:,}"),
        (
            "events",
            ", ".join(f"{k} {v}" for k, v in sorted(data.counts.items())) or "none",
        ),
        ("seed", str(data.seed)),
        ("ended", data.stop_reason),
    ]
    if best is not None:
        facts.insert(
            1,
            (
                "best",
                f"member {best.id}: {data.metric} {fmt_value(best.score)} at step {best.step}",
            ),
        )
    if data.line is not None:
        facts.insert(2, ("winning ancestry", " \u2192 ".join(str(a) for a in data.line.ancestors)))
    for name, value in data.constants.items():
        facts.append((f"fixed: {name}", fmt_value(value)))
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    legend = (
        '<p class="legend"><span><span class="swatch"></span>the best member\'s '
        "line</span><span>click a line or a row to pick a member</span>"
        '<span id="picked"></span></p>'
    )
    hp_figs = "".join(
        f"<figure>{_hparam_svg(data, data.axes[n])}<figcaption>{_e(n)}"
        f"{' (log scale)' if data.axes[n].kind == 'log' else ''}</figcaption></figure>"
        for n in data.names
        if n in data.axes
    )
    hp_section = (
        f'<div class="plots">{hp_figs}</div>'
        if hp_figs
        else '<p class="empty">No hyperparameter varied in this run.</p>'
    )
    if data.schedule is not None:
        sched = data.schedule
        sched_figs = "".join(
            f"<figure>{_hparam_svg(data, data.axes[n], schedule_only=True)}"
            f"<figcaption>{_e(n)}</figcaption></figure>"
            for n in sched.names
            if n in data.axes
        )
        try:
            sched_json: str | None = script_json(sched.to_dict())
            plain = json.dumps(sched.to_dict(), indent=2, ensure_ascii=False, default=str)
        except ValueError:
            sched_json = plain = None
        download = ""
        if sched_json is not None and plain is not None:
            href = "data:application/json;charset=utf-8," + urllib.parse.quote(plain)
            download = (
                f'<p><a download="{_e(data.name)}-schedule.json" href="{_e(href)}">'
                "Download the schedule (JSON)</a> \u2014 the same as "
                "<code>genepool export</code>.</p>"
                f'<script type="application/json" id="schedule-data">{sched_json}</script>'
            )
        schedule_html = (
            f'<p class="lead">The hyperparameters in effect along member {_e(sched.member)}\'s '
            f"line, to step {_e(sched.final_step)} "
            f"({_e(data.metric)} {_e(fmt_value(sched.score))}): each row holds from its step on."
            "</p>"
            f"{_schedule_table(sched)}"
            f'<div class="plots">{sched_figs}</div>{download}'
        )
    else:
        schedule_html = '<p class="empty">No member has a score yet: no best schedule.</p>'
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">',
        f"<title>{_e(heading)}</title><style>{_CSS}</style></head>",
        f'<body class="{" ".join(body_classes)}">',
        f"<header><h1>{_e(heading)}</h1>",
        '<nav><a href="#scores">scores</a><a href="#lineage">lineage</a>'
        '<a href="#hparams">hyperparameters</a><a href="#schedule">best schedule</a>'
        '<a href="#members">members</a></nav>',
        f'<dl class="facts">{dl}</dl></header>',
        legend,
        f'<section id="scores"><h2>{_e(data.metric)} over steps</h2>',
        '<p class="lead">Every member is one line; an exploit is a jump in it. Red: the '
        "scores along the best member's line (its ancestors', then its own), circles at "
        "its exploits.</p>",
        _scores_svg(data),
        "</section>",
        '<section id="lineage"><h2>Lineage</h2>',
        '<p class="lead">Each row is a member through its steps; a vertical line is an '
        "exploit, from the donor's row at the step copied to the member that copied it. "
        "Dark: lines whose weights survive in some member at the end; red: the best "
        "member's ancestry.</p>",
        _tree_svg(data),
        '<label class="toggle"><input type="checkbox" id="show-dead"'
        f"{'' if many_jumps else ' checked'}> show the exploits whose line died out "
        f"({len(data.jumps) - len(data.surviving_jumps)})</label>",
        "</section>",
        '<section id="hparams"><h2>Hyperparameters over steps</h2>',
        "<p class=\"lead\">Every member's values; red: the best member's schedule.</p>",
        hp_section,
        "</section>",
        f'<section id="schedule"><h2>Best schedule</h2>{schedule_html}</section>',
        f'<section id="members"><h2>Members</h2>{_members_table(data)}</section>',
        f'<footer><p class="note">Written by genepool {_e(__version__)}.</p></footer>',
        f"<script>{_JS}</script>",
        "</body></html>",
    ]
    return "\n".join(body)


def write_report(
    result: Result,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
) -> Path:
    """Write the run's report: one self-contained HTML file.

    It opens in any browser with no network and no server: scores of every member over
    steps, hyperparameters over steps, the lineage tree with the winning ancestry, the
    members and the best schedule. It works on a run that is still going.

    Args:
        result: The run (from :func:`genepool.run` or :meth:`genepool.Result.open`).
        path: The file to write (its folder is made if missing).
        title: The page's title (default: ``"genepool report: <run name>"``).
        max_points: Points per member's score line, at most (longer lines are downsampled).

    Returns:
        The path written.

    Example:
        >>> import tempfile, pathlib
        >>> import genepool as gp
        >>> from genepool.analysis import write_report
        >>> def train(member):
        ...     x = member.restore() or 0.0
        ...     while member.running:
        ...         x += member.hparams["lr"]
        ...         member.report(score=x, state=lambda: x)
        >>> result = gp.run(train, gp.Space(lr=gp.Float(0.1, 1.0)), metric="score",
        ...                 population=4, ready=gp.Every(5), budget=gp.Budget(steps=20), seed=0)
        >>> out = write_report(result, pathlib.Path(tempfile.mkdtemp()) / "report.html")
        >>> "Lineage" in out.read_text(encoding="utf-8")
        True
    """
    data = collect(result, max_points=max_points)
    text = render(data, title=title)
    out = Path(os.fspath(path))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    log.info("report of run %r written to %s (%d bytes)", result.name, out, len(text))
    return out
