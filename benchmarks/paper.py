"""The paper's experiments at laptop scale: PBT against random search, and the write-up.

Tasks: the toy (examples/toy.py, Figure 2), reinforcement learning (examples/rl.py),
translation scored by BLEU (examples/translation.py) and a GAN scored by an Inception-style
score (examples/gan.py). Each task runs with ``method="pbt"`` (exploit and explore) and
``method="random"`` (random search: the same population, hyperparameters sampled from the
same space and kept, the same budget, so the same compute), over ``--seeds`` seeds (the
same seeds for both methods), at the task's ``"full"`` size with two worker processes.

Every run stores one JSON file, ``benchmarks/results/<task>-<method>-<seed>.json``, and a
run whose file exists is skipped, so an interrupted benchmark resumes. Then
``docs/results.md`` and its figures (``docs/results/*.png``) are written from those files
alone: a table of mean ± standard deviation of the best final score per method with the
budget and population, whether PBT beat random search, and plots of the score against
steps and of the best member's discovered schedule. No number in it is typed by hand.

Run: python benchmarks/paper.py [--tasks toy,rl,translation,gan] [--seeds 5]
[--workers 2] [--write-only] [--quick]
``--quick`` runs every task once per method at its smoke size into a temporary directory
(for CI: it checks that the pipeline works; its numbers mean nothing). The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "examples"))  # worker processes inherit it

from benchutil import t_interval  # noqa: E402

import genepool as gp  # noqa: E402
from genepool.analysis import Schedule  # noqa: E402
from genepool.version import __version__  # noqa: E402

TASKS = ("toy", "rl", "translation", "gan")
METHODS = ("pbt", "random")
RESULT_FORMAT = 1
#: At most this many points per curve in a result file (the figures need no more).
CURVE_POINTS = 400


# -- the toy, behind the same interface as the other examples -----------------------------
class _ToyTask:
    """examples/toy.py with the interface of the other examples."""

    TASK = "toy"
    METRIC = "Q"
    MODE = "max"
    SIZES: Mapping[str, Mapping[str, Any]] = {
        "smoke": {"population": 2, "steps": 40},
        "full": {"population": 2, "steps": 200},
    }

    @staticmethod
    def run(
        *,
        method: str,
        seed: int,
        size: str = "full",
        workers: int = 1,
        storage: str | None = None,
        progress: bool = False,
    ) -> gp.Result:
        import toy

        s = _ToyTask.SIZES[size]
        pbt = method == "pbt"
        return gp.run(
            toy.Toy,
            toy.SPACE,
            metric="Q",
            population=s["population"],
            # PBT starts where the paper's figure does; random search samples its h
            initial=toy.INITIAL[: s["population"]] if pbt else None,
            ready=gp.Every(4),
            budget=gp.Budget(steps=s["steps"]),
            exploit=gp.Truncation() if pbt else None,
            explore=gp.GaussianNoise(0.1) if pbt else None,
            seed=seed,
            synchronous=True,
            storage=storage,
            workers=1,  # microseconds per step: processes would only add start-up
            progress=progress,
        )


def task_module(task: str) -> Any:
    """The module (or adapter) that runs ``task``."""
    if task == "toy":
        return _ToyTask
    module: ModuleType = importlib.import_module(task)
    return module


# -- one run -------------------------------------------------------------------------------
def _thin(points: Sequence[tuple[int, float]], limit: int = CURVE_POINTS) -> list[list[float]]:
    if len(points) <= limit:
        return [[s, v] for s, v in points]
    stride = math.ceil(len(points) / limit)
    kept = list(points[::stride])
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return [[s, v] for s, v in kept]


def population_curve(result: gp.Result, mode: str) -> list[tuple[int, float]]:
    """The best score in the population at each step: the best member's report there."""
    best: dict[int, float] = {}
    pick = max if mode == "max" else min
    for r in result.reports:
        value = r.metrics.get(result.metric)
        if isinstance(value, int | float) and math.isfinite(value):
            best[r.step] = pick(best.get(r.step, value), float(value))
    return sorted(best.items())


def run_one(task: str, method: str, seed: int, *, size: str, workers: int) -> dict[str, Any]:
    """Run ``task`` with ``method`` and ``seed``; everything the write-up needs, as JSON."""
    module = task_module(task)
    with tempfile.TemporaryDirectory(prefix=f"gp-paper-{task}-") as tmp:
        storage = f"sqlite:///{tmp}/run.db"
        t0 = time.perf_counter()
        result = module.run(method=method, seed=seed, size=size, workers=workers, storage=storage)
        wall = time.perf_counter() - t0
        best = result.best
        schedule = result.schedule()
        line = result.ancestry_scores()
        members = result.members
        finals = [m.score for m in members if m.score is not None and math.isfinite(m.score)]
        sizes = dict(module.SIZES[size])
        return {
            "format": RESULT_FORMAT,
            "task": task,
            "method": method,
            "seed": seed,
            "size": size,
            "settings": sizes,
            "population": len(members),
            "budget_steps": max(m.step for m in members),
            "workers": workers,
            "metric": module.METRIC,
            "mode": module.MODE,
            "wall_s": round(wall, 2),
            "best_score": best.score,
            "best_member": best.id,
            "final_scores": finals,
            "exploits": sum(1 for e in result.events if e.kind == "exploit"),
            "population_curve": _thin(population_curve(result, module.MODE)),
            "best_line": _thin([(s, v) for s, v, _ in line]),
            "schedule": schedule.to_dict(),
            "genepool": __version__,
            "python": sys.version.split()[0],
        }


def result_path(results: Path, task: str, method: str, seed: int) -> Path:
    return results / f"{task}-{method}-{seed}.json"


def run_all(
    tasks: Sequence[str], seeds: int, *, results: Path, size: str, workers: int
) -> list[Path]:
    """Run every missing (task, method, seed) and store its JSON; returns the new files."""
    results.mkdir(parents=True, exist_ok=True)
    made = []
    for task in tasks:
        for seed in range(seeds):
            for method in METHODS:
                path = result_path(results, task, method, seed)
                if path.exists():
                    continue
                print(f"running {task} {method} seed {seed} ...", flush=True)
                record = run_one(task, method, seed, size=size, workers=workers)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(record, indent=1) + "\n")
                tmp.replace(path)
                print(
                    f"  best {record['metric']} {record['best_score']:.4g} in {record['wall_s']} s",
                    flush=True,
                )
                made.append(path)
    return made


# -- the write-up ----------------------------------------------------------------------------
def load_results(results: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(results.glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("format") == RESULT_FORMAT:
            out.append(record)
    return out


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _gain(entry: Mapping[str, Any]) -> str:
    ci = entry.get("paired_ci95")
    if ci is None:
        return _fmt(entry["paired_mean"])
    return f"{_fmt(entry['paired_mean'])} ({_fmt(ci[0])} to {_fmt(ci[1])})"


def _secs(x: float) -> str:
    """Seconds: whole ones, but two significant digits under ten (a toy run takes 0.2 s)."""
    return f"{x:.0f}" if x >= 10 else f"{x:.2g}"


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task: per method the scores, mean and standard deviation; and the verdict."""
    out: dict[str, dict[str, Any]] = {}
    for task in TASKS:
        rows = [r for r in records if r["task"] == task]
        if not rows:
            continue
        entry: dict[str, Any] = {
            "methods": {},
            "mode": rows[0]["mode"],
            "metric": rows[0]["metric"],
        }
        for method in METHODS:
            mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["seed"])
            scores = [float(r["best_score"]) for r in mine if r["best_score"] is not None]
            if not scores:
                continue
            entry["methods"][method] = {
                "seeds": [r["seed"] for r in mine],
                "scores": scores,
                "mean": statistics.fmean(scores),
                "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                "population": mine[0]["population"],
                "budget_steps": mine[0]["budget_steps"],
                "wall_s": statistics.fmean(r["wall_s"] for r in mine),
                "exploits": statistics.fmean(r["exploits"] for r in mine),
            }
        methods = entry["methods"]
        if "pbt" in methods and "random" in methods:
            sign = 1.0 if entry["mode"] == "max" else -1.0
            diff = sign * (methods["pbt"]["mean"] - methods["random"]["mean"])
            theirs = dict(zip(methods["random"]["seeds"], methods["random"]["scores"], strict=True))
            paired = [
                sign * (p - theirs[seed])
                for seed, p in zip(methods["pbt"]["seeds"], methods["pbt"]["scores"], strict=True)
                if seed in theirs
            ]
            entry["pbt_better"] = diff > 0
            entry["pbt_wins"] = sum(1 for d in paired if d > 0)
            entry["pairs"] = len(paired)
            # the gain PBT - random ("better" positive in either mode), paired by seed
            entry["paired_mean"] = statistics.fmean(paired) if paired else math.nan
            entry["paired_ci95"] = t_interval(paired)
        out[task] = entry
    return out


def figures(records: Sequence[dict[str, Any]], directory: Path) -> dict[str, list[str]]:
    """Per task, a score-against-steps figure and a schedule figure; returns their files."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figures (pip install 'genepool[plot]')")
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    made: dict[str, list[str]] = {}
    colours = {"pbt": "tab:red", "random": "tab:blue"}
    for task in TASKS:
        rows = [r for r in records if r["task"] == task]
        if not rows:
            continue
        metric = rows[0]["metric"]
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        for method in METHODS:
            for i, r in enumerate(x for x in rows if x["method"] == method):
                curve = r["population_curve"]
                ax.plot(
                    [p[0] for p in curve],
                    [p[1] for p in curve],
                    color=colours[method],
                    alpha=0.55,
                    lw=1.0,
                    label=f"{method} ({sum(1 for x in rows if x['method'] == method)} seeds)"
                    if i == 0
                    else None,
                )
        ax.set(
            xlabel="step",
            ylabel=f"best {metric} in the population",
            title=f"{task}: score against steps",
        )
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        scores_png = directory / f"{task}_scores.png"
        fig.savefig(scores_png, dpi=110)
        plt.close(fig)

        pbt = [r for r in rows if r["method"] == "pbt"]
        files = [scores_png.name]
        if pbt:
            best = (max if rows[0]["mode"] == "max" else min)(pbt, key=lambda r: r["best_score"])
            schedule = Schedule.from_dict(best["schedule"])
            names = [n for n in schedule.names if _numeric(schedule, n)]
            if names:
                fig, axes = plt.subplots(
                    len(names), 1, figsize=(6.4, 1.9 * len(names) + 0.6), squeeze=False
                )
                steps = list(range(schedule.final_step + 1))
                for ax, name in zip(axes[:, 0], names, strict=True):
                    ax.step(
                        steps,
                        [float(schedule.at(s)[name]) for s in steps],
                        where="post",
                        color="tab:red",
                    )
                    for c in schedule.changes[1:]:
                        if c.cause == "exploit":
                            ax.axvline(c.step, color="grey", lw=0.5, alpha=0.5)
                    ax.set_ylabel(name)
                    if all(float(schedule.at(s)[name]) > 0 for s in steps):
                        lo, hi = (
                            min(float(c.hparams[name]) for c in schedule),
                            max(float(c.hparams[name]) for c in schedule),
                        )
                        if hi / lo > 20:
                            ax.set_yscale("log")
                axes[0, 0].set_title(
                    f"{task}: schedule of the best PBT member (seed {best['seed']}; grey: exploits)"
                )
                axes[-1, 0].set_xlabel("step")
                fig.tight_layout()
                schedule_png = directory / f"{task}_schedule.png"
                fig.savefig(schedule_png, dpi=110)
                plt.close(fig)
                files.append(schedule_png.name)
        made[task] = files
    return made


def _numeric(schedule: Any, name: str) -> bool:
    return all(
        isinstance(c.hparams.get(name), int | float) and not isinstance(c.hparams.get(name), bool)
        for c in schedule.changes
    )


def write_doc(records: Sequence[dict[str, Any]], path: Path, figure_dir: Path) -> dict[str, Any]:
    """Write the results document from the stored results alone; returns the summary."""
    summary = summarise(records)
    pngs = figures(records, figure_dir)
    rel = (
        figure_dir.relative_to(path.parent)
        if figure_dir.is_relative_to(path.parent)
        else figure_dir
    )
    lines = [
        "# PBT against random search: the paper's experiments at laptop scale",
        "",
        "Written by `python benchmarks/paper.py` from the JSON files in `benchmarks/results/`",
        "(one per task, method and seed); nothing here is typed by hand. Random search trains",
        "the same population with hyperparameters sampled from the same space and never",
        "changed; both methods have the same budget and the same seeds. The score is the best",
        "member's final score (its checkpoint at the end of the run). The gain is PBT's",
        "score minus random search's on the same seed (sign flipped where lower is better),",
        "with a 95% t interval over the seeds: where it contains 0, the seeds run cannot",
        "tell the two methods apart.",
        "",
        "| task | metric | population | budget (steps) | PBT mean ± sd | random mean ± sd "
        "| PBT better | seeds PBT won | gain, paired by seed (95% interval) "
        "| mean wall time per run (s, PBT / random) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task, entry in summary.items():
        m = entry["methods"]
        if "pbt" not in m or "random" not in m:
            continue
        p, r = m["pbt"], m["random"]
        verdict = "yes" if entry["pbt_better"] else "**no**"
        lines.append(
            f"| {task} | {entry['metric']} ({entry['mode']}) | {p['population']} "
            f"| {p['budget_steps']} | {_fmt(p['mean'])} ± {_fmt(p['std'])} "
            f"| {_fmt(r['mean'])} ± {_fmt(r['std'])} | {verdict} "
            f"| {entry['pbt_wins']} of {entry['pairs']} | {_gain(entry)} "
            f"| {_secs(p['wall_s'])} / {_secs(r['wall_s'])} |"
        )
    paper_tasks = [
        t for t in ("rl", "translation", "gan") if t in summary and "pbt_better" in summary[t]
    ]
    won = [t for t in paper_tasks if summary[t]["pbt_better"]]
    lost = [t for t in paper_tasks if not summary[t]["pbt_better"]]
    lines += [
        "",
        f"PBT beat random search in mean final score on {len(won)} of the {len(paper_tasks)} "
        "experiments of the paper that ran" + (f" ({', '.join(won)})." if won else "."),
    ]
    if lost:
        lines.append(f"It did not on: {', '.join(lost)}. See the notes below for why.")
    clear = [t for t in won if (summary[t].get("paired_ci95") or (0.0, 0.0))[0] > 0]
    unclear = [t for t in paper_tasks if t not in clear]
    if clear:
        lines.append(f"The gain's 95% interval lies above 0 on: {', '.join(clear)}.")
    if unclear:
        lines.append(
            f"The gain's 95% interval contains 0 on: {', '.join(unclear)}; there the seeds "
            "run do not show a difference beyond chance."
        )
    notes_file = HERE / "results" / "NOTES.md"
    if notes_file.exists():
        lines += ["", "## Notes", "", notes_file.read_text().strip()]
    lines += ["", "## Per task", ""]
    for task, entry in summary.items():
        lines.append(f"### {task}")
        lines.append("")
        for method, stats in entry["methods"].items():
            scores = ", ".join(_fmt(s) for s in stats["scores"])
            lines.append(
                f"- {method}: best final {entry['metric']} per seed {scores}; "
                f"{stats['exploits']:.1f} exploits per run on average."
            )
        lines.append("")
        for name in pngs.get(task, []):
            lines.append(f"![{task} {name}]({rel}/{name})")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--write-only", action="store_true", help="only write docs/results.md")
    parser.add_argument("--quick", action="store_true", help="smoke size, into a temp dir")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        parser.error(f"--tasks: unknown {unknown}; choose from {list(TASKS)}")
    t0 = time.perf_counter()
    if args.quick:
        with tempfile.TemporaryDirectory(prefix="gp-paper-quick-") as tmp:
            results = Path(tmp) / "results"
            run_all(tasks, 1, results=results, size="smoke", workers=1)
            summary = write_doc(load_results(results), Path(tmp) / "results.md", Path(tmp) / "fig")
    else:
        results = HERE / "results"
        if not args.write_only:
            run_all(tasks, args.seeds, results=results, size="full", workers=args.workers)
        summary = write_doc(
            load_results(results), ROOT / "docs" / "results.md", ROOT / "docs" / "results"
        )
    out = {
        "quick": args.quick,
        "seconds": round(time.perf_counter() - t0, 1),
        "tasks": {
            t: {
                "pbt_better": e.get("pbt_better"),
                **{
                    m: {"mean": s["mean"], "std": s["std"], "n": len(s["scores"])}
                    for m, s in e["methods"].items()
                },
            }
            for t, e in summary.items()
        },
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
