"""How much memory opening a large run takes (issue 13, item 5).

A synthetic run of 64 members with 10,000 reports each (640,000 reports, two metrics
each, ready every 1,000 steps: one write per member and round, 1,000 reports at a time)
is written through the store API (``create_run``, ``claim``, ``commit``) into a SQLite
file in a temporary directory. Building it is not measured.

Measured, in a fresh Python process that has imported genepool: the growth of its peak
resident memory (``VmHWM``, reset just before; ``ru_maxrss`` where it cannot be) over
``gp.Result.open(url)`` and reading ``result.best`` and ``result.population``, which is
what a user who only wants the best member does. It includes what opening imports
(SQLAlchemy). Target: under 100 MB (a Result that read the whole history when opened
took about 300 MB for this run).

Run: python benchmarks/open_memory.py [--quick] [--members 64] [--steps 10000]
[--ready 1000]. ``--quick`` is a smoke size for CI (8 members x 400 steps); its
``meets_target`` is about the smoke size, not the target's. The last line printed is
one JSON object with the figure and the target.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

import genepool as gp
from genepool.member import CheckpointRef, MemberView, Report
from genepool.store import WorkerInfo
from genepool.store.sql import SQLStore

TARGET_MB = 100.0
SPACE = gp.Space(lr=gp.Float(1e-4, 1e-1, log=True), momentum=gp.Float(0.5, 0.99))

#: Run in the fresh process: argv[1] is the URL; prints the growth in bytes and the
#: best member's step.
MEASURE = r"""
import json, os, resource, sys

import genepool as gp


def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


try:  # start the peak afresh, at what is resident now (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    method = "VmHWM"
except OSError:
    method = "ru_maxrss"
before = resident()
result = gp.Result.open(sys.argv[1])
best = result.best
members = len(result.population)
grown = peak() - before
getattr(result, "close", lambda: None)()  # (a genepool from before Result.close, compared)
print(json.dumps({"bytes": grown, "method": method, "step": best.step, "members": members}))
"""


def build(url: str, members: int, steps: int, ready: int, seed: int = 0) -> int:
    """Write a run named ``"run"`` of ``members`` x ``steps`` reports; their number."""
    rng = np.random.default_rng(seed)
    store = SQLStore(url)
    hparams = [SPACE.sample(rng) for _ in range(members)]
    config = {"mode": "max", "metric": "score", "seed": seed, "population": members}
    store.create_run(
        "run", config=config, members=[MemberView(id=i, hparams=h) for i, h in enumerate(hparams)]
    )
    worker = WorkerInfo("bench")
    written = 0
    for r in range(steps // ready):
        for _ in range(members):
            lease = store.claim("run", worker, lease_seconds=600.0)
            assert lease is not None
            i = lease.member
            base = r * ready
            scores = (base + np.arange(1, ready + 1)) / steps + rng.normal(0, 0.01, ready)
            reports = [
                Report(i, base + k + 1, {"score": float(s), "loss": float(1 - s)}, base + k + 1.0)
                for k, s in enumerate(scores)
            ]
            step, score = base + ready, float(scores[-1])
            view = dataclasses.replace(
                store.population("run")[i],
                step=step,
                score=score,
                ready_count=r + 1,
                checkpoint=CheckpointRef(f"m{i}-s{step}", i, step, float(step), score, hparams[i]),
            )
            store.commit(lease, member=view, reports=reports, release=True)
            written += len(reports)
    store.close()
    return written


def measure(url: str) -> dict[str, object]:
    """Open the run in a fresh process; what it measured."""
    done = subprocess.run([sys.executable, "-c", MEASURE, url], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"measuring failed:\n{done.stderr}")
    found: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description="the memory opening a large run takes")
    parser.add_argument("--quick", action="store_true", help="a smoke-sized run for CI")
    parser.add_argument("--members", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--ready", type=int, default=None, help="steps between writes")
    args = parser.parse_args()
    members = args.members or (8 if args.quick else 64)
    steps = args.steps or (400 if args.quick else 10_000)
    ready = args.ready or (100 if args.quick else 1_000)
    folder = tempfile.mkdtemp(prefix="genepool-open-memory-")
    try:
        url = f"sqlite:///{folder}/pbt.db"
        t0 = time.perf_counter()
        reports = build(url, members, steps, ready)
        built = time.perf_counter() - t0
        database_mb = os.path.getsize(f"{folder}/pbt.db") / 1e6
        print(
            f"built {members} members x {steps} steps: {reports:,} reports, "
            f"{database_mb:.0f} MB of database, in {built:.1f} s (not measured)"
        )
        found = measure(url)
        grown_mb = float(found["bytes"]) / 2**20  # type: ignore[arg-type]
        print(
            f"Result.open + best + population: peak resident memory grew {grown_mb:.1f} MB "
            f"({found['method']}; target under {TARGET_MB:.0f} MB)"
        )
        if (found["step"], found["members"]) != (steps, members):
            sys.exit(f"the run read back is not the one built: {found}")
        summary = {
            "benchmark": "open_memory",
            "quick": args.quick,
            "members": members,
            "steps": steps,
            "reports": reports,
            "database_mb": round(database_mb, 1),
            "peak_rss_growth_mb": round(grown_mb, 1),
            "method": found["method"],
            "target_mb": TARGET_MB,
            "meets_target": grown_mb < TARGET_MB,
            "build_s": round(built, 1),
            "python": platform.python_version(),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
