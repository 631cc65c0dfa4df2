"""The race's write-up (issue 21): the document and its figures from the per-seed records.

``write_doc(records, plan, doc_path, figure_dir, notes)`` writes the markdown (by default
``docs/results.md``) and the PNG figures from the records (``load_records``) and the plan
alone: every number in it is computed here (``race_stats.summarise``), and the only
hand-written text is ``notes``, printed under its own heading. The same records give the
same bytes: orders are sorted and there is no timestamp.

Run: python benchmarks/race_write.py [--results benchmarks/results/race]
[--plan <results>/plan.json] [--doc docs/results.md] [--figures docs/results]
[--size full]; the notes are read from ``<results>/NOTES.md`` where it exists.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from race_stats import (
    METHODS,
    finite,
    fmt,
    fmt_interval,
    load_records,
    method_order,
    summarise,
    task_order,
)

__all__ = ["figures", "load_records", "main", "summarise", "write_doc"]

HERE = Path(__file__).resolve().parent
_TAB = ["blue", "red", "green", "olive", "orange", "purple", "brown", "pink", "cyan"]
COLOURS = {m: f"tab:{c}" for m, c in zip(METHODS, _TAB, strict=True)}
DPI = 100
_ABL = ("random", "pbt", "exploit_only", "explore_only")  # the GAN's ablation, population 8


def _unplanned_methods(plan: Iterable[Mapping[str, Any]]) -> list[str]:
    """A paragraph on PB2-Mix where the plan has no run of it (and nothing otherwise)."""
    if any(x["method"] == "pb2mix" for x in plan):
        return []
    return [
        "PB2-Mix is not in the plan: it differs from PB2 only on unordered choices "
        "(`gp.Choice`), and no task's space here has one.",
        "",
    ]


def _used(records: Iterable[Mapping[str, Any]], summary: Mapping[str, Any]) -> list[Any]:
    """The records the summary used (its size, planned seeds, the first of duplicates)."""
    want = {
        (c["task"], c["population"], c["method"], s)
        for c in summary["cells"]
        for s in c["seeds_in"]
    }
    seen, out = set(), []
    for r in records:
        key = (r["task"], r["population"], r["method"], r["seed"])
        if r.get("size") == summary["size"] and key in want and key not in seen:
            seen.add(key)
            out.append(r)
    return out


# -- figures ------------------------------------------------------------------------------
def figures(
    records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], directory: Path
) -> dict[str, list[str]]:
    """Writes the PNG figures into ``directory``; returns their file names by section.

    Keys: ``"<task>_p<population>"`` (scores against steps, and the best PBT run's schedule),
    ``"ranks"``, ``"gan_ablation"``, ``"gan_population"``. Empty without matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    used = _used(records, summary)
    made: dict[str, list[str]] = {}

    def save(fig: Any, key: str, name: str) -> None:
        fig.tight_layout()
        fig.savefig(directory / name, dpi=DPI, metadata={"Software": None})
        plt.close(fig)
        made.setdefault(key, []).append(name)

    for task, pop in _task_pops(summary["cells"]):
        rows = [r for r in used if (r["task"], r["population"]) == (task, pop)]
        if not rows:
            continue
        key = f"{task}_p{pop}"
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        _curves(ax, rows)
        ax.set(xlabel="step", ylabel=f"best {rows[0]['metric']} in the population")
        ax.set_title(f"{task}, population {pop}: median over seeds, band: quartiles")
        if ax.get_legend_handles_labels()[0]:  # no curve: no legend (and no warning)
            ax.legend(loc="best", fontsize=8)
        save(fig, key, f"race_{key}.png")
        fig = _schedule_figure(plt, rows, f"{task}, population {pop}")
        if fig is not None:
            save(fig, key, f"race_{key}_schedule.png")
    rk = summary["ranks"]
    if rk["cd"] is not None:
        save(_rank_figure(plt, rk), "ranks", "race_ranks.png")
    cells = {(c["task"], c["population"], c["method"]): c for c in summary["cells"]}
    if any(cells.get(("gan", 8, m), {}).get("n") for m in ("exploit_only", "explore_only")):
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        shown = [m for m in _ABL if ("gan", 8, m) in cells]
        for i, m in enumerate(shown):
            _dots(ax, i, cells[("gan", 8, m)], m)
        ax.set_xticks(range(len(shown)), shown)
        ax.set(
            ylabel=f"best {cells[('gan', 8, shown[0])]['metric'] or 'score'}",
            title="gan, population 8",
        )
        save(fig, "gan_ablation", "race_gan_ablation.png")
    pops = sorted({p for (t, p, m), c in cells.items() if t == "gan" and m in _ABL[:2] and c["n"]})
    if len(pops) > 1:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for j, m in enumerate(("random", "pbt")):
            pts = [cells[("gan", p, m)] for p in pops if ("gan", p, m) in cells]
            pts = [c for c in pts if c["mean"] is not None]
            xs = [c["population"] * (1.04 if j else 0.96) for c in pts]
            lo = [c["mean"] - (c["interval"] or [c["mean"]] * 2)[0] for c in pts]
            hi = [(c["interval"] or [c["mean"]] * 2)[1] - c["mean"] for c in pts]
            ys = [c["mean"] for c in pts]
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", capsize=3, color=COLOURS[m], label=m)
        ax.set_xscale("log", base=2)
        ax.set_xticks(pops, [str(p) for p in pops])
        ax.set(xlabel="population", ylabel="mean best score, 95% interval", title="gan")
        ax.legend(fontsize=8)
        save(fig, "gan_population", "race_gan_population.png")
    return made


def _task_pops(cells: Iterable[Mapping[str, Any]]) -> list[tuple[str, int]]:
    return sorted(
        {(c["task"], c["population"]) for c in cells}, key=lambda x: (task_order(x[0]), x[1])
    )


def _curves(ax: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    import numpy as np

    steps = [p[0] for r in rows for p in r["population_curve"]]
    if not steps:
        return
    grid = np.linspace(min(steps), max(steps), 120)
    for m in sorted({r["method"] for r in rows}, key=method_order):
        mine = [
            sorted(p for p in r["population_curve"] if finite(p[1]))
            for r in rows
            if r["method"] == m
        ]
        nan = np.nan
        ys = np.array(
            [np.interp(grid, [p[0] for p in c], [p[1] for p in c], nan, nan) for c in mine if c]
        )
        if not ys.size:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a step no run of m reached
            q1, med, q3 = np.nanpercentile(ys, [25, 50, 75], axis=0)
        colour = COLOURS.get(m)
        ax.plot(grid, med, color=colour, lw=1.5, label=f"{m} ({len(ys)} run{'s' * (len(ys) > 1)})")
        ax.fill_between(grid, q1, q3, color=colour, alpha=0.2, lw=0)


def _schedule_figure(plt: Any, rows: Sequence[Mapping[str, Any]], title: str) -> Any:
    """The schedule of the best genepool PBT run among ``rows`` (None without one)."""
    from genepool.analysis import Schedule

    pbt = [
        r
        for r in rows
        if r["method"] == "pbt" and r.get("schedule") and isinstance(r["best_score"], float | int)
    ]
    if not pbt:
        return None
    sign = 1.0 if pbt[0]["mode"] == "max" else -1.0
    best = max(pbt, key=lambda r: (sign * r["best_score"], -r["seed"]))
    sched = Schedule.from_dict(best["schedule"])
    names = [
        n for n in sched.names if all(type(c.hparams.get(n)) in (int, float) for c in sched.changes)
    ]
    if not names:
        return None
    fig, axes = plt.subplots(len(names), 1, figsize=(6.4, 1.7 * len(names) + 0.7), squeeze=False)
    steps = list(range(sched.final_step + 1))
    for ax, name in zip(axes[:, 0], names, strict=True):
        vals = [float(sched.at(s)[name]) for s in steps]
        ax.step(steps, vals, where="post", color=COLOURS["pbt"])
        for c in sched.changes[1:]:
            if c.cause == "exploit":
                ax.axvline(c.step, color="grey", lw=0.5, alpha=0.5)
        if min(vals) > 0 and max(vals) / min(vals) > 20:
            ax.set_yscale("log")
        ax.set_ylabel(name)
    axes[0, 0].set_title(f"{title}: schedule of the best PBT run (seed {best['seed']})")
    axes[-1, 0].set_xlabel("step (grey: exploits)")
    return fig


def _rank_figure(plt: Any, rk: Mapping[str, Any]) -> Any:
    """Demšar's diagram: average ranks on an axis, the CD bar, cliques joined by thick lines."""
    avg, cd, k = rk["average"], rk["cd"], len(rk["methods"])
    order = sorted(avg, key=lambda m: (avg[m], method_order(m)))
    fig, ax = plt.subplots(figsize=(6.4, 1.6 + 0.35 * k))
    ax.hlines(0, 1, k, color="black", lw=1)
    for r in range(1, k + 1):
        ax.vlines(r, -0.05, 0.05, color="black", lw=1)
        ax.text(r, 0.12, str(r), ha="center", fontsize=8)
    for i, m in enumerate(order):
        y = -0.45 - 0.3 * i
        ax.plot([avg[m], avg[m]], [0, y], color=COLOURS.get(m, "black"), lw=1)
        ax.text(avg[m] + 0.03, y, f"{m} ({fmt(avg[m])})", va="center", fontsize=9)
    ax.plot([1, 1 + cd], [0.45, 0.45], color="black", lw=2)
    ax.text(1 + cd / 2, 0.55, f"CD = {fmt(cd)}", ha="center", fontsize=8)
    for i, group in enumerate(rk["cliques"]):
        y = -0.2 - 0.08 * i
        ax.plot([avg[group[0]] - 0.03, avg[group[-1]] + 0.03], [y, y], color="black", lw=4)
    ax.set_xlim(0.7, k + 0.9)
    ax.set_ylim(-0.6 - 0.3 * k, 0.8)
    ax.axis("off")
    ax.set_title(f"average rank (1 = best) over {rk['blocks']} blocks", fontsize=10)
    return fig


def _dots(ax: Any, x: int, cell: Mapping[str, Any], method: str) -> None:
    """One method's score per seed as dots, and its mean with the 95% interval."""
    ys = [s for _, s in cell["scores"]]
    xs = [x + 0.3 * (i / max(len(ys) - 1, 1) - 0.5) for i in range(len(ys))]
    ax.scatter(xs, ys, s=12, color=COLOURS.get(method), alpha=0.6)
    if cell["interval"] is not None:
        mean, (lo, hi) = cell["mean"], cell["interval"]
        ax.errorbar([x], [mean], yerr=[[mean - lo], [hi - mean]], fmt="s", color="k", capsize=4)


# -- the document -------------------------------------------------------------------------
def _table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    return out + ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]


def _seeds(s: Sequence[int]) -> str:
    """'10 seeds (0 to 9)', '1 seed (0)', '2 seeds (0, 5)'."""
    if len(s) == 1:
        return f"1 seed ({s[0]})"
    run = list(range(s[0], s[-1] + 1)) == list(s)
    return f"{len(s)} seeds ({f'{s[0]} to {s[-1]}' if run else ', '.join(map(str, s))})"


def _images(alt: str, names: Sequence[str], rel: str) -> list[str]:
    return [line for n in names for line in (f"![{alt}]({rel}{n})", "")]


def _progress(c: Mapping[str, Any] | None) -> str:
    if c is None:
        return ""
    return f"{c['runs_in']}/{c['planned']}" + (f" ({c['failed']} failed)" if c["failed"] else "")


def _cmp(c: Mapping[str, Any], *last: Any) -> list[Any]:
    """A comparison's row: a - b, pairs, mean gain, interval, then ``last``."""
    head = [f"{c['a']} - {c['b']}", f"{c['n']} of {c['planned']}", fmt(c["mean"])]
    return [*head, fmt_interval(c["interval"]), *last]


def _cmp_rows(comps: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    return [_cmp(c, f"{c['wins']}/{c['ties']}/{c['losses']}", c["verdict"]) for c in comps]


_CELL_HEAD = ["method", "scores (of planned)", "mean ± sd", "95% interval", "wall s (max)"]
_CELL_HEAD += ["exploits", "budget steps"]


def _cell_row(c: Mapping[str, Any]) -> list[Any]:
    steps = ", ".join(map(str, c["budget_steps"])) or "n/a"
    mean = fmt(c["mean"]) if c["sd"] is None else f"{fmt(c['mean'])} ± {fmt(c['sd'])}"
    wall = f"{fmt(c['wall_s'])} ({fmt(c.get('max_wall_s'))})"  # a run may take 5 minutes
    cost = [wall, fmt(c["exploits"]), steps]
    return [c["method"], f"{c['n']} of {c['planned']}", mean, fmt_interval(c["interval"]), *cost]


_CMP_HEAD = ["comparison", "pairs (of planned)", "mean gain", "95% interval"]


def _markdown(
    summary: Mapping[str, Any],
    plan: Sequence[Mapping[str, Any]],
    figs: Mapping[str, list[str]],
    rel: str,
    notes: str | None,
) -> list[str]:
    cells, comps = summary["cells"], summary["comparisons"]
    ign = summary["ignored"]
    seeds_per_task: dict[str, set[int]] = {}
    for x in plan:
        seeds_per_task.setdefault(x["task"], set()).update(x["seeds"])
    design = ", ".join(
        f"{t}: {_seeds(sorted(s))}"
        for t, s in sorted(seeds_per_task.items(), key=lambda x: task_order(x[0]))
    )
    hand = " except the section headed *Notes (written by hand after the results)*"
    hand = hand if notes else ""
    L = [
        "# The race: methods at equal compute (issue 21)",
        "",
        "Written by `benchmarks/race_write.py` from the per-seed result files and the plan "
        f"alone; nothing here is typed by hand{hand}. In every cell the methods share the "
        "population, the budget and the seeds; the seeds were fixed in the plan before the "
        "first result "
        f"({design}). The score compared is the best member's final score, in runs of size "
        f"`{summary['size']}`. A gain `a - b` is a's score minus b's on the same seed, the "
        "sign flipped where lower is better, so a positive gain means a did better; its 95% "
        "Student t interval is over the seeds both sides have (`pairs`). Where the interval "
        "contains 0 the seeds run do not tell the two methods apart.",
        "",
        *_unplanned_methods(plan),
        "## Progress",
        "",
        f"{summary['runs_in']} of {summary['runs_planned']} planned runs are in. Records not "
        f"used: {ign['unplanned']} outside the plan, {ign['duplicate']} duplicates (the first "
        f"file kept), {ign['other_size']} of another size.",
        "",
    ]
    methods = sorted({c["method"] for c in cells}, key=method_order)
    by = {(c["task"], c["population"], c["method"]): c for c in cells}
    progress = []
    for t, p in _task_pops(cells):
        got = [by.get((t, p, m)) for m in methods]
        progress.append([t, p, *(_progress(c) for c in got)])
    L += _table(["task", "population", *methods], progress)
    L += ["", "## Targets", ""]
    for i, t in enumerate(summary["targets"], 1):
        L += [f"### {i}. {t['name']}: **{t['verdict']}**", "", f"Target: {t['claim']}.", ""]
        if t["rows"]:
            rows = [[r["task"], r["population"], *_cmp(r, r["status"])] for r in t["rows"]]
            L += [*_table(["task", "population", *_CMP_HEAD, "status"], rows), ""]
        L += [
            f"Passing with every planned run in: {t['passing']} {t['unit']}; "
            f"{t['runs'][0]} of {t['runs'][1]} runs in.",
            "",
        ]
    L += ["## Where a method did not win", ""]
    L += [f"- {s}" for s in summary["not_won"]] or ["Every comparison with results was won."]
    L += [
        "",
        "Why: see the hand-written notes at the end."
        if notes
        else "Why: no hand-written notes on these results yet.",
        "",
    ]
    L += _rank_section(summary["ranks"], figs, rel)
    for task in sorted({c["task"] for c in cells}, key=task_order):
        first = next(c for c in cells if c["task"] == task)
        better = {"max": "higher is better", "min": "lower is better"}.get(first["mode"], "")
        L += [f"## {task}", "", f"Metric: {first['metric'] or 'n/a'} ({better or 'no runs'}).", ""]
        for pop in sorted({c["population"] for c in cells if c["task"] == task}):
            mine = [c for c in cells if (c["task"], c["population"]) == (task, pop)]
            L += [f"### {task}, population {pop}", ""]
            if not any(c["runs_in"] for c in mine):
                L += [f"No run in yet (0 of {sum(c['planned'] for c in mine)}).", ""]
                continue
            L += [*_table(_CELL_HEAD, (_cell_row(c) for c in mine)), ""]
            pc = [c for c in comps if (c["task"], c["population"]) == (task, pop)]
            if pc:
                L += [*_table([*_CMP_HEAD, "wins/ties/losses", "verdict"], _cmp_rows(pc)), ""]
            L += _images(f"{task} {pop}", figs.get(f"{task}_p{pop}", []), rel)
    L += _gan_section(cells, comps, figs, rel)
    if notes:
        L += [
            "## Notes (written by hand after the results)",
            "",
            "*Hand-written commentary from `NOTES.md`, not generated from the records.*",
            "",
            notes.strip(),
            "",
        ]
    return L


def _rank_section(rk: Mapping[str, Any], figs: Mapping[str, list[str]], rel: str) -> list[str]:
    L = ["## Ranks across tasks", ""]
    if rk["cd"] is None:
        return [*L, f"No block has a result from every one of {rk['methods']} yet.", ""]
    fr = rk["friedman"]
    L += [
        f"Methods {', '.join(rk['methods'])} ranked within each block (task, population, "
        f"seed) where all of them have a result, 1 the best, ties sharing their average rank: "
        f"{rk['blocks']} blocks. This treats the blocks as exchangeable across tasks and "
        "populations, which they are not quite; the per-task paired intervals above and "
        "below are the primary evidence.",
        "",
        *_table(["method", "average rank"], ([m, fmt(rk["average"][m])] for m in rk["methods"])),
    ]
    fried = f"chi-square {fmt(fr['chi2'])}, p = {fmt(fr['p'])}" if fr else "not computed (it "
    fried += "" if fr else "needs 3 methods, 2 blocks and unequal ranks)"
    apart = "; ".join(" ~ ".join(g) for g in rk["cliques"]) or "none"
    L += [
        "",
        f"Friedman test: {fried}. Nemenyi critical difference at 0.05: {fmt(rk['cd'])}; "
        f"methods whose average ranks differ by less than it, not told apart: {apart}.",
    ]
    L += ["", *_images("ranks", figs.get("ranks", []), rel), "Per task:", ""]
    rows = [
        [t, v["blocks"], *(fmt(v["average"][m]) for m in rk["methods"])]
        for t, v in rk["per_task"].items()
    ]
    return [*L, *_table(["task", "blocks", *rk["methods"]], rows), ""]


def _gan_section(
    cells: Sequence[Mapping[str, Any]],
    comps: Sequence[Mapping[str, Any]],
    figs: Mapping[str, list[str]],
    rel: str,
) -> list[str]:
    L: list[str] = []
    abl = _ABL[2:]
    if any(c["task"] == "gan" and c["population"] == 8 and c["method"] in abl for c in cells):
        rows = [c for c in comps if (c["task"], c["population"]) == ("gan", 8)]
        rows = [c for c in rows if c["a"] in abl or c["b"] in abl]
        mine = [c for c in cells if (c["task"], c["population"]) == ("gan", 8)]
        L += ["## gan: exploit-only and explore-only ablations (population 8)", ""]
        L += [*_table(_CELL_HEAD, (_cell_row(c) for c in mine if c["method"] in _ABL)), ""]
        L += _table([*_CMP_HEAD, "wins/ties/losses", "verdict"], _cmp_rows(rows))
        L += ["", *_images("gan ablation", figs.get("gan_ablation", []), rel)]
    pts = [c for c in cells if c["task"] == "gan" and c["method"] in ("pbt", "random")]
    if len({c["population"] for c in pts}) > 1:
        L += ["## gan: final score against population size", ""]
        table = [[c["population"], *_cell_row(c)[:4]] for c in pts]
        L += [*_table(["population", *_CELL_HEAD[:4]], table), ""]
        L += _images("gan population", figs.get("gan_population", []), rel)
    return L


def write_doc(
    records: Sequence[Mapping[str, Any]],
    plan: Sequence[Mapping[str, Any]],
    doc_path: Path,
    figure_dir: Path,
    notes: str | None = None,
    size: str | None = None,
) -> dict[str, Any]:
    """Writes the document and its figures from ``records`` and ``plan``; returns the summary.

    ``notes``: hand-written commentary (``NOTES.md``), printed under its own heading.
    ``size``: the records' size written up (``None``: ``"full"`` where there is any, else
    the one size there is). The summary is ``summarise``'s, with ``"figures"`` added.
    """
    summary = summarise(records, plan, size)
    doc_path = Path(doc_path)
    figs = figures(records, summary, Path(figure_dir))
    rel = Path(os.path.relpath(Path(figure_dir).resolve(), doc_path.parent.resolve())).as_posix()
    lines = _markdown(summary, plan, figs, "" if rel == "." else rel + "/", notes)
    if not figs:
        lines += ["No figures: matplotlib is not installed (pip install 'genepool[plot]').", ""]
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    lines = [x for i, x in enumerate(lines) if x or (i and lines[i - 1])]  # no double blanks
    doc_path.write_text("\n".join(lines).strip() + "\n", encoding="utf-8")
    summary["figures"] = figs
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results" / "race")
    parser.add_argument("--plan", type=Path, default=None, help="default: <results>/plan.json")
    parser.add_argument("--doc", type=Path, default=HERE.parent / "docs" / "results.md")
    parser.add_argument("--figures", type=Path, default=HERE.parent / "docs" / "results")
    parser.add_argument("--size", default=None, help="default: full, else the one size there")
    args = parser.parse_args(argv)
    plan_file = args.plan or args.results / "plan.json"
    if plan_file.exists():
        plan = json.loads(plan_file.read_text(encoding="utf-8"))
    else:  # the plan as benchmarks/race_plan.py fixes it
        import race_plan

        plan = race_plan.cells(race_plan.plan())
    notes_file = args.results / "NOTES.md"
    notes = notes_file.read_text(encoding="utf-8") if notes_file.exists() else None
    summary = write_doc(load_records(args.results), plan, args.doc, args.figures, notes, args.size)
    print(
        json.dumps(
            {
                "runs_in": summary["runs_in"],
                "runs_planned": summary["runs_planned"],
                "targets": [t["verdict"] for t in summary["targets"]],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
