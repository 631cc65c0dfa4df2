"""The race (issue 21): does PBT pay, and which PBT? Every method at equal compute on six tasks.

Tasks: the paper's toy, Ray Tune's triangle wave and a deceptive toy (benchmarks/race_toys.py),
and the paper's experiments at laptop scale: reinforcement learning (examples/rl.py),
translation scored by BLEU (examples/translation.py) and a GAN scored by an Inception-style
score (examples/gan.py), with their settings as they were when the study began. Methods
(examples/_methods.py): random search, PBT, PB2 and PBT with the greediness controls, at
populations 4 and 8, with the same seeds, population, budget and ready interval for every
method; Ray Tune's PBT and PB2 on the toys (benchmarks/race_tune.py); the paper's ablations
and population sizes on the GAN. benchmarks/race_plan.py fixes the plan and the seeds.

Every genepool run is serial (or, above 16 members, in synchronous generations with two
workers, which gives the same run), so a stored result reproduces exactly; at most two
runs at a time (``--jobs``), each in its own process. A run's result is one JSON file under
``benchmarks/results/race/`` (format 1: task, method, seed, size, best_score, mode, ...); a
run whose file exists is skipped, so the study resumes where it stopped. The estimate of
the whole study's compute is printed before anything runs. Then ``docs/results.md`` and its
figures are written from the stored files alone (benchmarks/race_write.py).

Run: python benchmarks/paper.py [--estimate] [--jobs 2] [--groups main,ray,...]
[--tasks ...] [--limit-s SECONDS] [--write-only] [--quick]
``--quick`` runs every task once with random search, PBT and PB2 at its smoke size into a
temporary directory and writes the document there (for CI: the pipeline works; its
numbers mean nothing; Ray Tune is left out, its start-up alone takes half a minute). The
last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "examples"))  # worker processes inherit it
sys.path.insert(0, str(HERE))

import race_plan  # noqa: E402
import race_toys  # noqa: E402

import genepool as gp  # noqa: E402
from genepool.version import __version__  # noqa: E402

RESULTS = HERE / "results" / "race"
RESULT_FORMAT = 1
#: At most this many points per curve in a result file (the figures need no more).
CURVE_POINTS = 400
#: A run is stopped after this long (the plan keeps each under 5 minutes on this machine).
KILL_AFTER_S = 900


def task_module(task: str) -> Any:
    """The module (or the toy) that runs ``task``: ``TASK``, ``METRIC``, ``MODE``, ``SIZES``
    and ``run(method=, seed=, size=, workers=, storage=, population=)``."""
    if task in race_toys.TOYS:
        return race_toys.TOYS[task]
    return importlib.import_module(task)


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


def run_one(
    task: str, method: str, seed: int, *, size: str, population: int, workers: int = 1
) -> dict[str, Any]:
    """Run ``task`` with ``method``, ``seed`` and ``population``; its record, as JSON data."""
    module = task_module(task)
    common = {
        "format": RESULT_FORMAT,
        "task": task,
        "method": method,
        "seed": seed,
        "size": size,
        "population": population,
        "metric": module.METRIC,
        "mode": module.MODE,
        "genepool": __version__,
        "python": sys.version.split()[0],
    }
    if method.startswith("tune_"):
        import race_tune

        record = race_tune.run(task, method, seed=seed, size=size, population=population)
        return {**common, "framework": "ray-tune", "workers": None, **record}
    with tempfile.TemporaryDirectory(prefix=f"gp-race-{task}-") as tmp:
        t0 = time.perf_counter()
        result = module.run(
            method=method,
            seed=seed,
            size=size,
            workers=workers,
            storage=f"sqlite:///{tmp}/run.db",
            population=population,
        )
        wall = time.perf_counter() - t0
        best = result.best
        members = result.members
        return {
            **common,
            "framework": "genepool",
            "workers": workers,
            "settings": {**module.SIZES[size], "population": population},
            "budget_steps": max(m.step for m in members),
            "wall_s": round(wall, 2),
            "best_score": best.score,
            "best_member": best.id,
            "final_scores": [
                m.score for m in members if m.score is not None and math.isfinite(m.score)
            ],
            "exploits": sum(1 for e in result.events if e.kind == "exploit"),
            "explores": sum(1 for e in result.events if e.kind == "explore"),
            "population_curve": _thin(population_curve(result, module.MODE)),
            "best_line": _thin([(s, v) for s, v, _ in result.ancestry_scores()]),
            "schedule": result.schedule().to_dict(),
        }


def write_record(record: dict[str, Any], path: Path) -> None:
    """Store ``record`` at ``path`` (whole or not at all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


# -- the queue ------------------------------------------------------------------------------
def readies(size: str) -> dict[str, int]:
    """Ready rounds per member, per task, at ``size`` (for the estimate)."""
    out = {}
    for task in race_plan.TASKS:
        s = task_module(task).SIZES[size]
        out[task] = max(1, (s["steps"] - s.get("burn_in", 0)) // s["ready"])
    return out


def run_queue(
    runs: Sequence[race_plan.Run],
    *,
    results: Path,
    size: str,
    jobs: int,
    limit_s: float | None = None,
    log: Any = print,
) -> list[Path]:
    """Run every run of ``runs`` whose file is missing, each in its own process, at most
    ``jobs`` cores at a time; stop starting new ones after ``limit_s``. Returns the files."""
    todo = race_plan.pending(runs, results)
    started = time.monotonic()
    running: list[tuple[race_plan.Run, subprocess.Popen[bytes], float]] = []
    made: list[Path] = []
    while todo or running:
        busy = sum(r.cores for r, _, _ in running)
        late = limit_s is not None and time.monotonic() - started > limit_s
        while todo and not late and busy + min(todo[0].cores, jobs) <= jobs:
            run = todo.pop(0)
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--one",
                f"{run.task},{run.method},{run.seed},{run.population},{run.workers}",
                "--size",
                size,
                "--out",
                str(run.file(results)),
            ]
            running.append((run, subprocess.Popen(cmd, cwd=ROOT), time.monotonic()))
            busy += run.cores
        if late and not running:
            break
        time.sleep(0.2)
        for entry in list(running):
            run, proc, t0 = entry
            if proc.poll() is None and time.monotonic() - t0 < KILL_AFTER_S:
                continue
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            running.remove(entry)
            path = run.file(results)
            if path.exists():
                made.append(path)
                record = json.loads(path.read_text())
                log(
                    f"{run.task} p{run.population} {run.method} seed {run.seed}: "
                    f"best {record['best_score']:.5g} in {record['wall_s']} s "
                    f"({len(todo)} left)"
                )
            else:
                log(f"{run.task} p{run.population} {run.method} seed {run.seed}: FAILED")
    return made


# -- the command line --------------------------------------------------------------------------
def _quick_runs() -> list[race_plan.Run]:
    """Each task once with random search, PBT and PB2, at its smoke size's population."""
    return [
        race_plan.Run("main", task, task_module(task).SIZES["smoke"]["population"], m, 0)
        for task in race_plan.TASKS
        for m in ("random", "pbt", "pb2")
    ]


def _write(results: Path, runs: Sequence[race_plan.Run], doc: Path, figures: Path) -> Any:
    import race_write

    notes_file = results / "NOTES.md"
    notes = notes_file.read_text(encoding="utf-8") if notes_file.exists() else None
    records = race_write.load_records(results)
    return race_write.write_doc(records, race_plan.cells(runs), doc, figures, notes=notes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="cores to use (runs at a time)")
    parser.add_argument("--groups", default=None, help="main,ray,ablation,population_size")
    parser.add_argument("--tasks", default=None, help=f"some of {','.join(race_plan.TASKS)}")
    parser.add_argument("--limit-s", type=float, default=None, help="start no run after this")
    parser.add_argument("--estimate", action="store_true", help="print the estimate only")
    parser.add_argument("--write-only", action="store_true", help="only write docs/results.md")
    parser.add_argument("--quick", action="store_true", help="smoke size, into a temp dir")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--size", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # one run, in the process the queue started for it
        task, method, seed, population, workers = args.one.split(",")
        record = run_one(
            task,
            method,
            int(seed),
            size=args.size,
            population=int(population),
            workers=int(workers),
        )
        write_record(record, Path(args.out))
        return 0
    return _quick(args) if args.quick else _study(args)


def _quick(args: argparse.Namespace) -> int:
    """Every task once at its smoke size, into a temporary directory: the pipeline works."""
    t0 = time.perf_counter()
    runs = _quick_runs()
    with tempfile.TemporaryDirectory(prefix="gp-race-quick-") as tmp:
        results = Path(tmp) / "results"
        made = run_queue(runs, results=results, size="smoke", jobs=args.jobs)
        _write(results, runs, Path(tmp) / "results.md", Path(tmp) / "fig")
    print(
        json.dumps(
            {
                "quick": True,
                "runs": len(made),
                "of": len(runs),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )
    return 0 if len(made) == len(runs) else 1


def _study(args: argparse.Namespace) -> int:
    """The study: the estimate, the runs still missing, then the document."""
    t0 = time.perf_counter()
    runs = race_plan.plan()
    if args.groups:
        runs = [r for r in runs if r.group in args.groups.split(",")]
    if args.tasks:
        runs = [r for r in runs if r.task in args.tasks.split(",")]
    todo = race_plan.pending(runs, RESULTS)
    estimate = race_plan.wall_estimate_s(todo, readies("full"), args.jobs)
    total = race_plan.wall_estimate_s(runs, readies("full"), args.jobs)
    print(
        f"the plan: {len(runs)} runs, {len(runs) - len(todo)} done; the {len(todo)} left "
        f"should take {estimate / 3600:.1f} h on {args.jobs} cores "
        f"(the whole plan: {total / 3600:.1f} h)",
        flush=True,
    )
    made: list[Path] = []
    if not args.estimate and not args.write_only:
        made = run_queue(runs, results=RESULTS, size="full", jobs=args.jobs, limit_s=args.limit_s)
    summary: Any = {}
    if not args.estimate:
        summary = _write(
            RESULTS, race_plan.plan(), ROOT / "docs" / "results.md", ROOT / "docs" / "results"
        )
    print(
        json.dumps(
            {
                "quick": False,
                "planned": len(runs),
                "done": len(runs) - len(race_plan.pending(runs, RESULTS)),
                "made": len(made),
                "estimate_left_s": estimate,
                "seconds": round(time.perf_counter() - t0, 1),
                "targets": summary.get("targets") if isinstance(summary, dict) else None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
