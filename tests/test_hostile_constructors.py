"""Hostile values in every argument of the public constructors (issue 14: every input gets
a clear answer).

Each constructor is called with a valid value for some arguments and a hostile one for the
others (wrong types, NaN and infinities, huge integers, bools, unicode and empty strings,
``None``, nested garbage lists and dicts, classes). It either succeeds or raises a
:class:`genepool.GenepoolError` whose message names one of the hostile arguments: no other
exception escapes. A domain or a space that is accepted must then work: its samples,
perturbations and noise lie inside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import genepool as gp

#: Integers that no float, or no int64, holds.
HUGE_INTS = [2**1100, -(2**1100), 10**400, 2**64, 2**63, -(2**63) - 1, 2**53 + 1]

#: Classes given where an instance is expected (gp.Float for gp.Float(0, 1)).
CLASSES: list[type] = [
    gp.Float,
    gp.Int,
    gp.Choice,
    gp.Fixed,
    gp.Domain,
    gp.Space,
    gp.Every,
    gp.Budget,
    gp.Truncation,
    gp.Perturb,
    gp.Policy,
    int,
    float,
    str,
    list,
    object,
    type,
]

ODD_NUMBERS = [
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    5e-324,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    np.float64("nan"),
    np.float32(3e38),
    np.int64(-1),
    np.int64(2**63 - 1),
    np.uint64(2**64 - 1),
    np.bool_(True),
    np.bool_(False),
    1 + 2j,
    complex("nan"),
]

SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-3, 3),
    st.sampled_from(HUGE_INTS),
    st.floats(),
    st.sampled_from(ODD_NUMBERS),
    st.text(max_size=6),
    st.sampled_from(["", " ", "é", "\x00", "🧬", "nan", "1e-3"]),
    st.binary(max_size=3),
    st.sampled_from(CLASSES),
)

#: Scalars, and lists, tuples and dicts of them nested a few levels.
HOSTILE: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
    ),
    max_leaves=8,
)


def _identity(hparams: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    return hparams


@dataclass(frozen=True)
class Case:
    """A constructor and a strategy of valid values for each of its keyword arguments."""

    make: Callable[..., Any]
    valid: dict[str, st.SearchStrategy[Any]]


SPACE = gp.Space(lr=gp.Float(1e-3, 1e-1, log=True), depth=gp.Int(1, 4))

CASES: dict[str, Case] = {
    "Float": Case(
        gp.Float,
        {"low": st.floats(0.1, 1.0), "high": st.floats(2.0, 10.0), "log": st.booleans()},
    ),
    "Int": Case(
        gp.Int,
        {"low": st.integers(1, 3), "high": st.integers(5, 9), "log": st.booleans()},
    ),
    "Choice": Case(
        gp.Choice,
        {"options": st.lists(st.integers(), min_size=1, unique=True), "ordered": st.booleans()},
    ),
    "Fixed": Case(gp.Fixed, {"value": st.integers()}),
    "Every": Case(
        gp.Every,
        {
            "steps": st.integers(1, 10),
            "counter": st.sampled_from(["steps", "samples"]),
            "burn_in": st.integers(0, 10),
            "min_seconds": st.floats(0.0, 5.0),
        },
    ),
    "Budget": Case(
        gp.Budget,
        {
            "steps": st.integers(1, 100),
            "seconds": st.one_of(st.none(), st.floats(1.0, 100.0)),
            "target": st.one_of(st.none(), st.floats(-1.0, 1.0)),
            "plateau": st.one_of(st.none(), st.integers(1, 5)),
            "min_delta": st.floats(0.0, 1.0),
        },
    ),
    "Truncation": Case(gp.Truncation, {"fraction": st.floats(0.01, 0.5)}),
    "Tournament": Case(gp.Tournament, {}),
    "WelchTTest": Case(
        gp.WelchTTest,
        {
            "window": st.integers(5, 10),
            "alpha": st.floats(0.01, 0.5),
            "min_samples": st.integers(2, 5),
        },
    ),
    "Perturb": Case(
        gp.Perturb,
        {
            "factors": st.lists(st.floats(0.5, 2.0), min_size=1, max_size=3),
            "resample": st.floats(0.0, 1.0),
        },
    ),
    "Resample": Case(gp.Resample, {"probability": st.floats(0.0, 1.0)}),
    "GaussianNoise": Case(
        gp.GaussianNoise, {"sigma": st.floats(0.01, 1.0), "resample": st.floats(0.0, 1.0)}
    ),
    "ExploreFunction": Case(gp.ExploreFunction, {"fn": st.just(_identity)}),
    "Policy": Case(
        gp.Policy,
        {
            "space": st.just(SPACE),
            "ready": st.just(gp.Every(4)),
            "exploit": st.sampled_from([gp.Truncation(), gp.Tournament(), None]),
            "explore": st.sampled_from([gp.Perturb(), gp.GaussianNoise(), None]),
            "budget": st.just(gp.Budget(steps=10)),
            "max_failures": st.integers(1, 5),
            "aligned": st.booleans(),
        },
    ),
}


def _exercise(obj: Any, seed: int) -> None:
    """Use an accepted domain or space: every value it makes lies inside it."""
    rng = np.random.default_rng(seed)
    if isinstance(obj, gp.Space):
        config = obj.sample(rng)
        assert obj.validate(config) == config
        assert set(obj.complete({}, rng)) == set(obj)
        return
    if not isinstance(obj, gp.Domain):
        return
    value = obj.sample(rng)
    assert obj.contains(value), f"{obj!r} sampled {value!r} outside itself"
    for factor in (0.8, 1.2, 1e300):
        moved = obj.perturb(value, factor, rng)
        assert obj.contains(moved), f"{obj!r} perturbed {value!r} to {moved!r}"
    noisy = obj.noise(value, 0.5, rng)
    assert obj.contains(noisy), f"{obj!r} noised {value!r} to {noisy!r}"


def _check_answer(call: Callable[[], Any], names: list[str], seed: int) -> None:
    """The call succeeds, or raises a GenepoolError naming one of ``names``."""
    try:
        made = call()
    except gp.GenepoolError as err:
        message = str(err)
        assert any(name in message for name in names), (
            f"the message names none of {names}: {message!r}"
        )
        return
    _exercise(made, seed)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_hostile_arguments_get_a_clear_answer(data: st.DataObject, seed: int) -> None:
    name = data.draw(st.sampled_from(sorted(CASES)), label="constructor")
    case = CASES[name]
    params = sorted(case.valid)
    hostile = (
        data.draw(st.lists(st.sampled_from(params), min_size=1, unique=True), label="hostile")
        if params
        else []
    )
    kwargs = {p: data.draw(HOSTILE if p in hostile else case.valid[p], label=p) for p in params}
    _check_answer(lambda: case.make(**kwargs), hostile or params, seed)


# ----------------------------------------------------------------------------- spaces

NAMES = st.one_of(st.text(min_size=1, max_size=6), st.sampled_from(["lr", "é", "🧬", "\x00"]))


@settings(max_examples=150, deadline=None)
@given(name=NAMES, value=HOSTILE, seed=st.integers(0, 2**32 - 1))
def test_hostile_space_values_get_a_clear_answer(name: str, value: Any, seed: int) -> None:
    """gp.Space(name=value) and gp.Space({name: value}): the error names the key."""
    _check_answer(lambda: gp.Space(**{name: value}), [repr(name)], seed)
    _check_answer(lambda: gp.Space({name: value}), [repr(name)], seed)


@settings(max_examples=100, deadline=None)
@given(params=HOSTILE, seed=st.integers(0, 2**32 - 1))
def test_hostile_space_params_get_a_clear_answer(params: Any, seed: int) -> None:
    """gp.Space(params) with params anything but a mapping of names to domains."""
    keys = list(params) if isinstance(params, dict) else []
    names = ["params", "'name'", *(repr(k) for k in keys)]
    _check_answer(lambda: gp.Space(params), names, seed)


@settings(max_examples=100, deadline=None)
@given(options=st.lists(HOSTILE, min_size=1, max_size=6), seed=st.integers(0, 2**32 - 1))
def test_hostile_choice_options_work_or_get_a_clear_answer(options: list[Any], seed: int) -> None:
    """A Choice of garbage options is refused naming 'options', or contains each of them."""
    try:
        choice = gp.Choice(options)
    except gp.GenepoolError as err:
        message = str(err)
    else:
        message = ""
    if message:
        assert "options" in message
        return
    for option in options:
        assert choice.contains(option), f"{choice!r} does not contain its option {option!r}"
    _exercise(choice, seed)
