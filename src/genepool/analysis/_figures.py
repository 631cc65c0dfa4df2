"""The report's figures as PNG files (matplotlib), for papers and READMEs.

The same data as the HTML report, placed the same way: :mod:`genepool.analysis._report_data`
reads the run (``collect``) and derives what both draw (step lines, exploit marks, the
ancestry's path, the tree's rows, the colours). The figures: scores over steps, the lineage
tree, hyperparameters over steps, the best schedule, and an overview that puts scores, tree
and schedule in one figure. Needs the ``plot`` extra (matplotlib); pyplot is never
imported, so a user's backend and open figures are left alone.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genepool._errors import missing_dependency
from genepool.analysis._hparam_axes import Axis
from genepool.analysis._report_data import (
    DEFAULT_MAX_POINTS,
    ReportData,
    ancestry_path,
    collect,
    exploit_marks,
    hparam_lines,
    member_rgb,
    schedule_line,
    short,
)

if TYPE_CHECKING:
    from genepool.result import Result

__all__ = ["FIGURES", "plot_overview", "plot_report"]

log = logging.getLogger(__name__)

#: The files :func:`plot_report` writes, in order.
FIGURES = ("scores.png", "lineage.png", "hparams.png", "schedule.png", "overview.png")
_BEST = "#d62728"


def _figure_class(what: str) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise missing_dependency("matplotlib", "plot", what) from None
    return Figure


def _text(s: object) -> str:
    """A run's name or value as matplotlib text: ``$`` would start mathematics."""
    return str(s).replace("$", r"\$")


def _lines(ax: Any, segments: list[Any], **style: Any) -> None:
    from matplotlib.collections import LineCollection

    if segments:
        ax.add_collection(LineCollection(segments, **style))


def draw_scores(ax: Any, data: ReportData) -> None:
    """Every member's score over steps, the best member's line in red."""
    for member, pieces in sorted(data.scores.items()):
        for xs, ys in pieces:
            ax.plot(xs, ys, color=member_rgb(member), lw=1.0, alpha=0.6)
    bx, by = data.best_scores
    if data.best is not None and len(bx):
        label = f"the best member's line (member {data.best.id})"
        ax.plot(bx, by, color=_BEST, lw=1.5, alpha=0.85, label=label)
        if data.line is not None:
            marks = exploit_marks(data)
            mx, my = [x for _, x, _ in marks], [y for _, _, y in marks]
            ax.plot(mx, my, "o", ms=3.5, mfc="white", mec=_BEST, mew=1.0, label="exploit")
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    elif data.score_range() is None:
        ax.text(0.5, 0.5, "no scores yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, data.step_end)
    ax.set_xlabel("step")
    ax.set_ylabel(_text(data.metric))
    ax.grid(alpha=0.25)


def draw_lineage(ax: Any, data: ReportData) -> None:
    """The tree: members as rows through steps, exploits as vertical jumps, the winning
    ancestry in red, lines whose weights survive darker (with many exploits, only theirs)."""
    row = data.rows()
    members = list(row)
    lives = [[(s.start, row[m]), (s.end, row[m])] for m in members for s in data.lives[m]]
    _lines(ax, lives, colors="#d0d0d5", linewidths=1.0)
    alive = [[(a, row[m]), (b, row[m])] for m, a, b in sorted(data.surviving) if m in row]
    _lines(ax, alive, colors="#55555b", linewidths=1.4)
    dead_jumps: list[Any] = []
    live_jumps: list[Any] = []
    for j in data.jumps:
        if j.donor in row and j.recipient in row:
            link = [(j.step, row[j.donor]), (j.step, row[j.recipient])]
            (live_jumps if j.event in data.surviving_jumps else dead_jumps).append(link)
    if not data.hides_dead_jumps:  # as the HTML report: many dead ends hide the tree
        _lines(ax, dead_jumps, colors="#e0e0e4", linewidths=0.6)
    _lines(ax, live_jumps, colors="#8a8a90", linewidths=0.9)
    fails = [(step, row[m]) for m, step in data.failures if m in row]
    if fails:
        fx, fy = zip(*fails, strict=True)
        ax.plot(fx, fy, "x", color="#b00000", ms=4, label="failed round")
    if data.line is not None:
        path = ancestry_path(data.line)
        xs, ys = [step for step, _ in path], [row[member] for _, member in path]
        ax.plot(xs, ys, color=_BEST, lw=2.0, label="winning ancestry")
    n = len(members)
    ax.set_ylim(n - 0.4, -0.6)
    step = max(1, math.ceil(n / 32))
    ax.set_yticks(range(0, n, step), [str(m) for m in members[::step]])
    ax.set_xlim(0, data.step_end)
    ax.set_xlabel("step")
    ax.set_ylabel("member")
    if data.line is not None or fails:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)


def draw_hparam(ax: Any, data: ReportData, axis: Axis, *, schedule_only: bool = False) -> None:
    """One hyperparameter over steps: every member's values (unless ``schedule_only``) and
    the best member's schedule in red."""
    if not schedule_only:
        for member, xs, ys in hparam_lines(data, axis):
            ax.plot(xs, ys, color=member_rgb(member), lw=0.9, alpha=0.55)
    if data.schedule is not None:
        ax.plot(*schedule_line(data, axis), color=_BEST, lw=1.8)
    if axis.kind == "log":
        ax.set_yscale("log")
    elif axis.kind == "category":
        ax.set_yticks(range(len(axis.levels)), [_text(short(v, 18)) for v in axis.levels])
        ax.set_ylim(-0.6, len(axis.levels) - 0.4)
    ax.set_xlim(0, data.step_end)
    ax.set_xlabel("step")
    ax.set_title(_text(short(axis.name, 40)), fontsize=10)
    ax.grid(alpha=0.25)


def _grid(
    figure_class: Any, n: int, *, ncols: int = 2, width: float = 10.0
) -> tuple[Any, list[Any]]:
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = figure_class(figsize=(10.0, 2.8 * nrows), layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(max(n, 1))]
    return fig, axes


def _save(fig: Any, path: Path, dpi: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    log.info("figure written to %s", path)
    return path


def plot_report(
    result: Result,
    directory: str | os.PathLike[str],
    *,
    title: str | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
    dpi: int = 120,
) -> list[Path]:
    """Write the report's figures as PNG files into ``directory``.

    Writes ``scores.png`` (every member's score over steps), ``lineage.png`` (the tree),
    ``hparams.png`` (every hyperparameter that varied), ``schedule.png`` (the best
    member's schedule) and ``overview.png`` (scores, tree and schedule in one figure).
    Needs matplotlib (``pip install 'genepool[plot]'``).

    Args:
        result: The run (from :func:`genepool.run` or :meth:`genepool.Result.open`).
        directory: Where to write the files (made if missing).
        title: What the figures' titles begin with (default: the run's name).
        max_points: Points per member's score line, at most.
        dpi: The files' resolution.

    Returns:
        The paths written.

    Example:
        >>> import tempfile
        >>> import genepool as gp
        >>> from genepool.analysis import plot_report
        >>> def train(member):
        ...     x = member.restore() or 0.0
        ...     while member.running:
        ...         x += member.hparams["lr"]
        ...         member.report(score=x, state=lambda: x)
        >>> result = gp.run(train, gp.Space(lr=gp.Float(0.1, 1.0)), metric="score",
        ...                 population=4, ready=gp.Every(5), budget=gp.Budget(steps=20), seed=0)
        >>> [p.name for p in plot_report(result, tempfile.mkdtemp())]
        ['scores.png', 'lineage.png', 'hparams.png', 'schedule.png', 'overview.png']
    """
    figure_class = _figure_class("genepool.analysis.plot_report()")
    data = collect(result, max_points=max_points)
    folder = Path(os.fspath(directory))
    heading = title if title is not None else f"run '{data.name}'"
    title = _text(heading)
    out = []

    fig = figure_class(figsize=(10, 4.2), layout="constrained")
    draw_scores(fig.add_subplot(), data)
    fig.suptitle(f"{title}: {_text(data.metric)} of every member")
    out.append(_save(fig, folder / "scores.png", dpi))

    fig = figure_class(figsize=(10, _tree_height(data)), layout="constrained")
    draw_lineage(fig.add_subplot(), data)
    fig.suptitle(f"{title}: lineage")
    out.append(_save(fig, folder / "lineage.png", dpi))

    axes_all = data.varying(data.names)
    fig, axs = _grid(figure_class, len(axes_all))
    for ax, axis in zip(axs, axes_all, strict=False):
        draw_hparam(ax, data, axis)
    _empty(axs, len(axes_all), "no hyperparameter varied")
    fig.suptitle(f"{title}: hyperparameters of every member (red: the best schedule)")
    out.append(_save(fig, folder / "hparams.png", dpi))

    sched_axes = data.varying(data.schedule.names) if data.schedule is not None else []
    fig, axs = _grid(figure_class, len(sched_axes))
    for ax, axis in zip(axs, sched_axes, strict=False):
        draw_hparam(ax, data, axis, schedule_only=True)
    _empty(axs, len(sched_axes), "no schedule" if data.schedule is None else "no change")
    fig.suptitle(f"{title}: the best member's schedule")
    out.append(_save(fig, folder / "schedule.png", dpi))

    out.append(plot_overview(result, folder / "overview.png", title=heading, data=data, dpi=dpi))
    return out


def _empty(axs: list[Any], used: int, message: str) -> None:
    for ax in axs[used:]:
        ax.axis("off")
    if used == 0:
        axs[0].text(0.5, 0.5, message, ha="center", va="center", transform=axs[0].transAxes)


def _tree_height(data: ReportData) -> float:
    return float(min(12.0, max(2.2, 1.2 + 0.16 * len(data.lives))))


def plot_overview(
    result: Result,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    data: ReportData | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
    dpi: int = 120,
) -> Path:
    """One PNG with the run's scores, its lineage tree and its hyperparameters (the best
    schedule in red; the first three that varied), for a README.

    ``title`` heads it (default: the run's name); ``data`` reuses what :func:`plot_report`
    read already. Returns the path written.
    """
    figure_class = _figure_class("genepool.analysis.plot_overview()")
    if data is None:
        data = collect(result, max_points=max_points)
    sched_axes = data.varying(data.schedule.names) if data.schedule is not None else []
    ncols = max(1, min(3, len(sched_axes)))
    tree_h = _tree_height(data)
    rows = 3 if sched_axes else 2
    heights = [3.2, tree_h, 2.6][:rows]
    fig = figure_class(figsize=(10, sum(heights) + 0.6), layout="constrained")
    grid = fig.add_gridspec(rows, ncols, height_ratios=heights)
    top = fig.add_subplot(grid[0, :])
    draw_scores(top, data)
    top.set_title(f"{_text(data.metric)} of every member", fontsize=10)
    tree = fig.add_subplot(grid[1, :], sharex=top)
    draw_lineage(tree, data)
    tree.set_title("lineage (red: the winning ancestry)", fontsize=10)
    for k, axis in enumerate(sched_axes[:ncols]):
        ax = fig.add_subplot(grid[2, k], sharex=top)
        draw_hparam(ax, data, axis)
        ax.set_title(f"{_text(short(axis.name, 30))} (red: the best schedule)", fontsize=10)
    fig.suptitle(_text(title if title is not None else f"run '{data.name}'"))
    return _save(fig, Path(os.fspath(path)), dpi)
