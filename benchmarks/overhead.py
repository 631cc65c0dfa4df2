"""The framework's overhead, against bare hand-written loops and raw step work.

Five parts; the last line printed is one JSON object with every figure, each part's
``meets_target`` and the targets.

**Serial, in-memory** (issue 2). The paper's toy (examples/toy.py) at population 8, 32 and
128, 200 steps, ready every 4 steps, truncation selection with Gaussian-noise explore,
serial executor with the in-memory store. The bare loop runs the same algorithm (same
steps, same scores recorded, a copied state at every ready, truncation, noise) in plain
Python and NumPy. The overhead per member-step is (genepool's wall time - the bare loop's) /
(population x steps), best of ``--repeats`` each. Target: at most 100 microseconds per
member-step (judged on the class API; the function API is printed beside it).

**Serial, SQLite** (issue 3 a). The same toy and bare loop, with the store a new SQLite file
in a temporary directory (opening it is timed; importing SQLAlchemy, once per process, is
not), and the checkpoints either in a directory beside the database (``LocalCheckpoints``,
what ``gp.run(storage="sqlite:///...")`` uses by default) or in memory. Both are printed;
the target, at most 200 microseconds per member-step, is judged on the default,
checkpoints beside the database, at every population.

**Worker processes** (issue 3 b). A step that busy-works 10 ms (a spin on
``time.perf_counter``, benchmarks/busywork.py), 500 steps per member, ready every 5,
truncation and perturb, population 8 and 32, ``gp.run(..., workers=2)`` on a new SQLite
file (checkpoints beside it). The wall time is the whole ``gp.run`` call, start-up of the
worker processes included; the best of ``--process-repeats`` runs is judged. Efficiency =
(steps run x 10 ms / 2 workers) / wall time, where the steps run are the reports in the
run's history (an exploit can make a member train a step again, or skip some). Targets: at
least 0.95 at population 8 and 0.90 at 32.

**Reports per second** (issue 3 c). Two processes, each holding one member's lease, commit
reports into one database through ``Store.commit(lease, reports=...)``: one report per
commit, and 100 per commit. Targets, on SQLite: at least 1,000 reports/s unbatched and
10,000/s batched. The same figures for PostgreSQL (127.0.0.1:5432, database ``test``, a
schema made for the run and dropped after it; ``GENEPOOL_BENCH_POSTGRES_URL`` to change)
are printed beside them, for information; skipped with a note when the server is missing.

**Population scale** (issue 15). The toy at 20 steps per member, ready every 4,
``Truncation(0.2)`` and ``Perturb()``, serial, on the in-memory store and on a new SQLite
file: the overhead per member-step (as above) at population 100, 1,000 and 10,000. Target:
at 10,000 at most 1.5 times the figure at 100, on each store. Its code is
benchmarks/scale.py; it takes several minutes, the longest part by far.

Every part also records how much CPU other processes on the machine used while it ran
(``other_processes_cpu_s``): on a small shared machine that is what disturbs timings most.

With ``--loggers off,mlflow,wandb`` (issue 22) the processes part also runs with each
logger on (with its defaults), beside it off, in the same run: see
benchmarks/processes.py. Target: each logger's efficiency at most 0.01 below off's.

Run: python benchmarks/overhead.py [--quick] [--repeats 3] [--process-repeats 2]
[--parts memory,sqlite,processes,reports,scale] [--loggers off,mlflow,wandb]
``--quick`` runs every part at a smoke size (for CI, which reads only that it exits 0 and
prints the JSON line; its ``meets_target`` values are about the smoke sizes, not the
targets' sizes). The full run takes a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# benchmarks/ first: worker processes inherit this sys.path and import the trainable by name
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import processes
import report_rate
import scale
from benchutil import CpuMeter
from toy import LR, SPACE, START, Toy

import genepool as gp
from genepool.store.sql import SQLStore

READY = 4
TARGET_US = 100.0

SQLITE_TARGET_US = 200.0

REPORT_BATCH = 100
UNBATCHED_TARGET = 1_000.0
BATCHED_TARGET = 10_000.0

PARTS = ("memory", "sqlite", "processes", "reports", "scale")
#: A part is flagged as disturbed when other processes used more than this share of the CPUs.
DISTURBED = 0.05


def toy_settings(population: int, steps: int, seed: int) -> dict[str, Any]:
    """The run settings every toy part uses (the algorithm the bare loop writes by hand)."""
    return {
        "metric": "Q",
        "population": population,
        "ready": gp.Every(READY),
        "budget": gp.Budget(steps=steps),
        "exploit": gp.Truncation(0.2),
        "explore": gp.GaussianNoise(0.1),
        "seed": seed,
    }


def run_genepool(population: int, steps: int, seed: int, api: str) -> float:
    """Wall time of one genepool run."""
    trainable: Any = Toy if api == "class" else toy_function
    start = time.perf_counter()
    gp.run(trainable, SPACE, **toy_settings(population, steps, seed))
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


def part_memory(quick: bool, repeats: int) -> dict[str, Any]:
    """Serial, in-memory store (issue 2): both APIs, judged on the class API."""
    populations = [8, 32] if quick else [8, 32, 128]
    steps = 40 if quick else 200
    rows = []
    with CpuMeter() as meter:
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
    return {
        "executor": "serial",
        "store": "memory",
        "ready_every": READY,
        "results": rows,
        "max_overhead_us_class_api": max(r["overhead_us_per_member_step"] for r in class_rows),
        "target_us": TARGET_US,
        "judged_on": "the class API, every population",
        "meets_target": all(r["meets_target"] for r in class_rows),
        "machine": meter.load.as_dict(),
    }


# -- (a) serial, SQLite ------------------------------------------------------------------


def run_genepool_sqlite(population: int, steps: int, seed: int, checkpoints: str) -> float:
    """Wall time of one serial run on a new SQLite file, checkpoints ``"local"`` (beside
    the database, the default) or ``"memory"``. Opening the store is timed."""
    with tempfile.TemporaryDirectory(prefix="genepool-bench-") as folder:
        url = f"sqlite:///{folder}/pbt.db"
        start = time.perf_counter()
        store = SQLStore(url)
        try:
            gp.run(
                Toy,
                SPACE,
                **toy_settings(population, steps, seed),
                storage=store,
                # None: LocalCheckpoints in <database>.checkpoints, as gp.run does by default
                checkpoints=gp.MemoryCheckpoints() if checkpoints == "memory" else None,
            )
            return time.perf_counter() - start
        finally:
            store.close()


def measure_sqlite(population: int, steps: int, repeats: int) -> list[dict[str, Any]]:
    """Best-of-``repeats`` wall times on SQLite, for both kinds of checkpoints."""
    times: dict[str, list[float]] = {"local": [], "memory": []}
    for seed in range(repeats):
        for kind, found in times.items():
            found.append(run_genepool_sqlite(population, steps, seed, kind))
    bare = min(run_bare(population, steps, seed) for seed in range(repeats))
    member_steps = population * steps
    rows = []
    for kind, found in times.items():
        framework = min(found)
        overhead_us = (framework - bare) / member_steps * 1e6
        rows.append(
            {
                "api": "class",
                "population": population,
                "steps": steps,
                "checkpoints": kind,
                "genepool_s": round(framework, 4),
                "bare_loop_s": round(bare, 4),
                "overhead_us_per_member_step": round(overhead_us, 2),
                "target_us": SQLITE_TARGET_US,
                "meets_target": overhead_us <= SQLITE_TARGET_US,
            }
        )
    return rows


def part_sqlite(quick: bool, repeats: int) -> dict[str, Any]:
    """(a) Serial on a SQLite file, judged on checkpoints beside the database."""
    populations = [8, 32] if quick else [8, 32, 128]
    steps = 40 if quick else 200
    rows = []
    with CpuMeter() as meter:
        for population in populations:
            for row in measure_sqlite(population, steps, repeats):
                rows.append(row)
                print(
                    f"sqlite, {row['checkpoints']:6s} checkpoints, population {population:4d}: "
                    f"genepool {row['genepool_s']:.3f} s, bare {row['bare_loop_s']:.3f} s, "
                    f"overhead {row['overhead_us_per_member_step']:.1f} us/member-step"
                )
    local = [r for r in rows if r["checkpoints"] == "local"]
    memory = [r for r in rows if r["checkpoints"] == "memory"]
    return {
        "executor": "serial",
        "store": "sqlite (a new file in a temporary directory)",
        "ready_every": READY,
        "results": rows,
        "max_overhead_us_local_checkpoints": max(r["overhead_us_per_member_step"] for r in local),
        "max_overhead_us_memory_checkpoints": max(r["overhead_us_per_member_step"] for r in memory),
        "target_us": SQLITE_TARGET_US,
        "judged_on": "LocalCheckpoints beside the database (the default), every population",
        "meets_target": all(r["meets_target"] for r in local),
        "meets_target_memory_checkpoints": all(r["meets_target"] for r in memory),
        "machine": meter.load.as_dict(),
    }


# -- (c) reports per second --------------------------------------------------------------


def part_reports(quick: bool) -> dict[str, Any]:
    """(c) Reports per second from two processes, unbatched and batched."""
    unbatched, batched = (200, 2_000) if quick else (3_000, 30_000)
    sizes = ((1, unbatched), (REPORT_BATCH, batched))
    rows: list[dict[str, Any]] = []
    note = None
    with CpuMeter() as meter:
        for batch, count in sizes:
            with report_rate.sqlite_url() as url:
                rows.append(report_rate.measure(url, "sqlite", count, batch).as_dict())
        try:
            with report_rate.postgres_schema() as url:
                for batch, count in sizes:
                    rows.append(report_rate.measure(url, "postgresql", count, batch).as_dict())
        except ConnectionError as err:
            note = f"PostgreSQL skipped: {err}"
    for row in rows:
        print(
            f"reports, {row['backend']:10s} {row['batch']:3d} per commit: "
            f"{row['reports_per_s']:9.0f} reports/s ({row['reports']} reports from "
            f"{row['writers']} processes in {row['seconds']:.2f} s)"
        )
    if note:
        print(note)

    def rate(backend: str, batch: int) -> float | None:
        found = [
            r["reports_per_s"] for r in rows if r["backend"] == backend and r["batch"] == batch
        ]
        return found[0] if found else None

    sqlite_unbatched = rate("sqlite", 1) or 0.0
    sqlite_batched = rate("sqlite", REPORT_BATCH) or 0.0
    return {
        "writers": report_rate.WRITERS,
        "batch": REPORT_BATCH,
        "results": rows,
        "sqlite_unbatched_per_s": sqlite_unbatched,
        "sqlite_batched_per_s": sqlite_batched,
        "postgresql_unbatched_per_s": rate("postgresql", 1),
        "postgresql_batched_per_s": rate("postgresql", REPORT_BATCH),
        "postgresql_note": note,
        "target_unbatched_per_s": UNBATCHED_TARGET,
        "target_batched_per_s": BATCHED_TARGET,
        "judged_on": "SQLite (PostgreSQL is printed for information)",
        "meets_target": sqlite_unbatched >= UNBATCHED_TARGET and sqlite_batched >= BATCHED_TARGET,
        "machine": meter.load.as_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="genepool's overhead")
    parser.add_argument("--quick", action="store_true", help="a smoke-sized run for CI")
    parser.add_argument("--repeats", type=int, default=3, help="best of how many (serial)")
    parser.add_argument(
        "--process-repeats", type=int, default=2, help="best of how many (worker processes)"
    )
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"which parts, comma-separated: {PARTS}"
    )
    parser.add_argument(
        "--loggers",
        default="off",
        help=f"the processes part with each of these loggers, comma-separated, off first: "
        f"{processes.LOGGERS}",
    )
    args = parser.parse_args()
    loggers = [k.strip() for k in args.loggers.split(",") if k.strip()]
    kinds = {k.partition(":")[0] for k in loggers}
    if not loggers or loggers[0] != "off" or kinds - set(processes.LOGGERS):
        parser.error(
            f"--loggers: off first, then any of {processes.LOGGERS} (KIND:N: every=N; "
            "KIND:all: every point)"
        )
    chosen = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {PARTS}")
    if args.repeats < 1 or args.process_repeats < 1:
        parser.error("--repeats and --process-repeats must be at least 1")
    repeats = 1 if args.quick else args.repeats
    process_repeats = 1 if args.quick else args.process_repeats
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "memory": lambda: part_memory(args.quick, repeats),
        "sqlite": lambda: part_sqlite(args.quick, repeats),
        "processes": lambda: processes.part_processes(args.quick, process_repeats, loggers),
        "reports": lambda: part_reports(args.quick),
        "scale": lambda: scale.part_scale(args.quick, repeats),
    }
    parts: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for name in PARTS:
        if name in chosen:
            parts[name] = part = runners[name]()
            load = part["machine"]
            other = load["other_processes_cpu_s"]
            if other is not None and other > DISTURBED * load["cpu_capacity_s"]:
                print(
                    f"note: other processes used {other:.1f} s of the {load['cpu_capacity_s']:.1f}"
                    f" CPU-seconds the machine had while part {name!r} ran: its timings are "
                    "disturbed"
                )
    targets = {
        "memory_us_per_member_step": TARGET_US,
        "sqlite_us_per_member_step": SQLITE_TARGET_US,
        "processes_efficiency": {str(p): t for p, t in processes.PROCESS_TARGETS.items()},
        "reports_per_s_unbatched": UNBATCHED_TARGET,
        "reports_per_s_batched": BATCHED_TARGET,
        "scale_ratio_largest_to_smallest": scale.TARGET_RATIO,
    }
    meets = {name: bool(part["meets_target"]) for name, part in parts.items()}
    for name, ok in meets.items():
        print(f"{name:10s} {'meets its target' if ok else 'MISSES its target'}")
    summary = {
        "benchmark": "overhead",
        "quick": args.quick,
        "repeats": repeats,
        "process_repeats": process_repeats,
        "parts": parts,
        "targets": targets,
        "meets_target": meets,
        "all_targets_met": all(meets.values()),
        "seconds": round(time.perf_counter() - started, 1),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
