"""Exploit rules: Truncation, Tournament and WelchTTest choose donors as the paper says."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from genepool import InvalidArgumentError
from genepool.member import FAILED, CheckpointRef, MemberView, Mode, Population
from genepool.policy.select import Tournament, Truncation, WelchTTest, truncation_split

SEEDS = range(400)


def mk(
    i: int,
    score: float | None,
    *,
    failures: int = 0,
    status: Any = "active",
    borrowed: bool = False,
    checkpoint: bool = True,
    recent: tuple[float, ...] = (),
) -> MemberView:
    """A member with its own checkpoint (or a borrowed one / none) carrying ``score``."""
    ckpt = None
    if checkpoint:
        owner = i + 1000 if borrowed else i
        ckpt = CheckpointRef(f"c{i}", owner, 4, 4.0, score, {"x": i})
    return MemberView(
        id=i,
        hparams={"x": i},
        checkpoint=ckpt,
        score=score,
        failures=failures,
        status=status,
        recent=recent,
    )


def pop(*members: MemberView, mode: Mode = "max") -> Population:
    return Population(tuple(members), mode=mode)


def scored(scores: list[float], mode: Mode = "max") -> Population:
    return pop(*(mk(i, s) for i, s in enumerate(scores)), mode=mode)


def donors_over_seeds(rule: Any, population: Population, member_id: int) -> Counter[int | None]:
    counts: Counter[int | None] = Counter()
    member = population[member_id]
    for seed in SEEDS:
        donor = rule.select(population, member, np.random.default_rng(seed))
        counts[None if donor is None else donor.id] += 1
    return counts


# -- truncation_split ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "fraction", "k"),
    [
        (0, 0.2, 0),
        (1, 0.2, 0),
        (2, 0.2, 1),
        (2, 0.5, 1),
        (3, 0.5, 1),
        (4, 0.5, 2),
        (5, 0.2, 1),
        (6, 0.2, 2),
        (10, 0.2, 2),
        (11, 0.2, 3),
        (10, 0.5, 5),
        (7, 0.3, 3),
        (9, 0.45, 4),
        (100, 0.01, 1),
        (1000, 1e-9, 1),
    ],
)
def test_truncation_split_rounds_up_without_overlap(n, fraction, k):
    assert truncation_split(n, fraction) == k


@given(
    n=st.integers(min_value=2, max_value=10_000),
    fraction=st.floats(min_value=0.0, max_value=0.5, exclude_min=True),
)
def test_truncation_split_property(n, fraction):
    k = truncation_split(n, fraction)
    assert k >= 1
    assert 2 * k <= n
    # it rounds up: never fewer than ceil(fraction * n) unless the halves would overlap
    assert k >= min(n // 2, math.ceil(fraction * n - 1e-6))
    assert k <= max(1, math.ceil(fraction * n))


# -- Truncation ----------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0, 0.0, -0.1, 0.51, 1, 1.0, True, False, "0.2", None])
def test_truncation_invalid_fraction(fraction):
    with pytest.raises(InvalidArgumentError, match="fraction"):
        Truncation(fraction)


@pytest.mark.parametrize("fraction", [float("nan"), float("inf")])
def test_truncation_non_finite_fraction(fraction):
    with pytest.raises(InvalidArgumentError):
        Truncation(fraction)


@pytest.mark.parametrize("fraction", [1e-6, 0.2, 0.5])
def test_truncation_valid_fraction(fraction):
    assert Truncation(fraction).fraction == fraction


def test_truncation_population_of_two_worse_copies_better():
    population = scored([0.3, 0.7])
    rule = Truncation(0.2)
    assert donors_over_seeds(rule, population, 0) == Counter({1: len(SEEDS)})
    assert donors_over_seeds(rule, population, 1) == Counter({None: len(SEEDS)})


def test_truncation_bottom_copies_uniform_top_and_others_never_copy():
    # ids are not in score order, so an implementation ranking by id would fail
    scores = [5.0, 0.0, 9.0, 3.0, 8.0, 1.0, 4.0, 7.0, 2.0, 6.0]
    population = scored(scores)
    rule = Truncation(0.2)  # k = 2: bottom {1 (0.0), 5 (1.0)}, top {4 (8.0), 2 (9.0)}
    for bottom in (1, 5):
        counts = donors_over_seeds(rule, population, bottom)
        assert set(counts) == {2, 4}
        for top in (2, 4):
            assert 150 <= counts[top] <= 250, counts
    for other in (0, 2, 3, 4, 6, 7, 8, 9):
        assert donors_over_seeds(rule, population, other) == Counter({None: len(SEEDS)})


def test_truncation_larger_fraction():
    population = scored([float(s) for s in range(10)])
    rule = Truncation(0.5)  # k = 5
    for member in range(5):
        counts = donors_over_seeds(rule, population, member)
        assert set(counts) == {5, 6, 7, 8, 9}
    for member in range(5, 10):
        assert donors_over_seeds(rule, population, member) == Counter({None: len(SEEDS)})


def test_truncation_min_mode():
    population = scored([float(s) for s in range(10)], mode="min")
    rule = Truncation(0.2)
    for worst in (8, 9):
        assert set(donors_over_seeds(rule, population, worst)) == {0, 1}
    for member in range(8):
        assert donors_over_seeds(rule, population, member) == Counter({None: len(SEEDS)})


def test_truncation_ties_in_bottom_are_broken_at_random_and_the_same_within_a_round():
    # k = 1: each member is the bottom one in about 1/5 of the rounds, and in a round
    # exactly one is (every decision of a round orders the ties the same way)
    rule = Truncation(0.2)
    copied: Counter[int] = Counter()
    for round_ in range(400):
        population = pop(*(replace(mk(i, 1.0), ready_count=round_) for i in range(5)))
        rng = np.random.default_rng(round_)
        exploiting = [m for m in population if rule.select(population, m, rng) is not None]
        assert len(exploiting) == 1, round_
        copied[exploiting[0].id] += 1
    assert all(40 <= copied[member] <= 130 for member in range(5)), copied


def test_truncation_ties_at_the_top_are_broken_at_random():
    population = scored([0.0, 1.0, 1.0, 1.0])  # k = 1: the top one is any of 1, 2, 3
    counts = donors_over_seeds(Truncation(0.2), population, 0)
    assert set(counts) == {1, 2, 3}
    for top in (1, 2, 3):
        assert 90 <= counts[top] <= 175, counts


@pytest.mark.parametrize(
    "failed",
    [
        mk(3, 100.0, failures=1),
        mk(3, 100.0, status=FAILED),
    ],
)
def test_truncation_failed_member_ranks_worst_and_copies(failed):
    population = pop(mk(0, 0.0), mk(1, 1.0), mk(2, 2.0), failed)
    counts = donors_over_seeds(Truncation(0.2), population, 3)
    assert set(counts) == {2}


def test_truncation_unscored_member_ranks_worst_and_copies():
    population = pop(mk(0, 0.0), mk(1, 1.0), mk(2, 2.0), mk(3, None, checkpoint=False))
    assert set(donors_over_seeds(Truncation(0.2), population, 3)) == {2}


INELIGIBLE = [
    mk(10, 100.0, borrowed=True),
    mk(11, 100.0, checkpoint=False),
    mk(12, None),
    mk(13, float("nan")),
    mk(14, float("inf")),
    mk(15, 100.0, failures=1),
    mk(16, 100.0, status=FAILED),
]


def test_truncation_never_picks_an_ineligible_donor():
    population = pop(mk(0, 0.0), mk(1, 1.0), mk(2, 2.0), *INELIGIBLE)
    for fraction in (0.2, 0.5):
        counts = donors_over_seeds(Truncation(fraction), population, 0)
        assert set(counts) == {2}, counts


def test_truncation_no_eligible_donor_returns_none():
    population = pop(mk(0, 0.0), *INELIGIBLE)
    assert donors_over_seeds(Truncation(0.5), population, 0) == Counter({None: len(SEEDS)})


member_spec = st.tuples(
    st.one_of(st.none(), st.integers(-3, 3).map(float)),  # score: few values, many ties
    st.sampled_from(["ok", "ok", "ok", "failed", "borrowed", "no-checkpoint"]),
)


def build(specs: list[tuple[float | None, str]], mode: Mode) -> Population:
    members = []
    for i, (score, kind) in enumerate(specs):
        members.append(
            mk(
                i,
                score,
                failures=1 if kind == "failed" else 0,
                borrowed=kind == "borrowed",
                checkpoint=kind != "no-checkpoint",
            )
        )
    return Population(tuple(members), mode=mode)


@given(
    specs=st.lists(member_spec, min_size=2, max_size=25),
    fraction=st.floats(min_value=0.0, max_value=0.5, exclude_min=True),
    mode=st.sampled_from(["max", "min"]),
    index=st.integers(min_value=0),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_truncation_select_property(specs, fraction, mode, index, seed):
    population = build(specs, mode)
    member = population.members[index % len(population)]
    donor = Truncation(fraction).select(population, member, np.random.default_rng(seed))

    # every member with a score of its own ranks, donor or not (rank_value)
    pool = [*population.ranked(exclude=member.id), member]
    value = population.rank_value
    fits = sorted(value(m) for m in pool)
    n = len(pool)
    k = truncation_split(n, fraction)
    mine = value(member)
    if donor is None:
        # a member strictly inside the bottom group copies, if the top has a donor
        top_can_donate = any(m.can_donate and value(m) >= fits[n - k] for m in pool if k)
        assert n < 2 or mine >= fits[k] or not top_can_donate
        return
    assert donor.id != member.id
    assert donor.can_donate
    assert value(donor) >= mine
    # the member was in the bottom group, the donor in the top group (never the bottom)
    assert mine <= fits[k - 1]
    assert value(donor) >= fits[n - k]


@given(
    specs=st.lists(member_spec, min_size=1, max_size=25),
    fraction=st.floats(min_value=0.0, max_value=0.5, exclude_min=True),
    mode=st.sampled_from(["max", "min"]),
    index=st.integers(min_value=0),
)
def test_truncation_never_selects_exactly_when_no_draw_would(specs, fraction, mode, index):
    population = build(specs, mode)
    member = population.members[index % len(population)]
    rule = Truncation(fraction)
    picks = set()
    for round_ in range(400):  # ties are ordered anew each round
        at = replace(member, ready_count=round_)
        pick = rule.select(population, at, np.random.default_rng(round_))
        if rule.never_selects(population, at):
            assert pick is None
        picks.add(None if pick is None else pick.id)
    value = population.rank_value
    if sum(value(m) < value(member) for m in population.ranked(exclude=member.id)) >= (
        truncation_split(len(population.ranked(exclude=member.id)) + 1, fraction) or 1
    ):
        assert picks == {None}  # strictly above the bottom: never, in any round
        return
    pool = [*population.ranked(exclude=member.id), member]
    fits = sorted(value(m) for m in pool)
    k = truncation_split(len(pool), fraction)
    if k == 0:
        assert picks == {None}
        return
    top = [m for m in pool if m is not member and m.can_donate and value(m) >= fits[-k]]
    if top:
        # some order of the ties puts it in the bottom, at least 1 in 25 of them for these
        # sizes: one of 400 rounds does (but for a chance below 1e-7)
        assert picks != {None}


def test_the_base_rule_always_asks():
    population = scored([1.0, 2.0, 3.0])
    assert not Tournament().never_selects(population, population[2])


# -- Tournament ----------------------------------------------------------------------------


def test_tournament_copies_only_strictly_better_uniformly():
    population = pop(mk(0, 0.0), mk(1, 1.0), mk(2, 2.0), mk(3, 3.0), *INELIGIBLE)
    rule = Tournament()
    worst = donors_over_seeds(rule, population, 0)
    assert set(worst) == {1, 2, 3}
    for other in (1, 2, 3):
        assert 95 <= worst[other] <= 175, worst
    # member 1 meets 0 (worse: no copy), 2 or 3 (better: copy), each a third of the time
    middle = donors_over_seeds(rule, population, 1)
    assert set(middle) == {None, 2, 3}
    for key in (None, 2, 3):
        assert 95 <= middle[key] <= 175, middle
    assert donors_over_seeds(rule, population, 3) == Counter({None: len(SEEDS)})


def test_tournament_never_copies_an_equal():
    population = scored([1.0, 1.0, 1.0])
    for member in range(3):
        assert donors_over_seeds(Tournament(), population, member) == Counter({None: len(SEEDS)})


def test_tournament_min_mode():
    population = scored([0.0, 1.0], mode="min")
    assert donors_over_seeds(Tournament(), population, 1) == Counter({0: len(SEEDS)})
    assert donors_over_seeds(Tournament(), population, 0) == Counter({None: len(SEEDS)})


def test_tournament_failed_member_copies_anyone_eligible():
    population = pop(mk(0, 100.0, failures=1), mk(1, 0.0), mk(2, -5.0), *INELIGIBLE)
    counts = donors_over_seeds(Tournament(), population, 0)
    assert set(counts) == {1, 2}


def test_tournament_no_eligible_other():
    population = pop(mk(0, 0.0), *INELIGIBLE)
    assert donors_over_seeds(Tournament(), population, 0) == Counter({None: len(SEEDS)})


# -- WelchTTest ----------------------------------------------------------------------------

LOW = (1.04, 0.96, 1.19, 1.03, 0.84)
HIGH = (2.0, 2.1, 1.9, 2.05, 1.95)
SLIGHTLY_HIGHER = (1.0, 1.3, 0.8, 1.2, 0.9)  # mean higher than LOW, not significant
BORDERLINE = (1.56, 1.84, 1.73, 1.24, 1.07)  # 0.01 < p < 0.05 against LOW


def welch_pop(mine, theirs, mode: Mode = "max") -> Population:
    return pop(
        mk(0, mine[-1] if mine else 0.0, recent=tuple(mine)),
        mk(1, theirs[-1], recent=tuple(theirs)),
        mode=mode,
    )


def p_value(theirs, mine) -> float:
    return float(stats.ttest_ind(theirs, mine, equal_var=False).pvalue)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"window": 1}, "window"),
        ({"window": 0}, "window"),
        ({"window": True}, "window"),
        ({"window": 2.0}, "window"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": 1}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": True}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"min_samples": 1}, "min_samples"),
        ({"window": 5, "min_samples": 6}, "min_samples"),
        ({"min_samples": True}, "min_samples"),
    ],
)
def test_welch_invalid_arguments(kwargs, name):
    with pytest.raises(InvalidArgumentError, match=name):
        WelchTTest(**kwargs)


def test_welch_copies_when_significantly_better():
    assert p_value(HIGH, LOW) < 0.05
    population = welch_pop(LOW, HIGH)
    assert donors_over_seeds(WelchTTest(5), population, 0) == Counter({1: len(SEEDS)})
    # the better member never copies the worse
    assert donors_over_seeds(WelchTTest(5), population, 1) == Counter({None: len(SEEDS)})


def test_welch_no_copy_when_better_mean_is_not_significant():
    assert np.mean(SLIGHTLY_HIGHER) > np.mean(LOW)
    assert p_value(SLIGHTLY_HIGHER, LOW) > 0.05
    population = welch_pop(LOW, SLIGHTLY_HIGHER)
    assert donors_over_seeds(WelchTTest(5), population, 0) == Counter({None: len(SEEDS)})


def test_welch_uses_alpha():
    p = p_value(BORDERLINE, LOW)
    assert 0.01 < p < 0.05
    population = welch_pop(LOW, BORDERLINE)
    rng = np.random.default_rng(0)
    donor = WelchTTest(5, alpha=0.05).select(population, population[0], rng)
    assert donor is not None
    assert donor.id == 1
    assert WelchTTest(5, alpha=0.01).select(population, population[0], rng) is None


def test_welch_min_mode():
    # lower is better: HIGH copies LOW in min mode, never in max mode
    assert donors_over_seeds(WelchTTest(5), welch_pop(HIGH, LOW, mode="min"), 0) == Counter(
        {1: len(SEEDS)}
    )
    assert donors_over_seeds(WelchTTest(5), welch_pop(HIGH, LOW), 0) == Counter({None: len(SEEDS)})
    assert donors_over_seeds(WelchTTest(5), welch_pop(LOW, HIGH, mode="min"), 0) == Counter(
        {None: len(SEEDS)}
    )


def test_welch_uses_only_the_last_window_scores():
    rule = WelchTTest(5)
    rng = np.random.default_rng(0)
    # old scores would make the member look far better: ignored
    population = welch_pop((50.0,) * 10 + LOW, HIGH)
    assert rule.select(population, population[0], rng) is not None
    # old scores would make the other look far better: ignored
    population = welch_pop(LOW, (50.0,) * 10 + SLIGHTLY_HIGHER)
    assert rule.select(population, population[0], rng) is None
    # old scores of the other would make its mean worse: ignored
    population = welch_pop(LOW, (-50.0,) * 10 + HIGH)
    assert rule.select(population, population[0], rng) is not None
    # a longer window takes the old scores in: now the member looks better
    population = welch_pop((50.0,) * 10 + LOW, HIGH)
    assert WelchTTest(15).select(population, population[0], rng) is None


def test_welch_not_enough_samples():
    rng = np.random.default_rng(0)
    rule = WelchTTest(5, min_samples=3)
    population = welch_pop(LOW, HIGH[:2])
    assert rule.select(population, population[0], rng) is None
    population = welch_pop(LOW[:2], HIGH)
    assert rule.select(population, population[0], rng) is None
    population = welch_pop(LOW[:3], HIGH[:3])
    assert p_value(HIGH[:3], LOW[:3]) < 0.05
    assert rule.select(population, population[0], rng) is not None
    population = welch_pop((), HIGH)
    assert WelchTTest(5).select(population, population[0], rng) is None


def test_welch_failed_member_copies_without_a_test():
    population = pop(mk(0, 100.0, failures=1, recent=HIGH), mk(1, 0.0, recent=(0.0,)), *INELIGIBLE)
    assert donors_over_seeds(WelchTTest(5), population, 0) == Counter({1: len(SEEDS)})


def test_welch_never_picks_an_ineligible_donor():
    ineligible = [
        MemberView(
            id=m.id,
            hparams=m.hparams,
            checkpoint=m.checkpoint,
            score=m.score,
            failures=m.failures,
            status=m.status,
            recent=HIGH,
        )
        for m in INELIGIBLE
    ]
    population = pop(mk(0, 0.0, recent=LOW), *ineligible)
    assert donors_over_seeds(WelchTTest(5), population, 0) == Counter({None: len(SEEDS)})


def test_welch_chooses_the_other_uniformly():
    population = pop(mk(0, 1.0, recent=LOW), mk(1, 2.0, recent=HIGH), mk(2, 2.0, recent=HIGH))
    counts = donors_over_seeds(WelchTTest(5), population, 0)
    assert set(counts) == {1, 2}
    assert 150 <= counts[1] <= 250


def test_welch_constant_samples_copy_without_warnings():
    """Saturated scores (both samples constant) copy the better one, quietly."""
    population = welch_pop((0.1, 0.1, 0.1), (0.2, 0.2, 0.2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        donor = WelchTTest(3).select(population, population[0], np.random.default_rng(0))
    assert donor is not None
    assert donor.id == 1


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_welch_constant_samples_decide_by_the_means():
    rng = np.random.default_rng(0)
    population = welch_pop((1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    donor = WelchTTest(3).select(population, population[0], rng)
    assert donor is not None
    assert donor.id == 1
    assert WelchTTest(3).select(population, population[1], rng) is None
    population = welch_pop((1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    assert WelchTTest(3).select(population, population[0], rng) is None


def curved(i: int, curve: tuple[tuple[float, float], ...]) -> MemberView:
    """A member with its own checkpoint at its latest ready, and that curve."""
    counter, score = curve[-1]
    ckpt = CheckpointRef(f"c{i}", i, int(counter), counter, score, {"x": i})
    return MemberView(id=i, hparams={"x": i}, checkpoint=ckpt, score=score, curve=curve)


def test_aligned_members_are_compared_at_the_point_both_reached():
    # scores rise with training; member 1 is a round ahead of member 0, member 2 behind
    ahead = curved(1, ((4.0, 0.5), (8.0, 0.9)))
    me = curved(0, ((4.0, 0.6),))
    behind_me = curved(2, ((4.0, 0.55), (8.0, 0.7), (12.0, 0.8)))
    latest = pop(me, ahead, behind_me)
    assert latest.compared(ahead, me) == (0.9, 0.6)  # its latest: it looks better
    aligned = Population(latest.members, aligned=True)
    assert aligned.compared(ahead, me) == (0.5, 0.6)  # at 4 it was worse
    assert aligned.compared(behind_me, me) == (0.55, 0.6)
    me_later = curved(0, ((4.0, 0.6), (8.0, 0.65), (12.0, 0.95)))
    assert aligned.compared(ahead, me_later) == (0.9, 0.65)  # at 8, where both have been
    rule = Truncation(0.5)  # k = 1 of 3: the member is bottom by latest, not aligned
    assert rule.select(latest, me, np.random.default_rng(0)) is not None
    assert rule.select(aligned, me, np.random.default_rng(0)) is None
    assert rule.never_selects(aligned, me)
