"""Asynchronous PBT on the paper's toy: comparing members at the same point of training.

Asynchronously a member that decides is a round ahead of some members and behind others;
on a task whose score rises with training, comparing it with their latest scores makes
whoever trained furthest look best. ``gp.run(aligned=None)`` (the default) compares each
pair at the latest ready both have reached in an asynchronous run. This script runs the
toy (examples/toy.py: Q rises towards 1.2) with PBT in worker processes, synchronously
and asynchronously with and without the aligned comparison, and prints, per population
size, the mean and the worst best Q over the seeds, and the share of decisions that
exploited (Truncation's fraction is 0.2). The seeds and settings are fixed here, before
any result was seen.

    python benchmarks/aligned.py            # populations 2, 8 and 32, 5 seeds, 2 workers
    python benchmarks/aligned.py --quick    # population 2, 2 seeds

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import genepool as gp

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "synchronous": {"synchronous": True},
    "asynchronous_aligned": {"synchronous": False},  # the default: aligned for async
    "asynchronous_latest": {"synchronous": False, "aligned": False},
}


def _toy() -> Any:
    spec = importlib.util.spec_from_file_location("genepool_example_toy", ROOT / "examples/toy.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one(toy: Any, population: int, seed: int, workers: int, options: dict[str, Any]) -> Any:
    with tempfile.TemporaryDirectory(prefix="genepool-aligned-") as tmp:
        result = gp.run(
            toy.Toy,
            toy.SPACE,
            metric="Q",
            population=population,
            initial=(toy.INITIAL * population)[:population],
            ready=gp.Every(4),
            budget=gp.Budget(steps=toy.STEPS),
            exploit=gp.Truncation(),
            explore=gp.GaussianNoise(0.1),
            seed=seed,
            storage=f"sqlite:///{tmp}/pbt.db",
            workers=workers,
            **options,
        )
        with result:
            exploits = sum(e.kind == "exploit" for e in result.events)
            decisions = sum(1 for r in result.reports if r.step % 4 == 0 and r.step < toy.STEPS)
            best = result.best.score
            assert best is not None
            return float(best), exploits / max(decisions, 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smoke size CI runs")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    populations, seeds = ([2], range(2)) if args.quick else ([2, 8, 32], range(5))
    toy = _toy()
    out: dict[str, Any] = {"benchmark": "aligned", "quick": args.quick, "workers": args.workers}
    started = time.monotonic()
    for population in populations:
        row: dict[str, Any] = {}
        for name, options in VARIANTS.items():
            runs = [one(toy, population, seed, args.workers, options) for seed in seeds]
            qs = [q for q, _ in runs]
            row[name] = {
                "mean_best_Q": round(statistics.fmean(qs), 4),
                "min_best_Q": round(min(qs), 4),
                "exploit_share": round(statistics.fmean(s for _, s in runs), 3),
                "per_seed_best_Q": [round(q, 4) for q in qs],
            }
            print(json.dumps({"population": population, name: row[name]}), flush=True)
        out[f"population_{population}"] = row
    out["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
