"""The framework's overhead as the population grows (issue 15, "Scale"): a part of
benchmarks/overhead.py (``--parts scale``), in its own file.

The paper's toy (examples/toy.py, the class API), 20 steps per member, ready every 4,
``Truncation(0.2)`` with ``Perturb()``, the serial executor, at population 100, 1,000 and
10,000 (``--quick``: 20, 100 and 200), on the in-memory store and on a new SQLite file
(checkpoints beside it, opening it timed). The bare loop runs the same algorithm by hand
(the same steps and scores, a copied state at every ready, truncation, perturb), ranking
the population once per round as one would write it. The overhead per member-step is
(genepool's wall time - the bare loop's) / (population x steps), like the other parts.

Target: the overhead at the largest population is at most 1.5 times the one at the
smallest, on each store (a framework whose cost per member-step does not grow with the
population). Populations up to :data:`REPEATED_UP_TO` members take the best of
``repeats`` runs; larger ones run once (a run of 10,000 members takes a while).
"""

from __future__ import annotations

import math
import tempfile
import time
from typing import Any

import numpy as np
from benchutil import CpuMeter
from toy import LR, SPACE, START, Toy

import genepool as gp
from genepool.store.sql import SQLStore

__all__ = ["part_scale"]

STEPS = 20
READY = 4
FRACTION = 0.2
FACTORS = (0.8, 1.2)
#: The overhead at the largest population over the one at the smallest, at most.
TARGET_RATIO = 1.5
#: Populations above this many members run once, whatever ``repeats`` says.
REPEATED_UP_TO = 1_000
STORES = ("memory", "sqlite")


def scale_settings(population: int, seed: int) -> dict[str, Any]:
    """The run settings of the part (the algorithm the bare loop writes by hand)."""
    return {
        "metric": "Q",
        "population": population,
        "ready": gp.Every(READY),
        "budget": gp.Budget(steps=STEPS),
        "exploit": gp.Truncation(FRACTION),
        "explore": gp.Perturb(FACTORS),
        "seed": seed,
    }


def run_genepool(population: int, seed: int, store: str) -> float:
    """Wall time of one serial run, on the in-memory store or a new SQLite file (its
    checkpoints beside it, as ``gp.run(storage="sqlite:///...")`` puts them)."""
    if store == "memory":
        start = time.perf_counter()
        gp.run(Toy, SPACE, **scale_settings(population, seed))
        return time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="genepool-bench-") as folder:
        start = time.perf_counter()
        sql = SQLStore(f"sqlite:///{folder}/pbt.db")
        try:
            gp.run(Toy, SPACE, **scale_settings(population, seed), storage=sql)
            return time.perf_counter() - start
        finally:
            sql.close()


def run_bare(population: int, seed: int) -> float:
    """Wall time of the same algorithm written by hand: each round trains every member
    ``READY`` steps, copies its state, then the bottom ``k`` copy a random one of the top
    ``k`` and perturb its hyperparameters (the population ranked once per round)."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    h = [np.array([rng.random(), rng.random()]) for _ in range(population)]
    theta = [np.array(START) for _ in range(population)]
    score = [-math.inf] * population
    ckpt: list[np.ndarray] = [t.copy() for t in theta]
    history: list[tuple[int, int, float]] = []
    k = max(1, min(population // 2, math.ceil(FRACTION * population)))
    for step0 in range(0, STEPS, READY):
        for m in range(population):
            for s in range(READY):
                theta[m] = theta[m] + LR * (-2.0 * h[m] * theta[m])
                q = 1.2 - float(theta[m][0] ** 2 + theta[m][1] ** 2)
                history.append((m, step0 + s + 1, q))
            score[m] = q
            ckpt[m] = theta[m].copy()
        if step0 + READY >= STEPS:
            break  # the budget is used: no decision after the last round
        order = sorted(range(population), key=lambda i: score[i])
        top = order[population - k :]
        for m in order[:k]:
            donor = top[int(rng.integers(k))]
            theta[m] = ckpt[donor].copy()
            factors = np.array([FACTORS[int(rng.integers(2))] for _ in range(2)])
            h[m] = np.clip(h[donor] * factors, 0.0, 1.0)
    return time.perf_counter() - start


def measure(population: int, store: str, repeats: int) -> dict[str, Any]:
    """Best-of-``repeats`` wall times (one run above :data:`REPEATED_UP_TO` members) and
    the overhead per member-step."""
    runs = repeats if population <= REPEATED_UP_TO else 1
    framework = min(run_genepool(population, seed, store) for seed in range(runs))
    bare = min(run_bare(population, seed) for seed in range(runs))
    member_steps = population * STEPS
    overhead_us = (framework - bare) / member_steps * 1e6
    return {
        "store": store,
        "population": population,
        "steps": STEPS,
        "runs": runs,
        "genepool_s": round(framework, 4),
        "bare_loop_s": round(bare, 4),
        "overhead_us_per_member_step": round(overhead_us, 2),
    }


def part_scale(quick: bool, repeats: int) -> dict[str, Any]:
    """The overhead per member-step at three populations, on both stores; judged on the
    ratio of the largest population's to the smallest's, on each store."""
    populations = [20, 100, 200] if quick else [100, 1_000, 10_000]
    rows: list[dict[str, Any]] = []
    ratios: dict[str, float] = {}
    with CpuMeter() as meter:
        for store in STORES:
            found = []
            for population in populations:
                row = measure(population, store, repeats)
                found.append(row)
                print(
                    f"scale, {store:6s} population {population:6d}: genepool "
                    f"{row['genepool_s']:.3f} s, bare {row['bare_loop_s']:.3f} s, overhead "
                    f"{row['overhead_us_per_member_step']:.1f} us/member-step"
                )
            smallest = found[0]["overhead_us_per_member_step"]
            largest = found[-1]["overhead_us_per_member_step"]
            ratios[store] = round(largest / smallest, 3) if smallest > 0 else math.inf
            rows.extend(found)
    return {
        "executor": "serial",
        "stores": "memory; sqlite (a new file in a temporary directory), checkpoints beside it",
        "steps_per_member": STEPS,
        "ready_every": READY,
        "exploit": f"Truncation({FRACTION})",
        "explore": f"Perturb({list(FACTORS)})",
        "populations": populations,
        "results": rows,
        "ratio_largest_to_smallest": ratios,
        "target_ratio": TARGET_RATIO,
        "judged_on": "the overhead at the largest population over the smallest's, each store",
        "meets_target": all(r <= TARGET_RATIO for r in ratios.values()),
        "machine": meter.load.as_dict(),
    }
