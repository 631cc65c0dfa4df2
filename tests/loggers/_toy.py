"""A toy run with exploits for the loggers' tests, and what its curves must be."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import genepool as gp

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
    """Population 4, ready every 2 steps, 12 steps, truncation 25%: some exploits."""
    storage = f"sqlite:///{tmp_path}/pbt.db" if workers > 1 else None
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
    )


def expected_lineage(result: gp.Result, member: int) -> list[tuple[int, float, int]]:
    """The lineage curve a logger must draw: ``Result.ancestry_scores``."""
    return [(step, float(score), who) for step, score, who in result.ancestry_scores(member)]


def check_has_exploits(result: gp.Result) -> None:
    """The toy run is worth checking: some member's line crosses members."""
    assert any(e.kind == "exploit" for e in result.events)
    assert any(len(result.lineage(m.id).ancestors) > 1 for m in result.population)


def own_scores(result: gp.Result, member: int) -> list[tuple[int, float]]:
    """A member's own reports of the run's metric, in the order written."""
    return [(r.step, float(r.metrics[result.metric])) for r in result.reports if r.member == member]
