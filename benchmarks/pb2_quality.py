"""PB2 against PBT at population 4: a quick quality check (issue 20; the full race is
issue 21's).

Two tasks of benchmarks/tune_workloads.py, each run serially (so a seed's result repeats
exactly), for seeds 0 to 9, with both methods on the same seed:

- the paper's toy (``Toy``: Q = 1.2 - |theta|^2, hyperparameters h0 and h1), ready every
  4 steps, 200 steps;
- Ray Tune's triangle-wave objective (``Wave``: accuracy grows fastest when ``lr`` follows
  a triangle wave in the accuracy), ready every 5 steps, 300 steps.

Methods: ``pbt`` is truncation selection with the paper's perturb (``gp.Perturb()``);
``pb2`` the same selection with ``gp.PB2()``. The figure per run is the best member's
final score; the comparison is the paired difference pb2 - pbt over seeds, its mean and
95% t-interval. Settings and seeds were fixed before the first result was seen; where
PB2 does not win, the output says so (``"pb2_better": false``).

Run: python benchmarks/pb2_quality.py [--quick] [--out results/pb2_quality.json]. The last
line printed is one JSON object holding every per-seed result.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tune_workloads as w
from scipy import stats

import genepool as gp

POPULATION = 4
SEEDS = 10
TASKS: dict[str, dict[str, Any]] = {
    "toy": {"trainable": w.Toy, "space": w.TOY_SPACE, "metric": "Q", "ready": 4, "steps": 200},
    "wave": {
        "trainable": w.Wave,
        "space": w.WAVE_SPACE,
        "metric": "mean_accuracy",
        "ready": 5,
        "steps": 300,
    },
}
METHODS = {"pbt": gp.Perturb, "pb2": gp.PB2}


def one(task: str, method: str, seed: int, steps: int) -> dict[str, Any]:
    """One serial run; its best member's final score and its time."""
    spec = TASKS[task]
    began = time.perf_counter()
    result = gp.run(
        spec["trainable"],
        spec["space"],
        metric=spec["metric"],
        population=POPULATION,
        ready=gp.Every(spec["ready"]),
        budget=gp.Budget(steps=steps),
        exploit=gp.Truncation(),
        explore=METHODS[method](),
        seed=seed,
        progress=False,
    )
    best = max(m.score for m in result.members if m.score is not None)
    return {
        "task": task,
        "method": method,
        "seed": seed,
        "best_score": best,
        "seconds": round(time.perf_counter() - began, 2),
    }


def paired(rows: list[dict[str, Any]], task: str) -> dict[str, Any]:
    """pb2 - pbt by seed: mean, 95% t-interval, wins."""
    by = {(r["method"], r["seed"]): r["best_score"] for r in rows if r["task"] == task}
    seeds = sorted({s for _, s in by})
    diffs = [by[("pb2", s)] - by[("pbt", s)] for s in seeds]
    mean = statistics.fmean(diffs)
    if len(diffs) > 1 and statistics.stdev(diffs) > 0:
        sem = statistics.stdev(diffs) / len(diffs) ** 0.5
        half = float(stats.t.ppf(0.975, len(diffs) - 1)) * sem
    else:
        half = float("nan")
    return {
        "pbt_mean": statistics.fmean(by[("pbt", s)] for s in seeds),
        "pb2_mean": statistics.fmean(by[("pb2", s)] for s in seeds),
        "diff_mean": mean,
        "diff_ci95": [mean - half, mean + half],
        "pb2_wins": sum(d > 0 for d in diffs),
        "seeds": len(diffs),
        "pb2_better": bool(mean - half > 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, short runs (CI)")
    parser.add_argument("--out", type=Path, help="also write the JSON object here")
    args = parser.parse_args()
    seeds = 2 if args.quick else SEEDS
    rows = []
    for task, spec in TASKS.items():
        steps = 40 if args.quick else spec["steps"]
        for seed in range(seeds):
            for method in METHODS:  # paired: both methods on a seed, one after the other
                row = one(task, method, seed, steps)
                print(f"{task} {method} seed {seed}: {row['best_score']:.4f} ({row['seconds']} s)")
                rows.append(row)
    summary = {
        "benchmark": "pb2_quality",
        "quick": args.quick,
        "population": POPULATION,
        "tasks": {
            t: {
                **{k: v for k, v in s.items() if k not in ("trainable", "space")},
                **({"steps": 40} if args.quick else {}),
            }
            for t, s in TASKS.items()
        },
        "methods": {"pbt": "Truncation() + Perturb()", "pb2": "Truncation() + PB2()"},
        "paired": {task: paired(rows, task) for task in TASKS},
        "runs": rows,
    }
    text = json.dumps(summary)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
