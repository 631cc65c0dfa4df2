"""Tests of PB2's and PB2-Mix's decision (genepool.policy._pb2.suggest): it prefers what the
improvements reward, keeps the space's types and bounds, spreads a batch, forgets old
regimes, is deterministic for a seed and refuses bad inputs with clear messages."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import genepool as gp
from genepool.policy._pb2 import Row, _from_unit, _to_unit, beta, suggest
from genepool.policy._pb2_exp3 import draw_arm
from tests.test_space import check_config, choice_domains, float_domains, int_domains, spaces

LOG_LR = gp.Space(lr=gp.Float(1e-4, 1.0, log=True))


def peak(hp: Mapping[str, Any]) -> float:
    """Improvement peaked at lr = 0.1 (in log space)."""
    return math.exp(-((math.log10(hp["lr"]) + 1.0) ** 2) / 0.3)


def window(
    space: gp.Space,
    gain: Callable[[Mapping[str, Any]], float],
    *,
    n: int,
    per_round: int = 10,
    noise: float = 0.05,
    seed: int = 0,
    start: float = 0.0,
) -> list[Row]:
    """``n`` rows of values drawn from the space, ``per_round`` at each time."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        hp = space.sample(rng)
        rows.append(Row(start + i // per_round, hp, gain(hp) + noise * rng.standard_normal()))
    return rows


def unit_lr(lr: float) -> float:
    return (math.log10(lr) + 4.0) / 4.0


# --------------------------------------------------------------------------- preference


def test_pb2_prefers_the_region_the_improvements_reward():
    near = 0
    for seed in range(8):
        rows = window(LOG_LR, peak, n=100, seed=seed)
        hp, info = suggest(LOG_LR, rows, now=10.0, rng=np.random.default_rng(seed))
        assert info["rules"] == {"lr": "gp"}
        near += abs(math.log10(hp["lr"]) + 1.0) < 0.25
    # a random draw lands within a quarter decade of 0.1 with probability 1/8
    assert near >= 7


def test_categorical_only_spaces_use_the_bandit():
    space = gp.Space(opt=gp.Choice(["adam", "sgd", "rms"]), seed=7)
    rows = window(space, lambda hp: float(hp["opt"] == "sgd"), n=160, per_round=8)
    picks = Counter(
        suggest(space, rows, now=20.0, rng=np.random.default_rng(s))[0]["opt"] for s in range(60)
    )
    assert picks["sgd"] > 30  # a random draw: 20 of 60
    _, info = suggest(space, rows, now=20.0, rng=np.random.default_rng(0))
    assert info["rules"] == {"opt": "exp3", "seed": "fixed"}
    assert info["mean"] is None
    assert info["kernel"] is None
    (bandit,) = info["exp3"]
    assert bandit["names"] == ["opt"]
    assert max(bandit["probabilities"]) == bandit["probabilities"][1]


def test_mixed_spaces_condition_the_gp_on_the_drawn_category():
    space = gp.Space(lr=gp.Float(1e-4, 1.0, log=True), opt=gp.Choice(["adam", "sgd"]))

    def gain(hp: Mapping[str, Any]) -> float:
        return peak(hp) + (0.5 if hp["opt"] == "sgd" else 0.0)

    rows = window(space, gain, n=120, per_round=8)
    results = [suggest(space, rows, now=15.0, rng=np.random.default_rng(s)) for s in range(6)]
    for hp, info in results:
        assert info["rules"] == {"lr": "gp", "opt": "exp3"}
        assert abs(math.log10(hp["lr"]) + 1.0) < 0.4
        assert info["kernel"]["category_scale"] > 0
        assert info["std"] >= 0
    assert Counter(hp["opt"] for hp, _ in results)["sgd"] >= 3


def test_integers_and_ordered_choices_are_modelled_on_their_scale():
    space = gp.Space(
        layers=gp.Int(1, 9), batch=gp.Choice([16, 32, 64, 128, 256], ordered=True), name="x"
    )

    def gain(hp: Mapping[str, Any]) -> float:
        return float(-abs(hp["layers"] - 7) - abs(hp["batch"] - 64) / 32)

    rows = window(space, gain, n=120, noise=0.1)
    hp, info = suggest(space, rows, now=12.0, rng=np.random.default_rng(1))
    assert info["rules"] == {"layers": "gp", "batch": "gp", "name": "fixed"}
    assert type(hp["layers"]) is int
    assert abs(hp["layers"] - 7) <= 1
    assert hp["batch"] in (32, 64, 128)
    assert hp["name"] == "x"


# --------------------------------------------------------------------------- types and bounds


@st.composite
def space_and_rows(draw: st.DrawFn) -> tuple[gp.Space, list[Row], int]:
    space = draw(spaces())
    assume(space.mutable_names)
    seed = draw(st.integers(0, 2**16))
    n = draw(st.integers(0, 24))
    per_round = draw(st.integers(1, 6))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e6]))
    rng = np.random.default_rng(seed)
    rows = [
        Row(
            time=scale * (i // per_round),
            hparams=space.sample(rng),
            improvement=float(rng.standard_normal()) if i % 7 else float("nan"),
        )
        for i in range(n)
    ]
    return space, rows, seed


@settings(max_examples=25, deadline=None)
@given(space_and_rows())
def test_suggestions_stay_inside_the_space_with_its_types(case: tuple[gp.Space, list[Row], int]):
    space, rows, seed = case
    rng = np.random.default_rng(seed)
    pending = [space.sample(rng) for _ in range(seed % 3)]
    now = rows[-1].time if rows else 0.0
    hp, info = suggest(space, rows, now=now, rng=rng, pending=pending)
    check_config(space, hp)
    assert space.validate(hp) == hp
    for name, domain in space.items():
        expected = {"gp", "exp3", "random"} if domain.mutable else {"fixed"}
        assert info["rules"][name] in expected
    assert info["dropped"] == sum(1 for r in rows if math.isnan(r.improvement))
    json.dumps(info)  # plain data, ready for an event


@settings(max_examples=60, deadline=None)
@given(st.one_of(int_domains(), choice_domains(), float_domains()), st.integers(0, 2**16))
def test_values_round_trip_through_the_unit_scale(domain: gp.Domain, seed: int):
    value = domain.sample(np.random.default_rng(seed))
    unit = _to_unit(domain, value)
    assert 0.0 <= unit <= 1.0
    back = _from_unit(domain, unit)
    assert domain.validate(back) == back
    if isinstance(domain, gp.Float):
        assert back == pytest.approx(value, rel=1e-9, abs=1e-9 * (domain.high - domain.low))
    else:
        assert back == value  # integers and options exactly


def test_many_combinations_get_a_bandit_each():
    space = gp.Space({f"c{i}": gp.Choice(list("abcde")) for i in range(3)})  # 125 combinations
    rows = window(space, lambda hp: float(hp["c0"] == "a"), n=60, per_round=6)
    hp, info = suggest(space, rows, now=10.0, rng=np.random.default_rng(0))
    assert [b["names"] for b in info["exp3"]] == [["c0"], ["c1"], ["c2"]]
    check_config(space, hp)
    small = gp.Space(a=gp.Choice([1, 2, 3]), b=gp.Choice(["x", "y"]))
    rows = window(small, lambda hp: float(hp["a"] == 2), n=60, per_round=6)
    _, info = suggest(small, rows, now=10.0, rng=np.random.default_rng(0))
    assert [b["names"] for b in info["exp3"]] == [["a", "b"]]
    assert len(info["exp3"][0]["probabilities"]) == 6


# --------------------------------------------------------------------------- batches


def spread_of(space: gp.Space, rows: list[Row], *, use_pending: bool) -> float:
    """The largest distance between 8 suggestions of one round, in the unit square."""
    points: list[list[float]] = []
    pending: list[dict[str, Any]] = []
    for i in range(8):
        hp, _ = suggest(
            space,
            rows,
            now=5.0,
            rng=np.random.default_rng(100 + i),
            pending=pending if use_pending else (),
        )
        pending.append(hp)
        points.append([unit_lr(hp["lr"]), hp["mom"]])
    a = np.array(points)
    return float(np.sqrt(((a[:, None] - a[None]) ** 2).sum(-1)).max())


def test_pending_suggestions_spread_a_batch():
    space = gp.Space(lr=gp.Float(1e-4, 1.0, log=True), mom=gp.Float(0.0, 1.0))

    def gain(hp: Mapping[str, Any]) -> float:
        return peak(hp) * math.exp(-((hp["mom"] - 0.7) ** 2) / 0.1)

    for seed in range(2):
        rows = window(space, gain, n=40, per_round=8, seed=seed)
        assert spread_of(space, rows, use_pending=False) < 0.01
        assert spread_of(space, rows, use_pending=True) > 0.2


def test_pending_categories_use_up_their_share_of_the_batch():
    space = gp.Space(opt=gp.Choice(["adam", "sgd", "rms"]))
    rows = window(space, lambda hp: float(hp["opt"] == "sgd"), n=160, per_round=8)
    alone = Counter(
        suggest(space, rows, now=20.0, rng=np.random.default_rng(s))[0]["opt"] for s in range(40)
    )
    crowded = Counter(
        suggest(space, rows, now=20.0, rng=np.random.default_rng(s), pending=[{"opt": "sgd"}] * 3)[
            0
        ]["opt"]
        for s in range(40)
    )
    assert crowded["sgd"] < alone["sgd"]


# --------------------------------------------------------------------------- time


def test_the_time_varying_kernel_forgets_an_old_regime():
    def old_gain(hp: Mapping[str, Any]) -> float:  # rewarded lr = 1e-3 long ago
        return math.exp(-((math.log10(hp["lr"]) + 3.0) ** 2) / 0.3)

    for seed in range(3):
        old = window(LOG_LR, old_gain, n=150, per_round=10, seed=seed)
        recent = window(LOG_LR, peak, n=60, per_round=10, seed=seed + 50, start=100.0)
        hp, info = suggest(LOG_LR, old + recent, now=106.0, rng=np.random.default_rng(seed))
        assert abs(math.log10(hp["lr"]) + 1.0) < 0.4, (hp, info["kernel"])
        assert info["kernel"]["epsilon"] > 1e-3  # a kernel that never forgets goes to 1e-3


def test_times_in_any_unit_work():
    for scale in (1e-6, 1.0, 1e7):
        rows = [Row(r.time * scale, r.hparams, r.improvement) for r in window(LOG_LR, peak, n=60)]
        hp, info = suggest(LOG_LR, rows, now=6 * scale, rng=np.random.default_rng(0))
        assert abs(math.log10(hp["lr"]) + 1.0) < 0.4
        assert info["fallback"] is None


# --------------------------------------------------------------------------- few rows, seeds


def test_too_few_rows_fall_back_to_a_seeded_random_draw():
    rows = window(LOG_LR, peak, n=3)
    hp, info = suggest(LOG_LR, rows, now=1.0, rng=np.random.default_rng(4))
    assert hp == LOG_LR.sample(np.random.default_rng(4))
    assert info["rules"] == {"lr": "random"}
    assert info["fallback"] == "3 rows, fewer than 4"
    same_time = window(LOG_LR, peak, n=20, per_round=20)
    assert suggest(LOG_LR, same_time, now=1.0, rng=np.random.default_rng(4))[1]["fallback"] == (
        "every row has the same time"
    )
    nans = [Row(r.time, r.hparams, float("nan")) for r in window(LOG_LR, peak, n=30)]
    _, info = suggest(LOG_LR, nans, now=3.0, rng=np.random.default_rng(4))
    assert (info["dropped"], info["rows"], info["rules"]) == (30, 0, {"lr": "random"})


def test_the_same_seed_gives_the_same_decision():
    space = gp.Space(lr=gp.Float(1e-4, 1.0, log=True), opt=gp.Choice(["a", "b", "c"]))
    rows = window(space, peak, n=50)
    pending = [space.sample(np.random.default_rng(9))]
    first = suggest(space, rows, now=5.0, rng=np.random.default_rng(3), pending=pending)
    second = suggest(space, rows, now=5.0, rng=np.random.default_rng(3), pending=pending)
    assert first == second
    others = {
        json.dumps(suggest(space, rows, now=5.0, rng=np.random.default_rng(s))[0]) for s in range(6)
    }
    assert len(others) > 1


def test_a_warm_start_reuses_the_previous_kernel():
    rows = window(LOG_LR, peak, n=100)
    _, first = suggest(LOG_LR, rows, now=10.0, rng=np.random.default_rng(0))
    more = rows + window(LOG_LR, peak, n=10, seed=5, start=10.0)
    hp, second = suggest(
        LOG_LR, more, now=11.0, rng=np.random.default_rng(0), state=first["kernel"]
    )
    assert second["kernel"]["length_scale"] == pytest.approx(
        first["kernel"]["length_scale"], rel=0.3
    )
    assert abs(math.log10(hp["lr"]) + 1.0) < 0.4


def test_beta_follows_the_schedule_and_info_reports_it():
    assert beta(0) == 0.0
    assert beta(2) == 0.0
    assert beta(1000) == pytest.approx(0.2 * math.log(400))
    _, info = suggest(LOG_LR, window(LOG_LR, peak, n=100), now=10.0, rng=np.random.default_rng(0))
    assert info["beta"] == pytest.approx(beta(100))
    assert info["mean"] == pytest.approx(1.0, abs=0.25)  # the improvement at the peak
    assert 0 <= info["std"] < 0.2


# --------------------------------------------------------------------------- the bandit


def test_the_bandit_caps_each_arm_when_plays_are_distinct():
    rng = np.random.default_rng(0)
    rounds = np.repeat(np.arange(30), 2).astype(np.int64)
    arms = rng.integers(0, 4, size=60).astype(np.int64)
    rewards = (arms == 2).astype(float)
    _, info = draw_arm(arms=arms, rounds=rounds, rewards=rewards, n_arms=4, pending=[], rng=rng)
    p = np.array(info["probabilities"])
    assert info["k"] == 2
    assert p.sum() == pytest.approx(1.0)
    assert p.max() == p[2]
    assert p.max() <= 0.5 + 1e-9  # two distinct plays a round: no arm in more than 1 of 2
    one, _ = draw_arm(arms=arms, rounds=rounds, rewards=rewards, n_arms=1, pending=[], rng=rng)
    assert one == 0


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: suggest("lr", [], now=0.0, rng=np.random.default_rng()), "a gp.Space"),  # type: ignore[arg-type]
        (
            lambda: suggest(gp.Space(a=1), [], now=0.0, rng=np.random.default_rng()),
            "at least one value to explore",
        ),
        (
            lambda: suggest(
                gp.Space(o=gp.Choice(["a", "b"])),
                [],
                now=0.0,
                rng=np.random.default_rng(),
                mix=False,
            ),
            "use PB2-Mix",
        ),
        (lambda: suggest(LOG_LR, [], now=float("nan"), rng=np.random.default_rng()), "'now'"),
        (lambda: suggest(LOG_LR, [], now=0.0, rng=np.random), "numpy Generator"),  # type: ignore[arg-type]
        (lambda: suggest(LOG_LR, "rows", now=0.0, rng=np.random.default_rng()), "list of Row"),  # type: ignore[arg-type]
        (
            lambda: suggest(LOG_LR, [(0, {}, 1)], now=0.0, rng=np.random.default_rng()),  # type: ignore[list-item]
            "rows\\[0\\]",
        ),
        (
            lambda: suggest(
                LOG_LR, [Row(0.0, {"lr": 2.0}, 1.0)], now=0.0, rng=np.random.default_rng()
            ),
            "rows\\[0\\].hparams\\['lr'\\].*within",
        ),
        (
            lambda: suggest(LOG_LR, [Row(0.0, {}, 1.0)], now=0.0, rng=np.random.default_rng()),
            "none for \\['lr'\\]",
        ),
        (
            lambda: suggest(
                LOG_LR, [Row(float("inf"), {"lr": 0.1}, 1.0)], now=0.0, rng=np.random.default_rng()
            ),
            "rows\\[0\\].time",
        ),
        (
            lambda: suggest(
                LOG_LR,
                [Row(0.0, {"lr": 0.1}, "1")],  # type: ignore[arg-type]
                now=0.0,
                rng=np.random.default_rng(),
            ),
            "improvement.*NaN is dropped",
        ),
        (
            lambda: suggest(
                LOG_LR, [], now=0.0, rng=np.random.default_rng(), pending=[{"lr": -1.0}]
            ),
            "pending\\[0\\]",
        ),
        (lambda: suggest(LOG_LR, [], now=0.0, rng=np.random.default_rng(), window=0), "window"),
        (lambda: suggest(LOG_LR, [], now=0.0, rng=np.random.default_rng(), min_rows=1), "min_rows"),
        (
            lambda: suggest(LOG_LR, [], now=0.0, rng=np.random.default_rng(), state={"eps": 1}),
            "info\\['kernel'\\]",
        ),
        (
            lambda: suggest(
                LOG_LR,
                [],
                now=0.0,
                rng=np.random.default_rng(),
                state=dict.fromkeys(
                    ("amplitude", "epsilon", "length_scale", "category_scale", "noise"), -1.0
                ),
            ),
            "state\\['amplitude'\\]",
        ),
    ],
)
def test_bad_inputs_are_refused_with_a_clear_message(call: Callable[[], Any], message: str):
    with pytest.raises(gp.InvalidArgumentError, match=message):
        call()


def test_only_the_last_window_rows_are_used():
    rows = window(LOG_LR, peak, n=60)
    bad = [Row(-1.0, {"lr": 0.5}, float("nan"))] * 5
    _, info = suggest(LOG_LR, bad + rows, now=6.0, rng=np.random.default_rng(0), window=60)
    assert (info["rows"], info["dropped"]) == (60, 0)


class Odd(gp.Domain):
    """A domain PB2 does not know how to model."""

    def sample(self, rng: np.random.Generator) -> Any:
        return 1

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> Any:
        return 1

    def noise(self, value: Any, sigma: float, rng: np.random.Generator) -> Any:
        return 1

    def validate(self, value: Any, *, name: str = "value") -> Any:
        return 1


def test_a_domain_pb2_cannot_model_is_refused():
    with pytest.raises(gp.InvalidArgumentError, match=r"gp\.Float, gp\.Int, gp\.Choice.*'odd'"):
        suggest(gp.Space(odd=Odd()), [], now=0.0, rng=np.random.default_rng())
