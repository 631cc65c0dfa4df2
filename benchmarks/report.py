"""How long a user waits for the HTML report of a large run (issue 4).

A synthetic run of 64 members with 10,000 reports each (ready every 100 steps, truncation
of the bottom quarter onto the top quarter with an explore of every hyperparameter, some
rounds explore-only) is written straight through the store API (``create_run``, ``claim``,
``commit(lease, member=, reports=, events=)``) into a SQLite file in a temporary directory,
as worker processes would write it. Building it is not timed.

Timed, as a user experiences it: ``Result.open("sqlite:///...")`` (reading the whole run
back) plus :func:`genepool.analysis.write_report` (the self-contained HTML file). Target:
under 10 seconds of wall time, best of ``--repeats``. Printed: each part's time, the CPU
time beside it (on a busy shared machine the wall time is mostly waiting), the file's
size, and one JSON object on the last line with ``meets_target``.

Run: python benchmarks/report.py [--quick] [--repeats 2] [--members 64] [--steps 10000]
[--ready 100] [--keep report.html]
``--quick`` is a smoke size for CI (8 members x 400 steps, ready every 20); its
``meets_target`` is about the smoke size, not the target's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchutil import CpuMeter

import genepool as gp
from genepool.analysis import write_report
from genepool.member import CheckpointRef, Event, MemberView, Report
from genepool.store import WorkerInfo
from genepool.store.sql import SQLStore

TARGET_S = 10.0
READY = 100
SPACE = gp.Space(
    lr=gp.Float(1e-4, 1e-1, log=True),
    momentum=gp.Float(0.5, 0.99),
    batch_size=gp.Choice([32, 64, 128, 256], ordered=True),
    optimizer=gp.Choice(["sgd", "adam"]),
)


def _gain(hp: dict[str, Any]) -> float:
    """How fast a member with these hyperparameters improves (best near lr 3e-3)."""
    lr = math.log10(hp["lr"])
    bonus = 1.1 if hp["optimizer"] == "adam" else 1.0
    momentum, batch = float(hp["momentum"]), int(hp["batch_size"])
    return float(bonus * math.exp(-((lr + 2.5) ** 2)) * (0.5 + momentum) / batch**0.1)


def build(url: str, members: int, steps: int, ready: int = READY, seed: int = 0) -> dict[str, int]:
    """Write a synthetic PBT run named ``"run"`` into the store at ``url``."""
    rng = np.random.default_rng(seed)
    store = SQLStore(url)
    initial = [SPACE.sample(rng) for _ in range(members)]
    config = {
        "mode": "max",
        "metric": "score",
        "space": repr(SPACE),
        "population": members,
        "initial": initial,
        "seed": seed,
        "ready": repr(gp.Every(ready)),
        "budget": repr(gp.Budget(steps=steps)),
    }
    store.create_run(
        "run", config=config, members=[MemberView(id=i, hparams=h) for i, h in enumerate(initial)]
    )
    worker = WorkerInfo("bench")
    hparams = [dict(h) for h in initial]
    quality = np.zeros(members)  # each member's weights, as one number
    at_ready = np.zeros(members)  # the quality at its last checkpoint
    n_reports = n_events = 0
    rounds = steps // ready
    quarter = max(1, members // 4)
    decisions: dict[int, Event] = {}  # decided at a ready, carried out at the next claim
    for r in range(rounds):
        base = r * ready
        # every member carries out its decision, trains a round, and commits it all at once
        for _ in range(members):
            lease = store.claim("run", worker, lease_seconds=600.0)
            assert lease is not None
            i = lease.member
            view = store.population("run")[i]
            events = []
            event = decisions.pop(i, None)
            if event is not None:
                events.append(event)
                hparams[i] = dict(event.data["new_hparams"])
                view = dataclasses.replace(view, hparams=hparams[i])
                if event.kind == "exploit":
                    donor_id = int(event.data["donor"])
                    quality[i] = at_ready[donor_id]
                    view = dataclasses.replace(
                        view, generation=view.generation + 1, parent=donor_id
                    )
            noise = rng.normal(0.0, 0.01, ready)
            reports = []
            q = quality[i]
            gain = _gain(hparams[i])
            for k in range(ready):
                q += 0.002 * gain * (1.0 - q)
                step = base + k + 1
                reports.append(
                    Report(i, step, {"score": float(q + noise[k])}, step * 1.0 + i * 1e-3)
                )
            quality[i] = q
            score = float(q + noise[-1])
            view = dataclasses.replace(
                view,
                step=base + ready,
                checkpoint=CheckpointRef(
                    f"m{i}-s{base + ready}", i, base + ready, base + ready, score, dict(hparams[i])
                ),
                score=score,
                ready_count=r + 1,
            )
            store.commit(lease, member=view, reports=reports, events=events, release=True)
            n_reports += len(reports)
            n_events += len(events)
        at_ready[:] = quality
        if r == rounds - 1:
            break
        # the ready: the bottom quarter copies the top quarter and explores
        pop = store.population("run")
        order = sorted(pop, key=lambda m: m.score if m.score is not None else -math.inf)
        bottom, top = order[:quarter], order[-quarter:]
        when = (base + ready) * 1.0 + 0.5
        for m in bottom:
            donor = top[int(rng.integers(len(top)))]
            assert donor.checkpoint is not None
            decisions[m.id] = Event(
                "exploit",
                m.id,
                donor.step,
                {
                    "donor": donor.id,
                    "checkpoint": donor.checkpoint.id,
                    "donor_step": donor.step,
                    "donor_score": donor.score,
                    "old_step": m.step,
                    "old_score": m.score,
                    "old_hparams": dict(hparams[m.id]),
                    "new_hparams": _explored(hparams[donor.id], rng),
                    "generation": m.generation + 1,
                },
                when + m.id * 1e-3,
            )
        if r % 10 == 5:  # now and then a middle member explores without copying
            m = order[len(order) // 2]
            decisions[m.id] = Event(
                "explore",
                m.id,
                m.step,
                {"old_hparams": dict(hparams[m.id]), "new_hparams": _explored(hparams[m.id], rng)},
                when + m.id * 1e-3,
            )
    # the budget is spent: every member stops
    for _ in range(members):
        lease = store.claim("run", worker, lease_seconds=600.0)
        if lease is None:
            break
        view = store.population("run")[lease.member]
        stop = Event("stop", view.id, view.step, {"reason": "budget"}, steps + 1.0)
        store.commit(
            lease,
            member=dataclasses.replace(view, status="finished", stop_reason="budget"),
            events=[stop],
            release=True,
        )
        n_events += 1
    store.close()
    return {
        "members": members,
        "steps": steps,
        "ready": ready,
        "reports": n_reports,
        "events": n_events,
    }


def _explored(hp: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    out = {}
    for name, value in hp.items():
        out[name] = SPACE[name].perturb(value, 1.2 if rng.random() < 0.5 else 0.8, rng)
    return out


def measure(url: str, out: Path) -> dict[str, float]:
    """Open the run and write its report: the seconds of each part."""
    c0, t0 = time.process_time(), time.perf_counter()
    result = gp.Result.open(url, "run")
    t1 = time.perf_counter()
    write_report(result, out)
    t2, c2 = time.perf_counter(), time.process_time()
    result.close()
    return {"open_s": t1 - t0, "write_report_s": t2 - t1, "seconds": t2 - t0, "cpu_s": c2 - c0}


def main() -> None:
    parser = argparse.ArgumentParser(description="how long a large run's HTML report takes")
    parser.add_argument("--quick", action="store_true", help="a smoke-sized run for CI")
    parser.add_argument("--repeats", type=int, default=2, help="best of how many")
    parser.add_argument("--members", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--ready", type=int, default=None, help="steps between readies")
    parser.add_argument("--keep", type=Path, default=None, help="copy the report here")
    args = parser.parse_args()
    members = args.members or (8 if args.quick else 64)
    steps = args.steps or (400 if args.quick else 10_000)
    ready = args.ready or (20 if args.quick else READY)
    repeats = 1 if args.quick else args.repeats
    folder = tempfile.mkdtemp(prefix="genepool-report-bench-")
    try:
        url = f"sqlite:///{folder}/pbt.db"
        t0 = time.perf_counter()
        size = build(url, members, steps, ready)
        built = time.perf_counter() - t0
        print(
            f"built {size['members']} members x {size['steps']} steps: {size['reports']} "
            f"reports, {size['events']} events in {built:.1f} s (not timed)"
        )
        out = Path(folder) / "report.html"
        runs = []
        with CpuMeter() as meter:
            for _ in range(repeats):
                runs.append(measure(url, out))
                r = runs[-1]
                print(
                    f"Result.open {r['open_s']:.2f} s + write_report {r['write_report_s']:.2f} s "
                    f"= {r['seconds']:.2f} s (CPU {r['cpu_s']:.2f} s)"
                )
        best = min(runs, key=lambda r: r["seconds"])
        file_bytes = out.stat().st_size
        print(
            f"report: {file_bytes / 1e6:.2f} MB; best {best['seconds']:.2f} s (target {TARGET_S} s)"
        )
        if args.keep is not None:
            shutil.copyfile(out, args.keep)
        summary = {
            "benchmark": "report",
            "quick": args.quick,
            **size,
            "repeats": repeats,
            "open_s": round(best["open_s"], 3),
            "write_report_s": round(best["write_report_s"], 3),
            "seconds": round(best["seconds"], 3),
            "cpu_s": round(best["cpu_s"], 3),
            "file_bytes": file_bytes,
            "target_s": TARGET_S,
            "meets_target": best["seconds"] < TARGET_S,
            "machine": meter.load.as_dict(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
