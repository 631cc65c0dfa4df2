"""The report's plots as inline SVG: scales and ticks, a plot's frame, and the plots.

:class:`Scale` maps data to an axis (linear, log or category levels) with round ticks;
``_Svg`` is one plot's frame, axes and paths. The plots are the report's three kinds: every
member's score over steps (:func:`scores_svg`), one hyperparameter over steps
(:func:`hparam_svg`) and the lineage tree (:func:`tree_svg`), all drawn from
:class:`~genepool.analysis._report_data.ReportData`.

Every text from the run is escaped (:func:`esc`), and a member's colour is an SVG ``stroke``
attribute, never an inline ``style``: the page's Content-Security-Policy refuses those.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from genepool.analysis._hparam_axes import Axis
from genepool.analysis._lineage import Jump
from genepool.analysis._report_data import (
    ReportData,
    ancestry_path,
    exploit_marks,
    hparam_lines,
    member_color,
    schedule_line,
    short,
)

__all__ = [
    "Scale",
    "esc",
    "fmt_tick",
    "hparam_svg",
    "log_ticks",
    "nice_ticks",
    "scores_svg",
    "tree_svg",
]


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


def esc(text: Any) -> str:
    """Text from the run, escaped for HTML text and double-quoted attributes."""
    return html.escape(str(text), quote=True)


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
            f'aria-label="{esc(self.label)}" xmlns="http://www.w3.org/2000/svg">',
            f'<rect class="frame" x="{lf}" y="{t}" width="{w - lf - r}" height="{h - t - b}"/>',
        ]
        for v, text in self.xs.ticks():
            x = float(self.px(np.asarray([v]))[0])
            if lf - 0.5 <= x <= w - r + 0.5:
                out.append(
                    f'<line class="grid" x1="{x:.1f}" y1="{t}" x2="{x:.1f}" y2="{h - b}"/>'
                    f'<text class="tick" x="{x:.1f}" y="{h - b + 14}" '
                    f'text-anchor="middle">{esc(text)}</text>'
                )
        for v, text in self.ys.ticks():
            y = float(self.py(np.asarray([v]))[0])
            if t - 0.5 <= y <= h - b + 0.5:
                out.append(
                    f'<line class="grid" x1="{lf}" y1="{y:.1f}" x2="{w - r}" y2="{y:.1f}"/>'
                    f'<text class="tick" x="{lf - 5}" y="{y + 4:.1f}" text-anchor="end">'
                    f"<title>{esc(text)}</title>{esc(short(text))}</text>"
                )
        out.append(
            f'<text class="axis" x="{(lf + w - r) / 2:.0f}" y="{h - 6}" '
            f'text-anchor="middle">{esc(self.xlabel)}</text>'
        )
        if self.ylabel:
            out.append(
                f'<text class="axis" x="12" y="{(t + h - b) / 2:.0f}" text-anchor="middle" '
                f'transform="rotate(-90 12 {(t + h - b) / 2:.0f})">{esc(self.ylabel)}</text>'
            )
        out.append(f"<g>{''.join(self.parts)}</g></svg>")
        return "".join(out)


def _path(d: str, cls: str, member: int | None, title: str) -> str:
    """A path with a tooltip; a member's path in its colour (an SVG ``stroke`` attribute,
    which the page's CSP allows where it refuses inline ``style``)."""
    if not d:
        return ""
    m = f' data-m="{int(member)}" stroke="{member_color(member)}"' if member is not None else ""
    return f'<path class="{cls}"{m} d="{d}"><title>{esc(title)}</title></path>'


# -- the plots ----------------------------------------------------------------------------
def _x_scale(data: ReportData) -> Scale:
    return Scale(0.0, data.step_end, "linear")


def scores_svg(data: ReportData) -> str:
    """Every member's score over steps, and the best member's line with its exploits."""
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
        svg.add(_exploit_marks(svg, data))
    return svg.render()


def _jump_title(j: Jump) -> str:
    return esc(f"step {j.step}: member {j.recipient} copied member {j.donor}")


def _exploit_marks(svg: _Svg, data: ReportData) -> str:
    out = []
    for j, step, score in exploit_marks(data):
        x = float(svg.px(np.asarray([step]))[0])
        y = float(svg.py(np.asarray([score]))[0])
        out.append(
            f'<circle class="jump" cx="{x:.1f}" cy="{y:.1f}" r="3">'
            f"<title>{_jump_title(j)}</title></circle>"
        )
    return "".join(out)


def _axis_scale(axis: Axis, values: Iterable[float]) -> Scale:
    if axis.kind == "category":
        return Scale.category(axis.levels)
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return Scale.fit(0.0, 1.0)
    return Scale.fit(min(vals), max(vals), axis.kind)


def hparam_svg(data: ReportData, axis: Axis, *, schedule_only: bool = False) -> str:
    """One hyperparameter over steps: every member's values (unless ``schedule_only``) and
    the best member's schedule."""
    rows = [] if schedule_only else hparam_lines(data, axis)
    n = max(1, len(data.members))
    sched_x, sched_y = schedule_line(data, axis)
    all_y = [y for _, _, ys in rows for y in ys] + sched_y
    ys_scale = _axis_scale(axis, all_y)
    left = 64
    if axis.kind == "category":
        left = min(130, 18 + 7 * max((len(short(t)) for t in axis.levels), default=4))
    svg = _Svg(
        _x_scale(data),
        ys_scale,
        width=440,
        height=220 if n <= 64 else 260,
        left=left,
        label=f"hyperparameter {axis.name} over steps",
        ylabel=short(axis.name, 28) + (" (log)" if axis.kind == "log" else ""),
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


def tree_svg(data: ReportData) -> str:
    """The lineage tree: members as rows through steps, exploits as jumps between rows, the
    lines that survive darker, failures as crosses, and the winning ancestry."""
    rows = data.rows()
    members = list(rows)
    n = max(1, len(members))
    row_h = max(5.0, min(34.0, 520.0 / n))
    height = int(max(150.0, 52 + row_h * n))
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
            title = esc(f"member {m}: steps {s.start} to {s.end}")
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
                f"<title>{esc(short(title, 300))}</title></path>"
            )
    if data.line is not None:
        line = data.line
        path = ancestry_path(line)
        xs = svg.px(np.asarray([step for step, _ in path])).tolist()
        d = [
            f"{'L' if k else 'M'}{x:.1f},{row_y(member):.1f}"
            for k, (x, (_, member)) in enumerate(zip(xs, path, strict=True))
        ]
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
