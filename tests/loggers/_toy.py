"""A toy run with exploits for the loggers' tests, and what its curves must be."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import genepool as gp
from genepool.analysis._curves import lineage_curves

T = TypeVar("T")
#: The toy's serial runs read this clock: each reading 10 ms later than the one before,
#: from a time in 2023, so that their times, and so what a logger's ``rate`` sends of
#: them, are the same on every machine.
START, TICK = 1.7e9, 0.01

SPACE = gp.Space(lr=gp.Float(0.01, 1.0, log=True))


def climb(member: gp.Member) -> None:
    """The score climbs by ``lr`` a step: the best ``lr`` wins and is copied."""
    state = member.restore()
    x = 0.0 if state is None else float(state)
    while member.running:
        x += member.hparams["lr"]
        member.report(score=x, note="text is not drawn", state=x)


def run_toy(
    tmp_path: Path, loggers: Sequence[Any], *, workers: int = 1, name: str = "toy"
) -> gp.Result:
    """Population 4, ready every 2 steps, 12 steps, truncation 25%: some exploits. Run
    serially, on a clock that moves 10 ms each time it is read; with workers, on the
    system's."""
    storage = f"sqlite:///{tmp_path}/pbt.db" if workers > 1 else None
    clock = gp.ManualClock(START, tick=TICK) if workers == 1 else None
    return gp.run(
        climb,
        SPACE,
        metric="score",
        population=4,
        ready=gp.Every(2),
        budget=gp.Budget(steps=12),
        exploit=gp.Truncation(0.25),
        seed=3,
        name=name,
        storage=storage,
        workers=workers,
        loggers=loggers,
        clock=clock,
    )


def sampled(curve: Sequence[tuple[float, T]], rate: float | None, population: int) -> list[T]:
    """What a logger with ``rate`` sends of a curve (``(time, point)`` in order): all of
    it for ``None``; else its first point, each point ``population / rate`` seconds or
    more after the last one sent, and its last point."""
    if rate is None:
        return [point for _, point in curve]
    sent: list[T] = []
    last = None
    for time, point in curve:
        if last is None or time - last >= population / rate:
            sent.append(point)
            last = time
    if curve and (not sent or sent[-1] is not curve[-1][1]):
        sent.append(curve[-1][1])
    return sent


def expected_lineage(
    result: gp.Result, member: int, rate: float | None = None
) -> list[tuple[int, float, int]]:
    """The lineage curve a logger must draw: ``Result.ancestry_scores``, and with
    ``rate`` the points of it it sends, by the times their steps were reported."""
    line = [(step, float(score), who) for step, score, who in result.ancestry_scores(member)]
    times = [p.time for p in lineage_curves(result, [member])[member]]
    assert len(times) == len(line)
    return sampled(list(zip(times, line, strict=True)), rate, len(result.population))


def check_has_exploits(result: gp.Result) -> None:
    """The toy run is worth checking: some member's line crosses members."""
    assert any(e.kind == "exploit" for e in result.events)
    assert any(len(result.lineage(m.id).ancestors) > 1 for m in result.population)


def own_scores(
    result: gp.Result, member: int, rate: float | None = None
) -> list[tuple[int, float]]:
    """A member's own reports of the run's metric, in the order written; with ``rate``,
    those a logger sends."""
    reports = [r for r in result.reports if r.member == member]
    curve = [(r.time, (r.step, float(r.metrics[result.metric]))) for r in reports]
    return sampled(curve, rate, len(result.population))
