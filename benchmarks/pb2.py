"""How long one PB2 decision takes once the window is full: population 64, W = 1,000 rows.

A synchronous PBT run is simulated in numpy (no trainable, no store): each round every
member reports the improvement of its score per unit of the ready counter, which a
synthetic objective gives (an improvement peaked in log learning rate, with the peak
drifting over the run, plus momentum, depth and batch-size terms and noise); the bottom
quarter copies a top-quarter member and explores. For the first 1,000 ready rounds the
explore is Gaussian noise (cheap, and it fills the window); then PB2 (or PB2-Mix, with an
unordered choice added to the space) decides every explore of the next rounds, each round's
earlier suggestions pending, the kernel warm-started from the previous decision. The
figures are the median and 95th percentile of those decisions' wall times (the first,
cold, decision reported apart). Targets: median <= 250 ms, 95th percentile <= 1 s.

BLAS runs on one thread, as ``suggest`` does by default (``--blas-threads 0``: the
process's setting): a decision runs beside training processes that hold every core, and
OpenBLAS's threads then wait on each other (measured: a p95 of 1.4 s instead of 0.16 s).

    python benchmarks/pb2.py            # population 64, W = 1,000, 1,000 rounds, then 12
    python benchmarks/pb2.py --quick    # population 8, W = 100: a few seconds

A third figure, ``policy``, times the decision as a run makes it (``gp.Policy.decide`` with
``gp.PB2``): population 64, each member's view holding its latest 32 intervals (2,048, of
which the window reads the latest 1,000), 12 rounds of the bottom quarter exploiting, each
decision's kernel left in the member's view for the next to start from.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from typing import Any

import numpy as np
from benchutil import CpuMeter

import genepool as gp
from genepool.decision import Exploit
from genepool.policy._pb2 import Row, suggest

TARGET_MEDIAN_MS, TARGET_P95_MS = 250.0, 1000.0
INTERVAL = 4.0  # the ready interval, in steps

SPACE = {
    "lr": gp.Float(1e-4, 1.0, log=True),
    "momentum": gp.Float(0.0, 0.99),
    "layers": gp.Int(1, 8),
    "batch": gp.Choice([32, 64, 128, 256], ordered=True),
}


def improvement(hp: dict[str, Any], round_: int, rounds: int, rng: np.random.Generator) -> float:
    """The synthetic improvement per step: the best learning rate drifts from 1e-1 to 1e-3."""
    best = -1.0 - 2.0 * round_ / rounds
    gain = math.exp(-((math.log10(hp["lr"]) - best) ** 2) / 0.5)
    gain += 0.3 * hp["momentum"] + 0.02 * hp["layers"] - 0.001 * abs(hp["batch"] - 128)
    if "optimizer" in hp:
        gain += {"adam": 0.2, "sgd": 0.0, "rmsprop": 0.1}[hp["optimizer"]]
    return float(gain) + 0.1 * float(rng.standard_normal())


def simulate(
    *,
    population: int,
    window: int,
    warm_rounds: int,
    pb2_rounds: int,
    mix: bool,
    seed: int,
    threads: int | None,
) -> dict[str, Any]:
    """Run the simulated PBT; return the PB2 decisions' wall times and what they chose."""
    space = gp.Space(
        {**SPACE, **({"optimizer": gp.Choice(["adam", "sgd", "rmsprop"])} if mix else {})}
    )
    rng = np.random.default_rng(seed)
    hps = [space.sample(rng) for _ in range(population)]
    scores = np.zeros(population)
    rows: list[Row] = []
    noise = gp.GaussianNoise(0.1)
    times: list[float] = []
    state: dict[str, float] | None = None
    rules: dict[str, int] = {}
    total = warm_rounds + pb2_rounds
    for r in range(total):
        now = (r + 1) * INTERVAL
        for m in range(population):
            gain = improvement(hps[m], r, total, rng)
            scores[m] += gain * INTERVAL
            rows.append(Row(now, dict(hps[m]), gain))
        del rows[: max(0, len(rows) - window)]  # the store keeps the last W rows
        order = np.argsort(scores)
        quarter = max(1, population // 4)
        pending: list[dict[str, Any]] = []
        for loser in order[:quarter]:
            donor = int(order[-1 - int(rng.integers(quarter))])
            scores[loser] = scores[donor]
            if r < warm_rounds:
                hps[loser] = noise.explore(space, hps[donor], rng)
                continue
            start = time.perf_counter()
            hp, info = suggest(
                space, rows, now=now, rng=rng, pending=pending, state=state, threads=threads
            )
            times.append(time.perf_counter() - start)
            state = info["kernel"]
            for rule in info["rules"].values():
                rules[rule] = rules.get(rule, 0) + 1
            hps[loser] = hp
            pending.append(hp)
    return {"times": times, "rules": rules}


def wired(
    *, population: int, per_member: int, window: int, rounds: int, seed: int
) -> dict[str, Any]:
    """The decision as a run makes it: ``gp.Policy.decide`` with ``gp.PB2`` on a population
    snapshot whose members each hold ``per_member`` intervals (the window: the latest
    ``window`` of them), the bottom quarter exploiting each round, each decision's kernel
    left in the member's view for the next (warm start), copies pending until they report."""
    rng = np.random.default_rng(seed)
    space = gp.Space(**SPACE)
    pb2 = gp.PB2(window=window, per_member=per_member)
    policy = gp.Policy(
        space=space,
        ready=gp.Every(4),
        exploit=gp.Truncation(),
        explore=pb2,
        budget=gp.Budget(steps=10**9),
    )
    total = per_member + rounds
    views = []
    for i in range(population):
        hp = space.sample(rng)
        gains = [improvement(hp, r, total, rng) for r in range(per_member)]
        times = [INTERVAL * (r + 1) for r in range(per_member)]
        score = float(sum(gains) * INTERVAL)
        ckpt = gp.CheckpointRef(f"m{i}", i, int(times[-1]), times[-1], score, hp)
        views.append(
            gp.MemberView(
                id=i,
                hparams=hp,
                step=int(times[-1]),
                checkpoint=ckpt,
                score=score,
                curve=((times[-1], score),),
                ready_count=per_member,
                ready_counter=times[-1],
                intervals=tuple((t, g, dict(hp)) for t, g in zip(times, gains, strict=True)),
            )
        )
    snapshot = gp.Population(tuple(views))
    decisions: list[float] = []
    for r in range(rounds):
        now = INTERVAL * (per_member + r + 1)
        moved = []
        for m in snapshot:  # a round of training: each member reports from where it is
            gain = improvement(dict(m.hparams), per_member + r, total, rng)
            score = (m.score or 0.0) + gain * INTERVAL
            ckpt = gp.CheckpointRef(f"m{m.id}r{r}", m.id, int(now), now, score, m.hparams)
            kept = (*m.intervals[1:], (now, gain, dict(m.hparams)))
            moved.append(
                dataclasses.replace(
                    m,
                    checkpoint=ckpt,
                    score=score,
                    curve=((now, score),),
                    ready_counter=now,
                    intervals=kept,
                )
            )
        snapshot = gp.Population(tuple(moved))
        for m in sorted(snapshot, key=lambda v: v.score or 0.0)[: population // 4]:
            start = time.perf_counter()
            decision = policy.decide(snapshot, snapshot[m.id], rng)
            took = time.perf_counter() - start
            if isinstance(decision, Exploit) and decision.explored is not None:
                decisions.append(took)  # an exploit, explored by PB2 (not a Continue)
                state = decision.explored.get("state")
                copied = dataclasses.replace(
                    snapshot[m.id],
                    hparams=dict(decision.hparams),
                    checkpoint=decision.checkpoint,
                    explore_state=state,
                )
                snapshot = snapshot.with_members([copied])
    return {"times": decisions, "rows": min(window, population * per_member)}


def summary(times: list[float]) -> dict[str, float]:
    warm = sorted(times[1:]) or sorted(times)
    p95 = warm[min(len(warm) - 1, math.ceil(0.95 * len(warm)) - 1)]
    return {
        "decisions": len(warm),
        "cold_ms": round(1000 * times[0], 1),
        "median_ms": round(1000 * statistics.median(warm), 1),
        "p95_ms": round(1000 * p95, 1),
        "max_ms": round(1000 * warm[-1], 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smoke size CI runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--blas-threads", type=int, default=1, help="BLAS threads (0: the library's default)"
    )
    args = parser.parse_args(argv)
    size = (
        {"population": 8, "window": 100, "warm_rounds": 20, "pb2_rounds": 4}
        if args.quick
        else {"population": 64, "window": 1000, "warm_rounds": 1000, "pb2_rounds": 12}
    )
    threads = args.blas_threads or None
    out: dict[str, Any] = {
        "benchmark": "pb2",
        **size,
        "blas_threads": threads or "default",
        "targets_ms": {"median": TARGET_MEDIAN_MS, "p95": TARGET_P95_MS},
    }
    for name, mix in (("pb2", False), ("pb2_mix", True)):
        with CpuMeter() as meter:
            result = simulate(**size, mix=mix, seed=args.seed, threads=threads)
        figures = summary(result["times"])
        figures["met"] = (
            figures["median_ms"] <= TARGET_MEDIAN_MS and figures["p95_ms"] <= TARGET_P95_MS
        )
        print(f"{name}: {figures} rules={result['rules']}", flush=True)
        out[name] = {**figures, "rules": result["rules"], "load": meter.load.as_dict()}
    wired_size = (
        {"population": 8, "per_member": 16, "window": 100, "rounds": 3}
        if args.quick
        else {"population": 64, "per_member": 32, "window": 1000, "rounds": 12}
    )
    with CpuMeter() as meter:
        result = wired(**wired_size, seed=args.seed)
    figures = summary(result["times"])
    figures["met"] = figures["median_ms"] <= TARGET_MEDIAN_MS and figures["p95_ms"] <= TARGET_P95_MS
    print(f"gp.PB2 in gp.Policy.decide: {figures}", flush=True)
    out["policy"] = {**wired_size, **figures, "load": meter.load.as_dict()}
    out["met"] = all(out[n]["met"] for n in ("pb2", "pb2_mix", "policy"))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
