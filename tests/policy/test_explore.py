"""Tests of the explore strategies: Perturb, Resample, GaussianNoise, ExploreFunction."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import genepool as gp
from tests.test_space import check_config, spaces


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def explore_many(
    strategy: gp.Explore, space: gp.Space, hparams: dict[str, Any], n: int = 400
) -> list[dict[str, Any]]:
    """Explore ``hparams`` once with each of ``n`` seeds."""
    return [strategy.explore(space, hparams, rng(s)) for s in range(n)]


def values(strategy: gp.Explore, domain: gp.Domain, value: Any, n: int = 400) -> list[Any]:
    """The values ``strategy`` gives a one-hyperparameter space, over ``n`` seeds."""
    space = gp.Space(x=domain)
    return [out["x"] for out in explore_many(strategy, space, {"x": value}, n)]


def one_step(domain: gp.Domain, value: Any, factor: float) -> Any:
    out = gp.Perturb(factors=(factor,)).explore(gp.Space(x=domain), {"x": value}, rng())
    return out["x"]


SPACE = gp.Space(
    lr=gp.Float(1e-4, 1.0, log=True),
    momentum=gp.Float(0.0, 1.0),
    layers=gp.Int(1, 100),
    batch_size=gp.Choice([16, 32, 64, 128], ordered=True),
    optimizer=gp.Choice(["adam", "sgd", "rmsprop"]),
    seed=7,
    schedule=gp.Fixed({"kind": "cosine"}),
)
START = {
    "lr": 0.01,
    "momentum": 0.5,
    "layers": 10,
    "batch_size": 32,
    "optimizer": "adam",
    "seed": 7,
    "schedule": SPACE["schedule"].sample(rng()),
}

STRATEGIES = [
    pytest.param(gp.Perturb(), id="perturb"),
    pytest.param(gp.Perturb(resample=0.5), id="perturb-resample"),
    pytest.param(gp.Resample(), id="resample"),
    pytest.param(gp.Resample(0.3), id="resample-0.3"),
    pytest.param(gp.GaussianNoise(), id="noise"),
    pytest.param(gp.GaussianNoise(0.5, resample=0.5), id="noise-resample"),
    pytest.param(gp.ExploreFunction(lambda h, r: {"lr": h["lr"] / 2}), id="function"),
]


# --------------------------------------------------------------------------- common contract


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_explore_returns_new_dict_and_leaves_input_alone(strategy):
    before = copy.deepcopy(START)
    hparams = dict(START)
    out = strategy.explore(SPACE, hparams, rng(1))
    assert out is not hparams
    assert hparams == before
    assert hparams["schedule"] is START["schedule"]
    check_config(SPACE, out)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_explore_never_changes_fixed_values(strategy):
    for out in explore_many(strategy, SPACE, START, n=50):
        assert out["seed"] == 7
        assert out["schedule"] is START["schedule"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_explore_is_deterministic_per_seed(strategy):
    a = strategy.explore(SPACE, START, rng(5))
    b = strategy.explore(SPACE, START, rng(5))
    assert a == b


@pytest.mark.parametrize("strategy", STRATEGIES[:-1])
def test_explore_depends_on_the_seed(strategy):
    outs = explore_many(strategy, SPACE, START, n=20)
    assert len({tuple(sorted((k, repr(v)) for k, v in o.items())) for o in outs}) > 1


# --------------------------------------------------------------------------- Perturb


def test_perturb_defaults_are_the_papers():
    p = gp.Perturb()
    assert p.factors == (0.8, 1.2)
    assert p.resample == 0.0


def test_perturb_multiplies_linear_float_by_a_factor():
    xs = values(gp.Perturb(), gp.Float(0.0, 1.0), 0.5, n=200)
    assert all(x == pytest.approx(0.4) or x == pytest.approx(0.6) for x in xs)
    assert any(x == pytest.approx(0.4) for x in xs)
    assert any(x == pytest.approx(0.6) for x in xs)
    assert all(type(x) is float for x in xs)


def test_perturb_uses_the_given_factors():
    xs = values(gp.Perturb(factors=(0.5, 2.0, 3.0)), gp.Float(0.0, 100.0), 10.0, n=200)
    assert {round(x, 9) for x in xs} == {5.0, 20.0, 30.0}


def test_perturb_log_float_is_a_shift_in_log_space():
    d = gp.Float(1e-4, 1.0, log=True)
    for factor in (0.8, 1.2):
        for v in (1e-3, 0.01, 0.1):
            new = one_step(d, v, factor)
            assert math.log(new) - math.log(v) == pytest.approx(math.log(factor))


def test_perturb_moves_zero_on_a_linear_scale_by_a_fraction_of_the_width():
    d = gp.Float(-1.0, 3.0)  # width 4
    assert one_step(d, 0.0, 1.2) == pytest.approx(0.2 * 4)
    assert one_step(d, 0.0, 0.8) == pytest.approx(-0.2 * 4)
    assert one_step(gp.Float(0.0, 1.0), 0.0, 1.2) == pytest.approx(0.2)
    assert one_step(gp.Float(0.0, 1.0), 0, 1.2) == pytest.approx(0.2)  # an int 0 too


def test_perturb_clips_floats_to_the_bounds():
    assert one_step(gp.Float(0.0, 1.0), 0.9, 1.2) == 1.0
    assert one_step(gp.Float(0.5, 1.0), 0.55, 0.8) == 0.5
    assert one_step(gp.Float(1e-3, 1e-2, log=True), 9e-3, 1.2) == 1e-2
    assert one_step(gp.Float(-1.0, 0.0), 0.0, 1.2) == 0.0


@pytest.mark.parametrize(
    ("value", "factor", "expected"),
    [
        (10, 1.2, 12),
        (10, 0.8, 8),
        (3, 1.2, 4),  # round(3.6)
        (2, 1.2, 3),  # round(2.4) == 2: moves one unit anyway
        (2, 0.8, 1),  # round(1.6) == 2: moves one unit anyway
        (1, 1.2, 2),
        (0, 1.2, 1),
        (0, 0.8, -1),
        (50, 1.2, 50),  # clipped at high
        (-50, 1.2, -50),  # clipped at low (-60)
        (-49, 1.2, -50),  # clipped
        (49, 1.2, 50),  # clipped
    ],
)
def test_perturb_int(value, factor, expected):
    new = one_step(gp.Int(-50, 50), value, factor)
    assert new == expected
    assert type(new) is int


def test_perturb_log_int_multiplies_and_rounds():
    d = gp.Int(1, 1000, log=True)
    assert one_step(d, 100, 1.2) == 120
    assert one_step(d, 100, 0.8) == 80
    assert one_step(d, 1, 1.2) == 2
    assert one_step(d, 1, 0.8) == 1  # clipped at low


def test_perturb_int_moves_at_least_one_unit_unless_clipped():
    d = gp.Int(-30, 30)
    for v in range(-30, 31):
        for factor in (0.8, 1.2, 0.99, 1.01):
            new = one_step(d, v, factor)
            assert d.low <= new <= d.high
            if new == v:
                assert v in (d.low, d.high), (v, factor)
            assert abs(new - v) >= 1 or v in (d.low, d.high)


def test_perturb_int_moves_the_way_multiplication_does():
    """For v != 0, a float and an int perturbed by the same factor move the same way."""
    d = gp.Int(-30, 30)
    for v in [*range(-29, 0), *range(1, 30)]:
        for factor in (0.8, 1.2):
            new = one_step(d, v, factor)
            float_way = np.sign(v * factor - v)
            assert np.sign(new - v) == float_way, f"Int {v} * {factor} moved to {new}"


def test_perturb_ordered_choice_moves_to_the_neighbour():
    d = gp.Choice([16, 32, 64, 128], ordered=True)
    assert one_step(d, 32, 1.2) == 64
    assert one_step(d, 32, 0.8) == 16
    assert one_step(d, 64, 3.0) == 128  # one neighbour, however big the factor
    assert one_step(d, 128, 1.2) == 128  # clipped at the ends
    assert one_step(d, 16, 0.8) == 16
    assert set(values(gp.Perturb(), d, 32, n=100)) == {16, 64}


def test_perturb_unordered_choice_is_resampled_from_the_prior():
    d = gp.Choice(["adam", "sgd", "rmsprop"])
    xs = values(gp.Perturb(), d, "adam", n=3000)
    for option in ("adam", "sgd", "rmsprop"):
        assert abs(xs.count(option) / 3000 - 1 / 3) < 0.04, option
    # whatever the factor
    assert len(set(values(gp.Perturb(factors=(1.2,)), d, "adam", n=100))) == 3


def test_perturb_never_changes_fixed():
    space = gp.Space(x=gp.Float(0, 1), opt="adam", f=gp.Fixed(3))
    for out in explore_many(gp.Perturb(resample=1.0), space, {"x": 0.5, "opt": "adam", "f": 3}):
        assert out["opt"] == "adam"
        assert out["f"] == 3


def test_perturb_resample_one_draws_from_the_prior():
    d = gp.Float(1e-4, 1.0, log=True)
    xs = np.array(values(gp.Perturb(resample=1.0), d, 0.01, n=2000))
    # perturbing 0.01 gives 0.008 or 0.012; the log-uniform prior spreads over four decades
    for lo in (1e-4, 1e-3, 1e-2, 1e-1):
        assert abs(np.mean((xs >= lo) & (xs < lo * 10)) - 0.25) < 0.04
    ints = values(gp.Perturb(resample=1.0), gp.Int(0, 9), 5, n=2000)
    assert set(ints) == set(range(10))
    choices = values(gp.Perturb(resample=1.0), gp.Choice([1, 2, 3, 4], ordered=True), 1, n=500)
    assert set(choices) == {1, 2, 3, 4}  # not only the neighbour 2


def test_perturb_resample_zero_never_resamples():
    xs = values(gp.Perturb(resample=0.0), gp.Float(0.0, 1.0), 0.5, n=1000)
    assert all(x == pytest.approx(0.4) or x == pytest.approx(0.6) for x in xs)


def test_perturb_resample_probability_is_respected():
    xs = values(gp.Perturb(resample=0.3), gp.Float(0.0, 1.0), 0.5, n=2000)
    resampled = [x for x in xs if x != pytest.approx(0.4) and x != pytest.approx(0.6)]
    assert abs(len(resampled) / 2000 - 0.3) < 0.04


# --------------------------------------------------------------------------- Resample


def test_resample_default_probability_is_one():
    assert gp.Resample().probability == 1.0


def test_resample_one_draws_every_mutable_value_from_the_prior():
    outs = explore_many(gp.Resample(1.0), SPACE, START, n=2000)
    lrs = np.array([o["lr"] for o in outs])
    for lo in (1e-4, 1e-3, 1e-2, 1e-1):
        assert abs(np.mean((lrs >= lo) & (lrs < lo * 10)) - 0.25) < 0.04
    assert {o["batch_size"] for o in outs} == {16, 32, 64, 128}
    assert {o["optimizer"] for o in outs} == {"adam", "sgd", "rmsprop"}
    layers = [o["layers"] for o in outs]
    assert min(layers) == 1
    assert max(layers) == 100
    assert abs(np.mean([o["momentum"] for o in outs]) - 0.5) < 0.03


def test_resample_zero_changes_nothing():
    for out in explore_many(gp.Resample(0.0), SPACE, START, n=50):
        assert out == START


def test_resample_probability_is_per_hyperparameter():
    space = gp.Space(x=gp.Float(0.0, 1.0))
    outs = explore_many(gp.Resample(0.25), space, {"x": 0.5}, n=2000)
    changed = sum(o["x"] != 0.5 for o in outs)
    assert abs(changed / 2000 - 0.25) < 0.04


# --------------------------------------------------------------------------- GaussianNoise


def test_noise_scale_is_sigma_times_linear_width():
    raw = values(gp.GaussianNoise(0.05), gp.Float(0.0, 10.0), 5.0, n=3000)
    assert all(type(x) is float for x in raw)
    xs = np.array(raw)
    assert abs(xs.mean() - 5.0) < 0.05
    assert xs.std() == pytest.approx(0.5, rel=0.08)


def test_noise_scale_is_sigma_times_log_width():
    xs = np.array(values(gp.GaussianNoise(0.05), gp.Float(1e-4, 1.0, log=True), 1e-2, n=3000))
    logs = np.log10(xs)
    assert abs(logs.mean() - (-2.0)) < 0.03
    assert logs.std() == pytest.approx(0.05 * 4, rel=0.08)  # four decades wide


def test_noise_is_clipped():
    xs = values(gp.GaussianNoise(0.5), gp.Float(0.0, 1.0), 1.0, n=500)
    assert all(0.0 <= x <= 1.0 for x in xs)
    assert xs.count(1.0) > 100  # about half the draws go above and are clipped
    assert any(x < 0.9 for x in xs)


def test_noise_rounds_ints():
    xs = values(gp.GaussianNoise(0.05), gp.Int(0, 100), 50, n=3000)
    assert all(type(x) is int for x in xs)
    assert np.std(xs) == pytest.approx(5.0, rel=0.1)
    ys = values(gp.GaussianNoise(0.5), gp.Int(0, 10), 10, n=500)
    assert all(0 <= y <= 10 for y in ys)
    assert ys.count(10) > 100


def test_noise_moves_ordered_choices_along_the_index():
    options = list("abcdefghijk")  # 11 options: span 10
    d = gp.Choice(options, ordered=True)
    xs = values(gp.GaussianNoise(0.1), d, "f", n=3000)
    idx = np.array([options.index(x) for x in xs])
    assert abs(idx.mean() - 5.0) < 0.1
    assert idx.std() == pytest.approx(1.0, rel=0.15)  # sigma * span = 1 index
    ends = values(gp.GaussianNoise(1.0), d, "k", n=300)
    assert set(ends) <= set(options)
    assert ends.count("k") > 100


def test_noise_resamples_unordered_choices():
    d = gp.Choice(["adam", "sgd", "rmsprop"])
    xs = values(gp.GaussianNoise(1e-6), d, "adam", n=3000)
    for option in ("adam", "sgd", "rmsprop"):
        assert abs(xs.count(option) / 3000 - 1 / 3) < 0.04, option


def test_noise_resample_one_draws_from_the_prior():
    xs = values(gp.GaussianNoise(1e-6, resample=1.0), gp.Float(0.0, 1.0), 0.5, n=1000)
    assert min(xs) < 0.1
    assert max(xs) > 0.9


def test_noise_sigma_default():
    assert gp.GaussianNoise().sigma == 0.1


# --------------------------------------------------------------------------- ExploreFunction


def halve_lr(hparams: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    return {"lr": hparams["lr"] / 2}


def test_function_keys_left_out_keep_their_values():
    out = gp.ExploreFunction(halve_lr).explore(SPACE, START, rng())
    assert out == {**START, "lr": 0.005}


def test_function_gets_a_copy_and_the_generator():
    seen: list[Any] = []

    def rule(hparams: dict[str, Any], r: np.random.Generator) -> dict[str, Any]:
        seen.append(r)
        hparams["layers"] = 99  # mutating its argument must not reach the caller's dict
        hparams.pop("momentum")
        return {"momentum": float(r.random())}

    hparams = dict(START)
    g = rng(3)
    out = gp.ExploreFunction(rule).explore(SPACE, hparams, g)
    assert seen == [g]
    assert hparams == START
    assert out["momentum"] == np.random.default_rng(3).random()


def test_function_result_is_canonicalised():
    out = gp.ExploreFunction(lambda h, r: {"momentum": 1, "layers": np.int64(4)}).explore(
        SPACE, START, rng()
    )
    assert type(out["momentum"]) is float
    assert type(out["layers"]) is int


@pytest.mark.parametrize(
    ("result", "shown"),
    [
        pytest.param({"lr": 2.0}, "2.0", id="out-of-bounds"),
        pytest.param({"layers": 0}, "0", id="int-out-of-bounds"),
        pytest.param({"layers": 2.5}, "2.5", id="int-non-integral"),
        pytest.param({"momentum": True}, "True", id="bool-for-float"),
        pytest.param({"optimizer": "adamw"}, "'adamw'", id="not-an-option"),
        pytest.param({"seed": 8}, "8", id="fixed-changed"),
        pytest.param({"learning_rate": 0.1}, "'learning_rate'", id="unknown-key"),
    ],
)
def test_function_result_is_validated(result, shown):
    def my_rule(hparams, r):
        return result

    with pytest.raises(gp.InvalidArgumentError) as info:
        gp.ExploreFunction(my_rule).explore(SPACE, START, rng())
    message = str(info.value)
    assert "my_rule" in message
    assert shown in message


def test_function_must_return_a_mapping():
    def bad(hparams: dict[str, Any], r: np.random.Generator) -> Any:
        return [("lr", 0.1)]

    with pytest.raises(gp.InvalidArgumentError, match="bad"):
        gp.ExploreFunction(bad).explore(SPACE, START, rng())


# --------------------------------------------------------------------------- invalid arguments

INVALID: list[tuple[str, Callable[[], object], str]] = [
    ("perturb-zero-factor", lambda: gp.Perturb(factors=(0.0, 1.2)), "'factors'"),
    ("perturb-negative-factor", lambda: gp.Perturb(factors=(-0.8, 1.2)), "'factors'"),
    ("perturb-inf-factor", lambda: gp.Perturb(factors=(math.inf,)), "'factors'"),
    ("perturb-nan-factor", lambda: gp.Perturb(factors=(math.nan,)), "'factors'"),
    ("perturb-bool-factor", lambda: gp.Perturb(factors=(True,)), "'factors'"),
    ("perturb-str-factor", lambda: gp.Perturb(factors=("1.2",)), "'factors'"),  # type: ignore[arg-type]
    ("perturb-no-factors", lambda: gp.Perturb(factors=()), "'factors'"),
    ("perturb-factors-str", lambda: gp.Perturb(factors="12"), "'factors'"),  # type: ignore[arg-type]
    ("perturb-resample-negative", lambda: gp.Perturb(resample=-0.1), "'resample'"),
    ("perturb-resample-above-one", lambda: gp.Perturb(resample=1.1), "'resample'"),
    ("perturb-resample-nan", lambda: gp.Perturb(resample=math.nan), "'resample'"),
    ("perturb-resample-bool", lambda: gp.Perturb(resample=True), "'resample'"),
    ("resample-negative", lambda: gp.Resample(-0.1), "'probability'"),
    ("resample-above-one", lambda: gp.Resample(1.5), "'probability'"),
    ("resample-str", lambda: gp.Resample("0.5"), "'probability'"),  # type: ignore[arg-type]
    ("noise-zero", lambda: gp.GaussianNoise(0.0), "'sigma'"),
    ("noise-negative", lambda: gp.GaussianNoise(-0.1), "'sigma'"),
    ("noise-inf", lambda: gp.GaussianNoise(math.inf), "'sigma'"),
    ("noise-nan", lambda: gp.GaussianNoise(math.nan), "'sigma'"),
    ("noise-bool", lambda: gp.GaussianNoise(True), "'sigma'"),
    ("noise-resample", lambda: gp.GaussianNoise(0.1, resample=2.0), "'resample'"),
    ("function-not-callable", lambda: gp.ExploreFunction(42), "'fn'"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("make", "argument"), [pytest.param(m, a, id=i) for i, m, a in INVALID])
def test_invalid_strategy_arguments(make, argument):
    with pytest.raises(gp.InvalidArgumentError, match=argument) as info:
        make()
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("factor", [0.0, -1.0, math.inf, math.nan])
@pytest.mark.parametrize(
    "domain",
    [gp.Float(0, 1), gp.Int(0, 10), gp.Choice([1, 2], ordered=True), gp.Choice(["a", "b"])],
)
def test_domain_perturb_rejects_bad_factor(domain, factor):
    with pytest.raises(gp.InvalidArgumentError, match="'factor'"):
        domain.perturb(domain.sample(rng()), factor, rng())


def test_valid_edge_probabilities_are_accepted():
    assert gp.Perturb(resample=1).resample == 1.0
    assert gp.Resample(0).probability == 0.0
    assert gp.Perturb(factors=[2]).factors == (2.0,)


# --------------------------------------------------------------------------- extreme arguments


def test_perturb_int_with_a_huge_factor_clips():
    """Perturb accepts any finite factor > 0; an Int must clip, not overflow."""
    assert one_step(gp.Int(0, 10), 5, 1e308) == 10
    assert one_step(gp.Float(0.0, 10.0), 5.0, 1e308) == 10.0


def test_noise_ordered_choice_with_a_huge_sigma_clips():
    """GaussianNoise accepts any finite sigma > 0; an ordered Choice must clip, not overflow."""
    d = gp.Choice(list("abcde"), ordered=True)
    xs = values(gp.GaussianNoise(1e308), d, "c", n=20)
    assert set(xs) <= set("abcde")


def test_noise_float_and_int_with_a_huge_sigma_clip():
    assert set(values(gp.GaussianNoise(1e308), gp.Int(0, 10), 5, n=20)) <= {0, 10}
    assert set(values(gp.GaussianNoise(1e308), gp.Float(0.0, 1.0), 0.5, n=20)) <= {0.0, 1.0}


# --------------------------------------------------------------------------- properties

FACTORS = st.lists(st.floats(1e-6, 1e6).filter(lambda f: f > 0), min_size=1, max_size=4)
PROBABILITY = st.floats(0.0, 1.0)

EXPLORERS = st.one_of(
    st.builds(lambda f, p: gp.Perturb(factors=f, resample=p), FACTORS, PROBABILITY),
    st.builds(lambda s, p: gp.GaussianNoise(s, resample=p), st.floats(1e-6, 100.0), PROBABILITY),
    st.builds(gp.Resample, PROBABILITY),
)


@st.composite
def valid_configs(draw: st.DrawFn, space: gp.Space) -> dict[str, Any]:
    """A valid config of ``space``, with values anywhere in the bounds (bounds included)."""
    config: dict[str, Any] = {}
    for name, d in space.items():
        if isinstance(d, gp.Float):
            config[name] = draw(
                st.one_of(st.floats(d.low, d.high), st.sampled_from([d.low, d.high]))
            )
        elif isinstance(d, gp.Int):
            config[name] = draw(st.integers(d.low, d.high))
        elif isinstance(d, gp.Choice):
            config[name] = draw(st.sampled_from(d.options))
        else:
            config[name] = d.sample(np.random.default_rng(0))
    return config


@given(data=st.data(), strategy=EXPLORERS, seed=st.integers(0, 2**32 - 1))
def test_chained_exploration_stays_in_bounds_with_declared_types(data, strategy, seed):
    space = data.draw(spaces())
    hparams = data.draw(valid_configs(space))
    g = np.random.default_rng(seed)
    for _ in range(20):
        before = dict(hparams)
        new = strategy.explore(space, hparams, g)
        assert hparams == before
        check_config(space, new)
        hparams = new


@given(data=st.data(), strategy=EXPLORERS, seed=st.integers(0, 2**32 - 1))
def test_exploration_is_deterministic_for_a_seed(data, strategy, seed):
    space = data.draw(spaces())
    start = data.draw(valid_configs(space))

    def run() -> list[dict[str, Any]]:
        g = np.random.default_rng(seed)
        out, h = [], start
        for _ in range(5):
            h = strategy.explore(space, h, g)
            out.append(h)
        return out

    assert run() == run()


@given(
    data=st.data(),
    factors=st.lists(
        st.floats(min_value=0.0, exclude_min=True, allow_infinity=False), min_size=1, max_size=3
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_perturb_with_any_factor_stays_in_bounds(data, factors, seed):
    """Extreme factors included (the constructor accepts any finite factor > 0)."""
    space = data.draw(spaces())
    hparams = data.draw(valid_configs(space))
    new = gp.Perturb(factors=factors).explore(space, hparams, np.random.default_rng(seed))
    check_config(space, new)
