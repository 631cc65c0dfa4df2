"""Greediness controls (issue 20): Calm wraps any selection rule with smoothed scores, a lead
to clear (DexPBT) and an explore from the member's own weights."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import genepool as gp
from genepool import InvalidArgumentError, decision
from genepool.member import CheckpointRef, MemberView, Mode, Population
from genepool.policy.greedy import IQR_OF_NORMAL, BestOf, Calm, MovingAverage, Smoothing, Verdict
from genepool.policy.select import Select, Tournament, Truncation, WelchTTest


def mk(
    i: int,
    scores: Sequence[float],
    *,
    start: float = 1.0,
    failures: int = 0,
    recent: tuple[float, ...] = (),
) -> MemberView:
    """A member whose ready rounds at counters ``start, start + 1, ...`` scored ``scores``,
    holding its own checkpoint of the latest."""
    curve = tuple((start + t, float(s)) for t, s in enumerate(scores))
    score = curve[-1][1] if curve else None
    at = curve[-1][0] if curve else 0.0
    ckpt = CheckpointRef(f"c{i}", i, int(at), at, score, {"x": i})
    return MemberView(
        id=i,
        hparams={"x": i},
        step=int(at),
        checkpoint=ckpt,
        score=score,
        curve=curve,
        ready_count=len(curve),
        failures=failures,
        recent=recent,
    )


def pop(*curves: Sequence[float], mode: Mode = "max") -> Population:
    return Population(tuple(mk(i, c) for i, c in enumerate(curves)), mode)


def synthetic(
    seed: int, quality: Sequence[float], *, sigma: float = 1.0, rounds: int = 16
) -> Population:
    """A seeded population: member ``i``'s every round scores ``quality[i]`` plus Gaussian
    noise of standard deviation ``sigma``."""
    rng = np.random.default_rng(seed)
    return Population(
        tuple(
            mk(i, (q + sigma * rng.standard_normal(rounds)).tolist()) for i, q in enumerate(quality)
        )
    )


def exploit_rate(rule: Select, quality: Sequence[float], *, seeds: int = 30) -> float:
    """The share of members (every member of ``seeds`` synthetic populations) that copy."""
    copies = decisions = 0
    for seed in range(seeds):
        population = synthetic(seed, quality)
        for member in population:
            donor = rule.select(population, member, np.random.default_rng([seed, member.id]))
            copies += donor is not None
            decisions += 1
    return copies / decisions


SAME = [0.0] * 20  # one quality: scores differ by noise alone
AHEAD = [0.0] * 16 + [3.0] * 4  # four members truly ahead, by 3 standard deviations of noise


# -- the greediness controls suppress exploits on noise ------------------------------------


def test_a_lead_suppresses_the_exploits_of_noise() -> None:
    plain = exploit_rate(Truncation(0.2), SAME)
    calm = exploit_rate(Calm(Truncation(0.2), lead=5), SAME)
    assert plain == pytest.approx(0.2)  # the bottom 20% copy, whatever the noise
    assert calm <= 0.02  # under a tenth of them


def test_smoothing_lets_a_real_lead_through_that_noise_hides() -> None:
    control = Calm(Truncation(0.2), lead=5, smoothing=MovingAverage(0.2))
    assert exploit_rate(control, SAME) <= 0.02
    assert exploit_rate(control, AHEAD) >= 0.15  # most of the bottom 20% copy
    # without smoothing the round's noise hides the lead from the same threshold
    assert exploit_rate(Calm(Truncation(0.2), lead=5), AHEAD) <= 0.03


def test_the_lead_of_score_is_dexpbts_absolute_threshold() -> None:
    # scores near 100 with noise 1: 5% of the donor's score is 5 noise deviations
    control = Calm(Truncation(0.2), lead_of_score=0.05)
    assert exploit_rate(control, [100.0] * 20) <= 0.005  # 1 of 600 decisions
    assert exploit_rate(control, [100.0] * 16 + [110.0] * 4) == pytest.approx(0.2)


def test_tournament_composes() -> None:
    assert exploit_rate(Tournament(), SAME) > 0.4
    control = Calm(Tournament(), lead=5, smoothing=MovingAverage(0.2))
    assert exploit_rate(control, SAME) <= 0.02
    assert exploit_rate(control, AHEAD) >= 0.1


def test_welch_t_test_composes() -> None:
    # the recent scores decide Welch's test; the curve decides the lead
    behind = mk(0, [0.0, 0.1, 0.0, 0.1], recent=(0.0, 0.1, 0.0, 0.1))
    ahead = mk(1, [0.0, 1.0, 1.1, 1.0], recent=(1.0, 1.1, 1.0, 1.1))
    population = Population((behind, ahead))
    rng = np.random.default_rng
    assert WelchTTest(4).select(population, behind, rng(0)) == ahead
    assert Calm(WelchTTest(4), lead_of_score=0.5).select(population, behind, rng(0)) == ahead
    # the latest rounds: a lead of 0.9, not more than 0.9 of the donor's 1.0
    assert Calm(WelchTTest(4), lead_of_score=0.9).select(population, behind, rng(0)) is None
    # averaged over their curves: 0.9 against 0.0625, a lead of 0.8375 > 0.9 * 0.9
    averaged = Calm(WelchTTest(4), lead_of_score=0.9, smoothing=MovingAverage(0.5))
    judged = averaged.judge(population, behind, ahead)
    assert judged["donor_score"] == pytest.approx(0.9)
    assert judged["member_score"] == pytest.approx(0.0625)
    assert averaged.select(population, behind, rng(0)) == ahead


# -- smoothing: hand-computed ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("smoothing", "mode", "scores", "expected"),
    [
        (BestOf(3), "max", [1, 5, 2, 3, 0], [1, 5, 5, 5, 3]),
        (BestOf(3), "min", [1, 5, 2, 3, 0], [1, 1, 1, 2, 0]),
        (BestOf(1), "max", [1, 5, 2], [1, 5, 2]),
        (BestOf(2), "max", [1, math.nan, 0, 4], [1, math.nan, 0, 4]),
        (BestOf(3), "min", [3, -math.inf, 4], [3, -math.inf, 3]),
        (MovingAverage(0.5), "max", [0, 4, 2, 6], [0, 2, 2, 4]),
        (MovingAverage(0.5), "min", [0, 4, 2, 6], [0, 2, 2, 4]),
        (MovingAverage(1.0), "max", [3, 1, 2], [3, 1, 2]),
        (MovingAverage(0.25), "max", [math.nan, 4, math.inf, 0], [math.nan, 4, math.inf, 3]),
    ],
)
def test_smoothing_by_hand(
    smoothing: Smoothing, mode: Mode, scores: list[float], expected: list[float]
) -> None:
    got = smoothing.smooth([float(s) for s in scores], mode=mode)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert (math.isnan(g) and math.isnan(e)) or g == pytest.approx(e)


def test_the_rule_ranks_by_the_smoothed_scores_min() -> None:
    # a loss: member 0 had a bad last round, member 1 is steady at 3
    population = pop([1, 1, 1, 4], [3, 3, 3, 3], mode="min")
    rng = np.random.default_rng
    assert Truncation(0.5).select(population, population[0], rng(0)) == population[1]
    for smoothing in (MovingAverage(0.5), BestOf(2)):  # 2.5 and 1: member 0 is better now
        calm = Calm(Truncation(0.5), smoothing=smoothing)
        assert calm.select(population, population[0], rng(0)) is None
        donor = calm.select(population, population[1], rng(0))
        assert donor is population[0]  # the original view: its real checkpoint
    seen = Calm(Truncation(0.5), smoothing=MovingAverage(0.5)).smoothed(population)
    assert seen[0].curve == ((1.0, 1.0), (2.0, 1.0), (3.0, 1.0), (4.0, 2.5))
    assert seen.rank_value(seen[0]) == -2.5
    assert seen[1] is population[1]  # nothing to smooth: the same view


def test_the_rule_ranks_by_the_smoothed_scores_max() -> None:
    # member 0 peaked two rounds ago; member 1 is steady at 2
    population = pop([0, 5, 1, 1], [2, 2, 2, 2])
    calm = Calm(Truncation(0.5), smoothing=BestOf(3))
    assert calm.judge(population, population[1], population[0])["donor_score"] == 5.0
    assert calm.select(population, population[1], np.random.default_rng(0)) is population[0]
    assert Truncation(0.5).select(population, population[1], np.random.default_rng(0)) is None


def test_aligned_comparisons_read_the_smoothed_curve() -> None:
    # member 1 is two rounds ahead: aligned, each is compared at counter 3
    population = Population((mk(0, [4, 0, 0]), mk(1, [0, 0, 8, 8, 8])), "max", aligned=True)
    calm = Calm(Truncation(0.5), smoothing=BestOf(3))
    judged = calm.judge(population, population[0], population[1])
    assert (judged["member_score"], judged["donor_score"]) == (4.0, 8.0)


def test_the_smoothed_snapshot_follows_writes() -> None:
    # above SMALL members a snapshot made by a write keeps what was derived, updated
    population = synthetic(0, [0.0] * 40)
    calm = Calm(Truncation(0.2), smoothing=BestOf(4))
    calm.smoothed(population)  # derived once
    written = dataclasses.replace(population[7], curve=((1.0, 100.0), (2.0, -1.0)))
    after = population.with_members([written])
    fresh = Calm(Truncation(0.2), smoothing=BestOf(4)).smoothed(Population(tuple(after), "max"))
    assert tuple(calm.smoothed(after)) == tuple(fresh)
    assert calm.smoothed(after)[7].curve == ((1.0, 100.0), (2.0, 100.0))
    assert calm.smoothed(population)[7] is not calm.smoothed(after)[7]  # the old one kept
    pickle.dumps(after)  # the kept maker pickles


# -- the lead, the spread and the verdict --------------------------------------------------


def test_the_spread_is_the_interquartile_range_in_standard_deviations() -> None:
    population = pop(*([s] for s in [0, 1, 2, 3, 4, 100]))  # one outlier does not widen it
    judged = Calm(Truncation(0.2), lead=1).judge(population, population[0], population[5])
    low, high = np.percentile([0, 1, 2, 3, 4, 100], [25, 75])  # 1.25 and 3.75
    spread = (high - low) / IQR_OF_NORMAL
    assert judged["spread"] == pytest.approx(spread)
    assert judged["spread_bar"] == pytest.approx(spread)
    assert judged["lead"] == 100.0
    assert judged["clear"] is True
    assert pytest.approx(2 * 0.6744897501960817) == IQR_OF_NORMAL


def test_the_bars_by_hand() -> None:
    population = pop([10.0], [10.0], [10.4], [11.0], mode="min")
    # a loss: member 3 (11.0) copies member 0 (10.0); the lead is 1.0 in either mode
    calm = Calm(Truncation(0.25), lead=1, lead_of_score=0.09)
    judged = calm.judge(population, population[3], population[0])
    q = np.percentile([-10.0, -10.0, -10.4, -11.0], [25, 75])
    assert judged == {
        "rule": "Truncation(0.25)",
        "smoothing": None,
        "donor": 0,
        "donor_score": 10.0,
        "member_score": 11.0,
        "lead": 1.0,
        "spread": pytest.approx((q[1] - q[0]) / IQR_OF_NORMAL),
        "spread_bar": pytest.approx((q[1] - q[0]) / IQR_OF_NORMAL),
        "score_bar": pytest.approx(0.9),
        "clear": True,
    }
    json.dumps(judged)
    stricter = Calm(Truncation(0.25), lead=1, lead_of_score=0.11)
    assert stricter.judge(population, population[3], population[0])["clear"] is False


def test_zero_leads_copy_what_the_rule_chooses_even_a_tie() -> None:
    population = pop([1.0], [1.0], [1.0], [1.0])
    for member in population:
        for seed in range(5):
            plain = Truncation(0.25).select(population, member, np.random.default_rng(seed))
            calm = Calm(Truncation(0.25)).select(population, member, np.random.default_rng(seed))
            assert plain == calm
    # any lead asks for a donor strictly better
    bottom = next(
        m for m in population if Truncation(0.25).select(population, m, np.random.default_rng(0))
    )
    assert (
        Calm(Truncation(0.25), lead=0.1).select(population, bottom, np.random.default_rng(0))
        is None
    )


def test_explore_own_when_no_donor_is_clearly_better() -> None:
    population = pop([0.0], [0.1], [0.2], [0.3])
    rng = np.random.default_rng
    # the spread is 0.15 / 1.349: a lead of 0.3 is under 3 spreads
    calm = Calm(Truncation(0.25), lead=3, explore_own=True)
    verdict = calm.verdict(population, population[0], rng(0))
    assert verdict.donor is None
    assert verdict.explore_own
    assert verdict.judgement is not None
    assert verdict.judgement["clear"] is False
    assert verdict.judgement["donor"] == 3
    # a member the rule leaves alone does not explore
    assert calm.verdict(population, population[3], rng(0)) == Verdict(None)
    assert calm.never_selects(population, population[3])
    # without explore_own it trains on
    quiet = Calm(Truncation(0.25), lead=3).verdict(population, population[0], rng(0))
    assert quiet.donor is None
    assert not quiet.explore_own
    # a donor clearly better is copied, not explored from
    gap = pop([0.0], [0.1], [0.2], [10.0])
    copied = calm.verdict(gap, gap[0], rng(0))
    assert copied.donor is gap[3]
    assert not copied.explore_own


def policy_of(calm: Calm, explore: gp.Perturb | None = None) -> gp.Policy:
    space = gp.Space(x=gp.Float(0.0, 100.0))
    return gp.Policy(
        space=space, ready=gp.Every(1), exploit=calm, explore=explore, budget=gp.Budget(steps=100)
    )


def test_the_policy_explores_from_own_weights_and_the_decision_carries_the_judgement():
    population = pop([0.0], [0.1], [0.2], [0.3])
    member = dataclasses.replace(population[0], hparams={"x": 50.0})
    policy = policy_of(Calm(Truncation(0.25), lead=3, explore_own=True), gp.Perturb())
    decided = policy.decide(population, member, np.random.default_rng(0))
    assert isinstance(decided, decision.Explore)
    assert decided.hparams["x"] in (40.0, 60.0)  # perturbed from its own value, not a donor's
    assert decided.judgement is not None
    assert decided.judgement["clear"] is False
    gap = pop([0.0], [0.1], [0.2], [10.0])
    copied = policy.decide(gap, gap[0], np.random.default_rng(0))
    assert isinstance(copied, decision.Exploit)
    assert copied.donor == 3
    assert copied.judgement is not None
    assert copied.judgement["clear"] is True


def test_explore_own_needs_an_explore_rule() -> None:
    with pytest.raises(InvalidArgumentError, match="explore_own=True"):
        policy_of(Calm(Truncation(), explore_own=True), None)


def test_the_events_of_a_run_carry_the_judgement() -> None:
    def objective(member: gp.Member) -> None:
        x = 0.0 if (state := member.restore()) is None else float(state)
        while member.running:
            x += float(member.hparams["lr"])
            member.report(score=x, state=x)

    result = gp.run(
        objective,
        gp.Space(lr=gp.Float(1e-3, 0.5, log=True)),
        metric="score",
        population=4,
        ready=gp.Every(2),
        budget=gp.Budget(steps=8),
        exploit=Calm(Truncation(0.25), lead=0.5, explore_own=True),
        explore=gp.Perturb(),
        seed=1,
    )
    judged = [e for e in result.events if e.kind in ("exploit", "explore")]
    assert judged
    for event in judged:
        assert event.data["greedy"]["clear"] is (event.kind == "exploit")
        json.dumps(event.data["greedy"])


def test_a_failed_member_copies_unless_the_lead_is_infinite() -> None:
    failed = dataclasses.replace(mk(0, [0.5, 0.4]), failures=1)
    population = Population((failed, mk(1, [1.0]), mk(2, [2.0]), mk(3, [3.0])))
    rng = np.random.default_rng
    calm = Calm(Truncation(0.25), lead=3, lead_of_score=0.5)
    verdict = calm.verdict(population, failed, rng(0))
    assert verdict.donor is population[3]
    assert verdict.judgement is not None
    assert verdict.judgement["member_score"] is None
    assert verdict.judgement["lead"] is None
    never = Calm(Truncation(0.25), lead=math.inf, explore_own=True)
    assert never.verdict(population, failed, rng(0)).explore_own
    assert never.judge(population, failed, population[3])["spread_bar"] is None


def test_the_wrapper_draws_nothing_of_its_own() -> None:
    population = synthetic(3, SAME)
    for rule in (Truncation(0.2), Tournament()):
        calm = Calm(rule, lead=1, smoothing=BestOf(3))
        seen = calm.smoothed(population)
        for member in population:
            a, b = np.random.default_rng(9), np.random.default_rng(9)
            calm.select(population, member, a)
            rule.select(seen, seen[member.id], b)
            assert a.bit_generator.state == b.bit_generator.state


def test_a_seeded_serial_run_with_calm_is_reproducible() -> None:
    def objective(member: gp.Member) -> None:
        x = 0.0 if (state := member.restore()) is None else float(state)
        while member.running:
            x += float(member.hparams["lr"]) + 0.1 * float(member.rng.standard_normal())
            member.report(score=x, state=x)

    def run() -> gp.Result:
        return gp.run(
            objective,
            gp.Space(lr=gp.Float(1e-3, 0.5, log=True)),
            metric="score",
            population=6,
            ready=gp.Every(2),
            budget=gp.Budget(steps=16),
            exploit=Calm(Truncation(0.34), lead=0.5, smoothing=MovingAverage(0.5)),
            explore=gp.Perturb(),
            seed=5,
            clock=gp.ManualClock(tick=0.001),
        )

    first, second = run(), run()
    events = [
        [(e.kind, e.member, e.step, sorted(e.data.items())) for e in r.events]
        for r in (first, second)
    ]
    assert events[0] == events[1]
    assert any(e.kind == "exploit" for e in first.events)


# -- properties -------------------------------------------------------------------------------

finite = st.floats(-1e6, 1e6, allow_nan=False)
curves = st.lists(st.lists(finite, min_size=1, max_size=6), min_size=2, max_size=8)
smoothings = st.one_of(
    st.none(),
    st.integers(1, 16).map(BestOf),
    st.floats(0.01, 1.0).map(MovingAverage),
)
rules = st.sampled_from([Truncation(0.2), Truncation(0.5), Tournament()])


def by_hand(population: Population, smoothing: Smoothing | None) -> Population:
    """The smoothed view, made here from :meth:`smooth` alone."""
    if smoothing is None:
        return population
    views = []
    for m in population:
        values = smoothing.smooth([s for _, s in m.curve], mode=population.mode)
        curve = tuple((at, v) for (at, _), v in zip(m.curve, values, strict=True))
        views.append(dataclasses.replace(m, curve=curve))
    return Population(tuple(views), population.mode)


@settings(max_examples=60, deadline=None)
@given(
    curves=curves,
    mode=st.sampled_from(["max", "min"]),
    rule=rules,
    smoothing=smoothings,
    lead=st.floats(0, 5),
    lead_of_score=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_wrapper_only_picks_what_the_rule_picks_on_the_smoothed_view(
    curves: list[list[float]],
    mode: Mode,
    rule: Select,
    smoothing: Smoothing | None,
    lead: float,
    lead_of_score: float,
    seed: int,
) -> None:
    population = pop(*curves, mode=mode)
    calm = Calm(rule, lead=lead, lead_of_score=lead_of_score, smoothing=smoothing)
    seen = by_hand(population, smoothing)
    for member in population:
        donor = calm.select(population, member, np.random.default_rng(seed))
        wanted = rule.select(seen, seen[member.id], np.random.default_rng(seed))
        if donor is not None:
            assert wanted is not None
            assert donor.id == wanted.id
            assert donor is population[donor.id]
            judged = calm.judge(population, member, donor)
            assert judged["clear"] is True
        if calm.never_selects(population, member):
            assert donor is None
        if lead == 0 and lead_of_score == 0 and wanted is not None:
            assert donor is not None
            assert donor.id == wanted.id


@settings(max_examples=40, deadline=None)
@given(
    curves=curves,
    rule=rules,
    smoothing=smoothings,
    which=st.sampled_from(["lead", "lead_of_score"]),
    seed=st.integers(0, 2**32 - 1),
    failed=st.booleans(),
)
def test_an_infinite_lead_never_exploits(
    curves: list[list[float]],
    rule: Select,
    smoothing: Smoothing | None,
    which: str,
    seed: int,
    failed: bool,
) -> None:
    population = pop(*curves)
    if failed:
        population = population.with_members([dataclasses.replace(population[0], failures=1)])
    settings_: dict[str, Any] = {which: math.inf, "smoothing": smoothing}
    calm = Calm(rule, **settings_)
    for member in population:
        assert calm.never_selects(population, member)
        assert calm.select(population, member, np.random.default_rng(seed)) is None


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Calm(Truncation(), lead=-1), "'lead' parameter of Calm must be a number >= 0"),
        (lambda: Calm(Truncation(), lead=math.nan), "Got nan instead"),
        (lambda: Calm(Truncation(), lead="0.5"), "Got '0.5' instead"),  # type: ignore[arg-type]
        (lambda: Calm(Truncation(), lead=True), "Got True instead"),
        (lambda: Calm(Truncation(), lead_of_score=-0.1), "Fix: DexPBT uses 0.05"),
        (lambda: Calm(Truncation, lead=1), "'rule' parameter of Calm must be a selection rule"),  # type: ignore[arg-type]
        (lambda: Calm(None), "Got None instead"),  # type: ignore[arg-type]
        (lambda: Calm(Calm(Truncation())), "give one Calm all of its settings"),
        (lambda: Calm(Truncation(), smoothing=3), "BestOf(k), MovingAverage(alpha) or None"),  # type: ignore[arg-type]
        (lambda: Calm(Truncation(), explore_own=1), "must be True or False. Got 1"),  # type: ignore[arg-type]
        (lambda: BestOf(0), "'k' parameter of BestOf must be an integer in [1, 16]. Got 0"),
        (lambda: BestOf(17), "keeps its latest 16 ready rounds"),
        (lambda: BestOf(2.0), "Got 2.0 instead"),  # type: ignore[arg-type]
        (lambda: BestOf(True), "Got True instead"),
        (
            lambda: MovingAverage(0),
            "'alpha' parameter of MovingAverage must be a finite number in (0, 1]",
        ),
        (lambda: MovingAverage(1.5), "Got 1.5 instead"),
        (lambda: MovingAverage(math.nan), "Got nan instead"),
        (lambda: MovingAverage("0.3"), "Got '0.3' instead"),  # type: ignore[arg-type]
    ],
)
def test_validation(make: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        make()
    assert message in str(raised.value)


def test_values_kept_and_shown() -> None:
    calm = Calm(
        Tournament(),
        lead=np.float64(0.5),
        lead_of_score=1,
        smoothing=BestOf(np.int64(3)),  # type: ignore[arg-type]
    )
    assert (calm.lead, calm.lead_of_score, calm.smoothing) == (0.5, 1.0, BestOf(3))
    assert type(calm.lead_of_score) is float
    assert isinstance(calm.smoothing, BestOf)
    assert type(calm.smoothing.k) is int
    assert repr(calm) == (
        "Calm(Tournament(), lead=0.5, lead_of_score=1.0, smoothing=BestOf(k=3), explore_own=False)"
    )
    assert Calm(Truncation(), lead=10**400).lead == math.inf
    assert isinstance(calm, Select)
    pickle.loads(pickle.dumps(calm))
