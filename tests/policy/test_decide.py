"""Policy.decide: a pure, deterministic rule returning Continue, Exploit or Stop."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

import genepool.decision
from genepool import InvalidArgumentError
from genepool.member import CheckpointRef, MemberView, Population
from genepool.policy import (
    Budget,
    Continue,
    Every,
    Exploit,
    ExploreFunction,
    GaussianNoise,
    Perturb,
    Policy,
    Resample,
    Stop,
    Tournament,
    Truncation,
    WelchTTest,
)
from genepool.space import Float, Int, Space

SPACE = Space(lr=Float(1e-4, 1.0, log=True), layers=Int(1, 8), optimizer="adam")
MINE = {"lr": 0.1, "layers": 2, "optimizer": "adam"}
DONOR_NOW = {"lr": 0.5, "layers": 8, "optimizer": "adam"}  # the donor's current hparams
DONOR_CKPT = {"lr": 0.01, "layers": 4, "optimizer": "adam"}  # those of its checkpoint


def policy(**kwargs: Any) -> Policy:
    args: dict[str, Any] = {
        "space": SPACE,
        "ready": Every(4),
        "exploit": Truncation(0.2),
        "explore": None,
        "budget": Budget(steps=100),
    }
    args.update(kwargs)
    return Policy(**args)


def mk(
    i: int,
    score: float,
    *,
    hparams: dict[str, Any] | None = None,
    ckpt_hparams: dict[str, Any] | None = None,
    counter: float = 8.0,
    failures: int = 0,
    recent: tuple[float, ...] = (),
) -> MemberView:
    hp = dict(MINE if hparams is None else hparams)
    ckpt = CheckpointRef(
        f"c{i}", i, int(counter), counter, score, dict(hp if ckpt_hparams is None else ckpt_hparams)
    )
    return MemberView(
        id=i,
        hparams=hp,
        step=int(counter),
        checkpoint=ckpt,
        score=score,
        failures=failures,
        recent=recent,
        ready_count=2,
    )


def two(**member_kwargs: Any) -> Population:
    """Member 0 (worse) and member 1 (better, whose checkpoint hparams differ from its own)."""
    return Population(
        (
            mk(0, 0.0, **member_kwargs),
            mk(1, 1.0, hparams=DONOR_NOW, ckpt_hparams=DONOR_CKPT, recent=(5.0, 5.1, 4.9)),
        )
    )


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- Stop ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("max_failures", "failures"), [(3, 3), (3, 4), (1, 1)])
def test_stop_failed(max_failures, failures):
    population = two(failures=failures)
    decision = policy(max_failures=max_failures).decide(population, population[0], rng())
    assert decision == Stop("failed")


def test_fewer_failures_than_the_limit_do_not_stop():
    population = two(failures=2)
    decision = policy(max_failures=3).decide(population, population[0], rng())
    assert not isinstance(decision, Stop)


@pytest.mark.parametrize("counter", [100.0, 150.0])
def test_stop_budget_on_the_checkpoint_counter(counter):
    population = two(counter=counter)
    assert policy().decide(population, population[0], rng()) == Stop("budget")


def test_budget_counts_the_checkpoint_counter_not_the_step():
    member = mk(0, 0.0, counter=99.0)
    member = MemberView(id=0, hparams=MINE, step=500, checkpoint=member.checkpoint, score=0.0)
    population = Population((member, two()[1]))
    decision = policy().decide(population, member, rng())
    assert isinstance(decision, Exploit)

    ckpt = CheckpointRef("c0", 0, 3, 100.0, 0.0, MINE)  # step 3, but the counter is at 100
    member = MemberView(id=0, hparams=MINE, step=3, checkpoint=ckpt, score=0.0)
    population = Population((member, two()[1]))
    assert policy().decide(population, member, rng()) == Stop("budget")


def test_no_budget_stop_below_the_budget_or_with_seconds_only():
    population = two(counter=99.0)
    assert isinstance(policy().decide(population, population[0], rng()), Exploit)
    population = two(counter=10_000.0)
    decision = policy(budget=Budget(seconds=60)).decide(population, population[0], rng())
    assert isinstance(decision, Exploit)


def test_budget_reached():
    p = policy()
    assert not p.budget_reached(99.5)
    assert p.budget_reached(100)
    assert not policy(budget=Budget(seconds=1)).budget_reached(1e12)


# -- Continue or explore without exploit ----------------------------------------------------


def test_no_exploit_no_explore_continues():
    population = two()
    p = policy(exploit=None, explore=None)
    for member in population:
        decision = p.decide(population, member, rng())
        assert decision == Continue()
        assert isinstance(decision, Continue)


def test_no_exploit_explores_the_members_own_hparams():
    population = two()
    p = policy(exploit=None, explore=Perturb())
    for seed in range(20):
        decision = p.decide(population, population[1], rng(seed))
        assert isinstance(decision, genepool.decision.Explore)
        assert decision.hparams == Perturb().explore(SPACE, DONOR_NOW, rng(seed))
        assert decision.hparams is not None
        assert decision.hparams["lr"] in (pytest.approx(0.4), pytest.approx(0.6))
        assert decision.hparams["layers"] in (6, 8)  # 8 * 0.8, or 8 * 1.2 clipped
        assert decision.hparams["optimizer"] == "adam"


# -- Exploit -------------------------------------------------------------------------------


def test_exploit_copies_the_checkpoint_hparams_unchanged_without_explore():
    population = two()
    for seed in range(20):
        decision = policy().decide(population, population[0], rng(seed))
        assert isinstance(decision, Exploit)
        assert decision.donor == 1
        assert decision.checkpoint == population[1].checkpoint
        assert decision.hparams == DONOR_CKPT
        assert decision.hparams != DONOR_NOW
        assert population[1].checkpoint is not None
        assert decision.hparams is not population[1].checkpoint.hparams


def test_exploit_explores_from_the_checkpoint_hparams():
    population = two()
    p = policy(explore=Perturb())
    for seed in range(50):
        decision = p.decide(population, population[0], rng(seed))
        assert isinstance(decision, Exploit)
        assert decision.donor == 1
        assert decision.checkpoint == population[1].checkpoint
        # perturbed from lr=0.01, layers=4 (the checkpoint), not lr=0.5, layers=8 (now)
        assert decision.hparams["lr"] in (pytest.approx(0.008), pytest.approx(0.012))
        assert decision.hparams["layers"] in (3, 5)
        assert decision.hparams["optimizer"] == "adam"


@pytest.mark.parametrize("exploit", [Tournament(), WelchTTest(3)])
def test_other_rules_exploit_the_donors_checkpoint(exploit):
    population = two(recent=(0.0, 0.1, -0.1))
    decision = policy(exploit=exploit).decide(population, population[0], rng())
    donor_ckpt = population[1].checkpoint
    assert donor_ckpt is not None
    assert decision == Exploit(1, donor_ckpt, DONOR_CKPT, donor_generation=0)


def test_a_member_that_does_not_copy_continues_without_new_hparams():
    population = two()
    for explore in (None, Perturb()):
        decision = policy(explore=explore).decide(population, population[1], rng())
        assert decision == Continue()


@pytest.mark.parametrize(
    "explore", [Perturb((0.25, 4.0)), GaussianNoise(2.0), Resample(0.5), Perturb(resample=0.5)]
)
def test_explored_hparams_stay_in_the_space(explore):
    at_bounds = {"lr": 1.0, "layers": 8, "optimizer": "adam"}
    low_bounds = {"lr": 1e-4, "layers": 1, "optimizer": "adam"}
    for ckpt_hparams in (at_bounds, low_bounds):
        population = Population(
            (mk(0, 0.0), mk(1, 1.0, hparams=DONOR_NOW, ckpt_hparams=ckpt_hparams))
        )
        for seed in range(50):
            decision = policy(explore=explore).decide(population, population[0], rng(seed))
            assert isinstance(decision, Exploit)
            hp = decision.hparams
            assert SPACE.validate(hp) == hp
            assert type(hp["layers"]) is int
            assert type(hp["lr"]) is float
            assert hp["optimizer"] == "adam"


# -- purity --------------------------------------------------------------------------------


def ten() -> Population:
    return Population(
        tuple(
            mk(
                i,
                float(i % 4),
                hparams={"lr": 0.01 * (i + 1), "layers": 1 + i % 8, "optimizer": "adam"},
            )
            for i in range(10)
        )
    )


def test_same_seed_same_decision():
    population = ten()
    p = policy(explore=Perturb(resample=0.3))
    decisions = []
    for seed in range(30):
        for member in population:
            first = p.decide(population, member, rng(seed))
            assert p.decide(population, member, rng(seed)) == first
            decisions.append(first)
    # the generator is used: decisions are not all the same
    assert len({repr(d) for d in decisions}) > 3


def test_decide_never_mutates_its_inputs():
    def meddle(hparams: dict[str, Any], _rng: np.random.Generator) -> dict[str, Any]:
        hparams["lr"] = 0.5
        return hparams

    explores = [None, Perturb(), GaussianNoise(), ExploreFunction(meddle)]
    for explore in explores:
        for exploit in (None, Truncation(0.5)):
            population = ten()
            before = copy.deepcopy(population)
            members_before = [copy.deepcopy(m) for m in population]
            p = policy(exploit=exploit, explore=explore)
            for member in population:
                p.decide(population, member, rng(1))
            assert population == before
            assert list(population) == members_before
            for m in population:
                assert m.checkpoint is not None
                assert m.checkpoint.hparams == m.hparams


# -- construction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_failures": 0},
        {"max_failures": True},
        {"max_failures": 1.5},
        {"space": {"lr": 0.1}},
        {"ready": 4},
        {"exploit": "truncation"},
        {"explore": "perturb"},
        {"budget": 100},
    ],
)
def test_policy_invalid_arguments(kwargs):
    with pytest.raises(InvalidArgumentError, match=next(iter(kwargs))):
        policy(**kwargs)


# -- decide_with: the generator made only when a draw is needed --------------------------


@pytest.mark.parametrize("rule", [Truncation(0.25), Tournament(), WelchTTest(min_samples=2)])
@pytest.mark.parametrize("explore", [None, Perturb()])
def test_decide_with_decides_as_decide_and_makes_a_generator_only_to_draw(rule, explore):
    scores = [0.1, 0.5, 0.5, 0.9, 0.3, 0.7, 0.2, 0.8]
    population = Population(
        tuple(mk(i, s, recent=(s, s + 0.01, s - 0.01)) for i, s in enumerate(scores))
    )
    p = policy(exploit=rule, explore=explore)
    skipped = 0
    for member in population:
        for seed in range(5):
            made: list[np.random.Generator] = []

            def make(
                seed: int = seed, made: list[np.random.Generator] = made
            ) -> np.random.Generator:
                made.append(np.random.default_rng(seed))
                return made[-1]

            lazy = p.decide_with(population, member, make)
            assert lazy == p.decide(population, member, np.random.default_rng(seed))
            assert len(made) <= 1
            skipped += not made
    if isinstance(rule, Truncation):  # the members above the bottom quarter draw nothing
        assert skipped == 5 * 6
    else:
        assert skipped == 0


def test_a_truncation_subclass_with_its_own_select_is_always_asked():
    class Always(Truncation):
        def select(self, population, member, rng):
            return max(population.donors(exclude=member.id), key=population.fitness)

    population = Population(tuple(mk(i, s) for i, s in enumerate([0.1, 0.5, 0.9, 0.3])))
    best = population[2]
    decision = policy(exploit=Always(0.25)).decide_with(
        population, population[1], lambda: np.random.default_rng(0)
    )
    assert isinstance(decision, Exploit)
    assert decision.donor == best.id
