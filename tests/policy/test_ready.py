"""Ready: Every(steps, counter=, burn_in=, min_seconds=) is due exactly when all three hold."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genepool import InvalidArgumentError
from genepool.policy.ready import Every, Ready

NAN = float("nan")
INF = float("inf")


def test_every_is_a_ready_rule_with_a_default_counter():
    ready = Every(4)
    assert isinstance(ready, Ready)
    assert ready.counter == "steps"
    assert Every(1000, counter="samples").counter == "samples"


@pytest.mark.parametrize(
    ("counter", "last", "due"),
    [
        (0, 0, False),
        (3, 0, False),
        (4, 0, True),
        (5, 0, True),
        (7, 4, False),
        (8, 4, True),
        (12, 4, True),
        (3.999, 0, False),
    ],
)
def test_every_steps(counter, last, due):
    assert Every(4).due(counter=counter, last=last, elapsed=0.0) is due


def test_every_fractional_steps():
    ready = Every(0.5)
    assert ready.due(counter=1.5, last=1.0, elapsed=0.0)
    assert not ready.due(counter=1.25, last=1.0, elapsed=0.0)


@pytest.mark.parametrize(
    ("counter", "last", "due"),
    [
        (4000, 3000, False),  # enough since the last, but before the burn-in
        (4999, 3000, False),
        (5000, 4000, True),  # burn-in reached exactly
        (5500, 5000, False),  # past the burn-in, not enough since the last
        (6000, 5000, True),
    ],
)
def test_every_burn_in(counter, last, due):
    ready = Every(1000, counter="samples", burn_in=5000)
    assert ready.due(counter=counter, last=last, elapsed=100.0) is due


@pytest.mark.parametrize(("elapsed", "due"), [(0.0, False), (4.99, False), (5.0, True), (60, True)])
def test_every_min_seconds(elapsed, due):
    ready = Every(2, min_seconds=5)
    assert ready.due(counter=10, last=2, elapsed=elapsed) is due
    # time alone never makes it due
    assert not ready.due(counter=3, last=2, elapsed=elapsed)


@given(
    steps=st.floats(min_value=1e-3, max_value=1e6),
    burn_in=st.floats(min_value=0, max_value=1e6),
    min_seconds=st.floats(min_value=0, max_value=1e4),
    counter=st.integers(min_value=0, max_value=2_000_000),
    back=st.integers(min_value=0, max_value=2_000_000),
    elapsed=st.floats(min_value=0, max_value=2e4),
)
def test_every_due_exactly_when_all_hold(steps, burn_in, min_seconds, counter, back, elapsed):
    last = counter - back
    ready = Every(steps, burn_in=burn_in, min_seconds=min_seconds)
    expected = back >= steps and counter >= burn_in and elapsed >= min_seconds
    assert ready.due(counter=counter, last=last, elapsed=elapsed) is expected


@pytest.mark.parametrize("steps", [0, -1, 0.0, True, False, INF, NAN, "4", None])
def test_every_invalid_steps(steps):
    with pytest.raises(InvalidArgumentError, match="steps"):
        Every(steps)


@pytest.mark.parametrize("counter", ["", 3, None])
def test_every_invalid_counter(counter):
    with pytest.raises(InvalidArgumentError, match="counter"):
        Every(4, counter=counter)


@pytest.mark.parametrize("burn_in", [-1, -0.5, True, "0", None, NAN])
def test_every_invalid_burn_in(burn_in):
    with pytest.raises(InvalidArgumentError, match="burn_in"):
        Every(4, burn_in=burn_in)


@pytest.mark.parametrize("min_seconds", [-0.1, True, "1", None, NAN])
def test_every_invalid_min_seconds(min_seconds):
    with pytest.raises(InvalidArgumentError, match="min_seconds"):
        Every(4, min_seconds=min_seconds)


def test_every_valid_arguments_are_kept():
    ready = Every(10, counter="episodes", burn_in=100, min_seconds=2)
    assert (ready.steps, ready.counter, ready.burn_in, ready.min_seconds) == (
        10,
        "episodes",
        100,
        2.0,
    )
    assert "Every(10" in repr(ready)
