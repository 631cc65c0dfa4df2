"""examples/toy.py: the paper's toy, whose seeded serial runs must keep their lineage and
scores (tests/_golden.py): synchronous as in the paper's figure, and asynchronous."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import toy

import genepool as gp
from tests._golden import check_golden


def test_the_papers_toy_matches_its_golden_file() -> None:
    check_golden(toy.run_variant("pbt", seed=0), "Q", "toy")


def test_the_toy_asynchronous_at_population_8_matches_its_golden_file() -> None:
    result = gp.run(
        toy.Toy,
        toy.SPACE,
        metric="Q",
        population=8,
        ready=gp.Every(4),
        budget=gp.Budget(steps=40),
        explore=gp.GaussianNoise(0.1),
        seed=3,
    )
    check_golden(result, "Q", "toy_async_8")
