"""The race's plan (benchmarks/paper.py): which runs, with which seeds, and how long.

Fixed before the first result, and not to be widened after results are seen: the seeds per
cell (10 for the paper's experiments, 20 for the toys), the methods, the populations and
the sizes. A run's result is one file, ``<task>-p<population>-<method>-<seed>.json``, so a
run whose file exists is done, and the study resumes where it stopped.

Groups:

- ``main``: every task at populations 4 and 8 with random search, PBT, PB2 and PBT with
  the greediness controls (examples/_methods.py); PB2-Mix only where a task's space has
  unordered choices (none of the six has).
- ``ray``: Ray Tune's PBT and PB2 on the three toys at population 4.
- ``ablation``: the paper's exploit-only and explore-only on the GAN at population 8.
- ``population_size``: the GAN at populations 16 and 32 with random search and PBT (4 and
  8 are in ``main``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

PAPER_TASKS = ("rl", "translation", "gan")
TOY_TASKS = ("toy", "wave", "deceptive")
TASKS = TOY_TASKS + PAPER_TASKS
MAIN_METHODS = ("random", "pbt", "pb2", "pbt_calm")
TUNE_METHODS = ("tune_pbt", "tune_pb2")
POPULATIONS = (4, 8)
SEEDS = {"paper": tuple(range(10)), "toy": tuple(range(20))}
#: A population above this runs with two worker processes (synchronous generations keep
#: the run exactly what it would be serially), so it stays within 5 minutes.
SERIAL_UP_TO = 16

#: Seconds one serial run takes on this machine (2 cores) at population 8, measured with
#: PBT at the start of the study, while the machine was also busy with other work; PB2 adds
#: ``PB2_S`` per decision. A run's estimate scales with its population; a Ray Tune run
#: costs ``TUNE_S`` (its start-up, and a report per step through Ray), measured in the
#: study's first Ray runs.
SECONDS_AT_8 = {
    "toy": 0.5,
    "wave": 0.5,
    "deceptive": 0.5,
    "rl": 230.0,
    "translation": 270.0,
    "gan": 107.0,
}
PB2_S = 0.025
TUNE_S = 60.0


@dataclass(frozen=True)
class Run:
    """One planned run."""

    group: str
    task: str
    population: int
    method: str
    seed: int

    @property
    def workers(self) -> int:
        """Worker processes: 1 (serial), or 2 above :data:`SERIAL_UP_TO` members."""
        return 1 if self.population <= SERIAL_UP_TO else 2

    @property
    def cores(self) -> int:
        """Cores it takes: its workers; a Ray Tune run the whole machine (its cluster has
        2 CPUs, and two Ray clusters started at once on one machine find each other)."""
        return 2 if self.framework == "ray-tune" else self.workers

    @property
    def framework(self) -> str:
        return "ray-tune" if self.method.startswith("tune_") else "genepool"

    def file(self, results: Path) -> Path:
        """Where its result is stored."""
        return results / f"{self.task}-p{self.population}-{self.method}-{self.seed}.json"

    def estimate_s(self, readies: int) -> float:
        """Seconds it should take (on its ``cores``)."""
        if self.framework == "ray-tune":
            return TUNE_S
        seconds = SECONDS_AT_8[self.task] * self.population / 8 / self.workers
        if self.method.startswith("pb2"):
            seconds += PB2_S * readies * self.population / self.workers
        return seconds


def _runs(
    group: str, tasks: Iterable[str], pops: Iterable[int], methods: Sequence[str]
) -> list[Run]:
    out = []
    for task in tasks:
        seeds = SEEDS["paper" if task in PAPER_TASKS else "toy"]
        for population in pops:
            for seed in seeds:
                out += [Run(group, task, population, m, seed) for m in methods]
    return out


def plan() -> list[Run]:
    """Every run of the study, in the order they run: the toys first (seconds), then Ray
    Tune on the toys, the paper's experiments seed by seed (so that the pairs fill up
    evenly), then the GAN's analyses."""
    toys = _runs("main", TOY_TASKS, POPULATIONS, MAIN_METHODS)
    ray = _runs("ray", TOY_TASKS, (4,), TUNE_METHODS)
    paper = sorted(
        _runs("main", PAPER_TASKS, POPULATIONS, MAIN_METHODS),
        key=lambda r: (r.seed, PAPER_TASKS.index(r.task), r.population),
    )
    ablation = _runs("ablation", ("gan",), (8,), ("exploit_only", "explore_only"))
    sizes = _runs("population_size", ("gan",), (16, 32), ("random", "pbt"))
    return toys + ray + paper + ablation + sizes


def cells(runs: Iterable[Run]) -> list[dict[str, object]]:
    """The plan as cells (task, population, method, group, seeds), for the write-up."""
    grouped: dict[tuple[str, str, int, str], list[int]] = {}
    for r in runs:
        grouped.setdefault((r.group, r.task, r.population, r.method), []).append(r.seed)
    return [
        {"group": g, "task": t, "population": p, "method": m, "seeds": sorted(seeds)}
        for (g, t, p, m), seeds in grouped.items()
    ]


def pending(runs: Iterable[Run], results: Path) -> list[Run]:
    """The runs whose result file is missing."""
    return [r for r in runs if not r.file(results).exists()]


def wall_estimate_s(runs: Sequence[Run], readies: dict[str, int], slots: int) -> float:
    """The wall time of ``runs`` with ``slots`` cores (a run takes ``cores`` of them)."""
    core_s = sum(r.estimate_s(readies[r.task]) * r.cores for r in runs)
    return math.ceil(core_s / slots)
