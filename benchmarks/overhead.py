"""The framework's overhead per member-step, against a bare hand-written PBT loop.

Workload: the paper's toy (examples/toy.py) at population 8, 32 and 128, 200 steps, ready
every 4 steps, truncation selection with Gaussian-noise explore, serial executor with the
in-memory store. The bare loop runs the same algorithm (same steps, same scores recorded,
a copied state at every ready, truncation, noise) in plain Python and NumPy. The overhead
per member-step is (genepool's wall time - the bare loop's) / (population x steps).

Target (issue 2): at most 100 microseconds per member-step.

Run: python benchmarks/overhead.py [--quick] [--repeats 3]
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from toy import LR, SPACE, START, Toy

import genepool as gp

READY = 4
TARGET_US = 100.0


def run_genepool(population: int, steps: int, seed: int, api: str) -> float:
    """Wall time of one genepool run."""
    trainable: Any = Toy if api == "class" else toy_function
    start = time.perf_counter()
    gp.run(
        trainable,
        SPACE,
        metric="Q",
        population=population,
        ready=gp.Every(READY),
        budget=gp.Budget(steps=steps),
        exploit=gp.Truncation(0.2),
        explore=gp.GaussianNoise(0.1),
        seed=seed,
    )
    return time.perf_counter() - start


def toy_function(member: gp.Member) -> None:
    """The toy through the function API."""
    state = member.restore()
    theta = np.array(START) if state is None else np.array(state["theta"])
    h = np.array([member.hparams["h0"], member.hparams["h1"]])
    while member.running:
        theta = theta + LR * (-2.0 * h * theta)
        q = 1.2 - float(theta[0] ** 2 + theta[1] ** 2)
        member.report(Q=q, state=functools.partial(_toy_state, theta))


def _toy_state(theta: np.ndarray) -> dict[str, np.ndarray]:
    return {"theta": theta.copy()}


def run_bare(population: int, steps: int, seed: int) -> float:
    """Wall time of the same algorithm written by hand, with no framework."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    h = [np.array([rng.random(), rng.random()]) for _ in range(population)]
    theta = [np.array(START) for _ in range(population)]
    score = [-math.inf] * population
    ckpt: list[np.ndarray] = [t.copy() for t in theta]
    ckpt_h = [x.copy() for x in h]
    history: list[tuple[int, int, float]] = []
    k = max(1, min(population // 2, math.ceil(0.2 * population)))
    for step0 in range(0, steps, READY):
        for m in range(population):
            for s in range(READY):
                theta[m] = theta[m] + LR * (-2.0 * h[m] * theta[m])
                q = 1.2 - float(theta[m][0] ** 2 + theta[m][1] ** 2)
                history.append((m, step0 + s + 1, q))
            score[m] = q
            ckpt[m] = theta[m].copy()
            ckpt_h[m] = h[m].copy()
            order = sorted(range(population), key=lambda i: (score[i], rng.random()))
            if m in order[:k]:
                donor = order[population - k + int(rng.integers(k))]
                theta[m] = ckpt[donor].copy()
                h[m] = np.clip(ckpt_h[donor] + 0.1 * rng.standard_normal(2), 0.0, 1.0)
    return time.perf_counter() - start


def measure(population: int, steps: int, repeats: int, api: str) -> dict[str, Any]:
    """Best-of-``repeats`` wall times and the overhead per member-step."""
    framework = min(run_genepool(population, steps, seed, api) for seed in range(repeats))
    bare = min(run_bare(population, steps, seed) for seed in range(repeats))
    member_steps = population * steps
    overhead_us = (framework - bare) / member_steps * 1e6
    return {
        "api": api,
        "population": population,
        "steps": steps,
        "genepool_s": round(framework, 4),
        "bare_loop_s": round(bare, 4),
        "overhead_us_per_member_step": round(overhead_us, 2),
        "target_us": TARGET_US,
        "meets_target": overhead_us <= TARGET_US,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="genepool's overhead per member-step")
    parser.add_argument("--quick", action="store_true", help="a smoke-sized run for CI")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    populations = [8, 32] if args.quick else [8, 32, 128]
    steps = 40 if args.quick else 200
    repeats = 1 if args.quick else args.repeats
    rows = []
    for api in ("class", "function"):
        for population in populations:
            row = measure(population, steps, repeats, api)
            rows.append(row)
            print(
                f"{api:8s} population {population:4d}: genepool {row['genepool_s']:.3f} s, "
                f"bare {row['bare_loop_s']:.3f} s, overhead "
                f"{row['overhead_us_per_member_step']:.1f} us/member-step"
            )
    class_rows = [r for r in rows if r["api"] == "class"]
    summary = {
        "benchmark": "overhead",
        "quick": args.quick,
        "executor": "serial",
        "store": "memory",
        "ready_every": READY,
        "results": rows,
        "max_overhead_us_class_api": max(r["overhead_us_per_member_step"] for r in class_rows),
        "target_us": TARGET_US,
        "meets_target": all(r["meets_target"] for r in class_rows),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
