"""Truncation exploits the share of the population it says (issue 14, item 2).

A member that has just exploited still ranks, by the score of its own latest ready: the
next-worst member does not fall into the bottom in its place. A synchronous round then
exploits exactly ``ceil(fraction x n)`` members, and an asynchronous run about
``fraction`` of its decisions, on a workload whose scores do not trend with training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

import genepool as gp
from genepool.member import CheckpointRef, MemberView, Population
from genepool.policy import Exploit, Policy
from genepool.policy.select import truncation_split

FRACTION = 0.25


def a_round(n: int, fraction: float, seed: int) -> int:
    """One synchronous round of ``n`` members, decided one after another as workers do
    (each exploit changes the population the next decision reads); the exploits."""
    rng = np.random.default_rng(seed)
    scores = rng.random(n).round(1)  # ties too
    members = []
    for i, score in enumerate(scores):
        ckpt = CheckpointRef(f"c{i}", i, 4, 4.0, float(score), {"x": 0.5})
        members.append(
            MemberView(
                id=i,
                hparams={"x": 0.5},
                step=4,
                checkpoint=ckpt,
                score=float(score),
                ready_count=seed,
                ready_counter=4.0,
                curve=((4.0, float(score)),),
            )
        )
    policy = Policy(
        space=gp.Space(x=gp.Float(0.0, 1.0)),
        ready=gp.Every(4),
        exploit=gp.Truncation(fraction),
        explore=gp.Perturb(),
        budget=gp.Budget(steps=100),
    )
    exploits = 0
    for i in rng.permutation(n):
        population = Population(tuple(members))
        decision = policy.decide(population, members[i], np.random.default_rng([seed, i]))
        if isinstance(decision, Exploit):
            exploits += 1
            # what the worker writes: the donor's checkpoint, its own curve kept
            members[i] = dataclasses.replace(
                members[i],
                checkpoint=decision.checkpoint,
                score=decision.checkpoint.score,
                hparams=decision.hparams,
                parent=decision.donor,
            )
    return exploits


@pytest.mark.parametrize("fraction", [0.2, 0.25, 0.5])
def test_a_synchronous_round_exploits_exactly_its_bottom(fraction: float):
    for n in range(2, 65):
        for seed in range(3):
            assert a_round(n, fraction, seed) == truncation_split(n, fraction), (n, seed)


class Noise(gp.Trainable):
    """Scores drawn afresh at each step from the member's stream: no trend with training."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x = float(hparams["x"])

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.x = float(hparams["x"])

    def step(self) -> dict[str, float]:
        return {"score": float(self.member.rng.random())}

    def save(self) -> dict[str, float]:
        return {"x": self.x}

    def load(self, state: Mapping[str, Any]) -> None:
        self.x = float(state["x"])


def noise_run(
    n: int, seed: int, readies: int, *, synchronous: bool, aligned: bool | None = None
) -> gp.Result:
    """``n`` members of :class:`Noise`, ready at every step, Truncation(FRACTION)."""
    return gp.run(
        Noise,
        gp.Space(x=gp.Float(0.0, 1.0)),
        metric="score",
        population=n,
        ready=gp.Every(1),
        budget=gp.Budget(steps=readies),
        exploit=gp.Truncation(FRACTION),
        seed=seed,
        synchronous=synchronous,
        aligned=aligned,
    )


def shares(
    n: int, *, synchronous: bool, seeds: range, readies: int = 10, aligned: bool | None = None
) -> list[float]:
    """Per seed, the share of the decisions that exploited."""
    out = []
    for seed in seeds:
        result = noise_run(n, seed, readies, synchronous=synchronous, aligned=aligned)
        exploits = sum(e.kind == "exploit" for e in result.events)
        # every report is a ready; each one short of the budget is decided (one that
        # copied a donor a round behind decides that round again)
        decisions = sum(r.step < readies for r in result.reports)
        out.append(exploits / decisions)
    return out


@pytest.mark.parametrize("n", [8, 16, 32])
def test_an_asynchronous_run_exploits_its_fraction(n: int):
    # the rule alone: each member ranked by its latest ready score (aligned=False; with
    # the comparison at the same point of training, the asynchronous default, a member
    # compared with one a round behind is compared by its own previous score, which
    # already passed a decision: about 0.20 here, see the closing note)
    share = float(np.mean(shares(n, synchronous=False, seeds=range(20), aligned=False)))
    assert abs(share - FRACTION) <= 0.05, share


def test_a_synchronous_run_exploits_its_bottom_each_round():
    n = 8
    result = noise_run(n, 3, 6, synchronous=True)
    per_round: dict[int, int] = {}
    for e in result.events:
        if e.kind == "exploit":
            per_round[e.data["old_step"]] = per_round.get(e.data["old_step"], 0) + 1
    assert per_round == dict.fromkeys(range(1, 6), truncation_split(n, FRACTION))
