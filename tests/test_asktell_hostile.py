"""Hostile values in every argument of ask/tell (issue 14's rule: every input gets a clear
answer), as tests/test_hostile_run.py does for ``gp.run``.

``AskTell.ask``'s ``timeout``, ``Claim.report``'s metrics and ``AskTell.tell``'s
``claim``, ``metrics`` and ``state`` get hostile values (wrong types, NaN and infinities,
huge integers, bools, unicode and empty strings, ``None``, nested garbage, classes, and
objects that cannot be stored). Each is accepted, or refused with a
:class:`genepool.GenepoolError` whose message names it; a refused call has recorded
nothing, and the claim goes on as before it. (A claim whose lease was lost is
tests/test_asktell.py's.)
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import genepool as gp
from genepool.asktell import Claim
from genepool.store._codec import dumps, encode, loads
from tests.test_hostile_constructors import HOSTILE, ODD_NUMBERS

SPACE = gp.Space(lr=gp.Float(0.01, 0.1))
SETTINGS: dict[str, Any] = {
    "metric": "score",
    "population": 2,
    "ready": gp.Every(2),
    "budget": gp.Budget(steps=4),
    "seed": 0,
}


def asktell(**options: Any) -> gp.AskTell:
    """A tiny run in memory (a claimable member: ``ask`` never waits)."""
    return gp.AskTell(SPACE, **{**SETTINGS, **options})


def claimed(pbt: gp.AskTell) -> Claim:
    claim = pbt.ask()
    assert claim is not None
    return claim


def ready(pbt: gp.AskTell) -> Claim:
    """A claim trained until it is ready."""
    claim = claimed(pbt)
    while not claim.ready:
        claim.report(score=0.5)
    return claim


def answer(call: Callable[[], Any]) -> tuple[Any, str | None]:
    """What ``call()`` returned and ``None``, or ``None`` and the message of the
    :class:`genepool.GenepoolError` it raised (any other escapes)."""
    try:
        return call(), None
    except gp.GenepoolError as err:
        return None, str(err)


def recorded(pbt: gp.AskTell) -> tuple[Any, ...]:
    """Everything the run has recorded: its members, reports and events."""
    result = pbt.result()
    return (tuple(result.population), tuple(result.reports), tuple(result.events))


class Unstorable:
    """An object no store and no checkpoint keeps, whose every conversion raises."""

    def __float__(self) -> float:
        raise RuntimeError("no float")

    def __reduce__(self) -> Any:
        raise RuntimeError("no pickle")


def _generator() -> Iterator[int]:
    yield 1


def _itself() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _deep() -> list[Any]:
    deep: list[Any] = []
    for _ in range(10_000):
        deep = [deep]
    return deep


#: Objects that plain data is not: what a state or a metric must not smuggle in.
OBJECTS: st.SearchStrategy[Any] = st.sampled_from(
    [
        object(),
        Unstorable(),
        threading.Lock(),
        lambda: 1,
        _generator(),
        {1, 2},
        frozenset(),
        np.array([object()]),
        range(3),
        memoryview(b"x"),
        Ellipsis,
        NotImplemented,
        _itself(),
        _deep(),
        {"nested": [Unstorable()]},
    ]
)
ANYTHING = st.one_of(HOSTILE, OBJECTS, st.floats(), st.sampled_from(ODD_NUMBERS))


# -- ask -----------------------------------------------------------------------------
def _a_wait(value: Any) -> bool:
    """Whether ``value`` is a number of seconds to wait: >= 0, not NaN, not a bool."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return False
    try:
        return float(value) >= 0.0
    except OverflowError:
        return False


@settings(max_examples=200, deadline=None)
@given(timeout=ANYTHING)
def test_hostile_timeouts_get_a_clear_answer(timeout: Any) -> None:
    with asktell() as pbt:
        claim, refused = answer(lambda: pbt.ask(timeout=timeout))
    if refused is not None:
        assert "The 'timeout' parameter of AskTell.ask" in refused
        assert "Fix:" in refused
    else:
        assert _a_wait(timeout), f"timeout={timeout!r} was accepted"
        assert claim is not None  # a member was claimable: no wait at all


@pytest.mark.parametrize("timeout", [-1, -0.001, -math.inf, math.nan, "1", None, True, 1j, [1]])
def test_a_timeout_that_is_no_wait_is_refused(timeout: Any) -> None:
    with asktell() as pbt:
        with pytest.raises(gp.InvalidArgumentError, match=r"'timeout' parameter of AskTell\.ask"):
            pbt.ask(timeout=timeout)
        assert recorded(pbt)[1:] == ((), ())


@pytest.mark.parametrize("timeout", [0, 0.0, 0.01, 3, np.float32(0.5), np.int64(2), math.inf])
def test_a_timeout_of_seconds_or_inf_is_taken(timeout: Any) -> None:
    with asktell() as pbt:
        assert pbt.ask(timeout=timeout) is not None


def test_an_infinite_timeout_returns_once_the_run_is_over() -> None:
    with asktell(population=1, budget=gp.Budget(steps=2)) as pbt:
        claim = ready(pbt)
        pbt.tell(claim, state=0.5)
        assert pbt.ask(timeout=math.inf) is None
        assert pbt.stop_reason == "budget"


# -- report ----------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["score", "other"]), value=ANYTHING)
def test_hostile_metric_values_get_a_clear_answer(name: str, value: Any) -> None:
    with asktell() as pbt:
        claim = claimed(pbt)
        _, refused = answer(lambda: claim.report({"score": 0.5, name: value}))
        if refused is not None:
            assert repr(name) in refused or f"{name}=" in refused
            assert "Fix:" in refused
            assert (claim.step, claim.ready) == (0, False)  # not recorded
            return
        report = {"score": 0.5, name: value}
        assert loads(dumps(encode(report)))  # the store keeps it
        if name == "score" and not math.isfinite(float(value)):
            assert claim.ready  # a score that is not a number fails the round, as a worker's
            pbt.tell(claim, state=0.0)
            (failure,) = [e for e in pbt.result().events if e.kind == "failure"]
            assert "non-finite score" in failure.data["error"]
            return
        claim.report(score=0.5)
        pbt.tell(claim, state=0.0)
        assert [r.step for r in pbt.result().reports] == [1, 2]


@settings(max_examples=200, deadline=None)
@given(metrics=ANYTHING)
def test_hostile_report_arguments_get_a_clear_answer(metrics: Any) -> None:
    with asktell() as pbt:
        claim = claimed(pbt)
        with pytest.raises((gp.TrainableError, gp.InvalidArgumentError)) as caught:
            claim.report(metrics)
        assert "'metrics'" in str(caught.value) or "'score'" in str(caught.value)
        assert (claim.step, claim.ready) == (0, False)


def test_a_report_refused_records_nothing() -> None:
    with asktell() as pbt:
        claim = claimed(pbt)
        with pytest.raises(gp.TrainableError, match="'score'"):
            claim.report(loss=1.0)
        numbered: dict[Any, float] = {"score": 0.5, 3: 1.0}
        with pytest.raises(gp.InvalidArgumentError, match="keyed by str"):
            claim.report(numbered)
        assert claim.step == 0
        while not claim.ready:
            claim.report(score=0.5)
        pbt.tell(claim, state=0.0)
        reports = pbt.result().reports
        assert [(r.step, dict(r.metrics)) for r in reports] == [
            (1, {"score": 0.5}),
            (2, {"score": 0.5}),
        ]


def test_a_ready_counter_missing_or_not_a_number_is_refused() -> None:
    with asktell(ready=gp.Every(4, counter="samples")) as pbt:
        claim = claimed(pbt)
        for bad in ({}, {"samples": "many"}, {"samples": [4]}):
            with pytest.raises(gp.TrainableError, match="'samples'"):
                claim.report(score=0.5, **bad)
        assert claim.step == 0
        claim.report(score=0.5, samples=4)
        assert claim.ready
        pbt.tell(claim, state=0.0)
        assert [r.step for r in pbt.result().reports] == [1]


def test_a_metric_the_store_cannot_keep_is_refused_when_reported(tmp_path: Path) -> None:
    with asktell(storage=f"sqlite:///{tmp_path}/pbt.db") as pbt:
        claim = claimed(pbt)
        with pytest.raises(gp.InvalidArgumentError, match=r"Got other=<object object"):
            claim.report(score=0.5, other=object())
        claim.report(score=0.5, other=[1, (2.0, "x")], at=np.float32(1.5))
        claim.report(score=0.6)
        assert pbt.tell(claim, state=0.0) is not None


def test_a_report_after_ready_or_after_tell_is_refused() -> None:
    with asktell() as pbt:
        claim = ready(pbt)
        with pytest.raises(gp.InvalidArgumentError, match="after it was ready at step 2"):
            claim.report(score=0.9)
        assert claim.step == 2
        with pytest.raises(gp.InvalidArgumentError, match="after it was ready"):
            pbt.tell(claim, state=0.0, metrics=[{"score": 0.9}])
        pbt.tell(claim, state=0.0)
        with pytest.raises(gp.InvalidArgumentError, match="after its round was told"):
            claim.report(score=0.9)
        assert [r.step for r in pbt.result().reports] == [1, 2]


# -- tell ------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(value=ANYTHING)
def test_hostile_claims_get_a_clear_answer(value: Any) -> None:
    with asktell() as pbt:
        claim = ready(pbt)
        before = recorded(pbt)
        with pytest.raises(gp.InvalidArgumentError, match=r"'claim' parameter of AskTell\.tell"):
            pbt.tell(value, state=0.0)
        assert recorded(pbt) == before
        pbt.tell(claim, state=0.0)  # the real one still tells


def test_a_claim_of_another_asktell_or_told_twice_is_refused() -> None:
    store = gp.MemoryStore()
    with asktell(storage=store) as first, asktell(storage=store) as second:
        claim = ready(first)
        before = recorded(first)
        with pytest.raises(gp.InvalidArgumentError, match="from another AskTell"):
            second.tell(claim, state=0.0)
        assert recorded(first) == before
        first.tell(claim, state=0.0)
        told = recorded(first)
        for owner, got in ((first, "told already"), (second, "from another AskTell")):
            with pytest.raises(gp.InvalidArgumentError, match=got):
                owner.tell(claim, state=0.0)
        assert recorded(first) == told


@settings(max_examples=200, deadline=None)
@given(metrics=ANYTHING)
def test_hostile_tell_metrics_get_a_clear_answer(metrics: Any) -> None:
    with asktell() as pbt:
        claim = claimed(pbt)
        before = recorded(pbt)
        _, refused = answer(lambda: pbt.tell(claim, state=0.0, metrics=metrics))
        if refused is not None:
            assert "'metrics'" in refused or "'score'" in refused
            assert recorded(pbt) == before
            assert (claim.step, claim.told) == (0, False)
            while not claim.ready:  # the claim goes on
                claim.report(score=0.5)
            pbt.tell(claim, state=0.0)
        else:  # an empty sequence: a round told before it was ready
            assert list(metrics) == []
            assert pbt.result().population[claim.member].step == 0


@settings(max_examples=300, deadline=None)
@given(state=ANYTHING, call=st.booleans())
def test_hostile_states_get_a_clear_answer(state: Any, call: bool) -> None:
    with asktell() as pbt:
        claim = ready(pbt)
        before = recorded(pbt)
        _, refused = answer(lambda: pbt.tell(claim, state=(lambda: state) if call else state))
        if refused is not None:
            assert "state" in refused
            assert "Fix:" in refused
            assert recorded(pbt) == before  # nothing recorded
            assert not claim.told  # the claim stays open: tell it again
            pbt.tell(claim, state=0.0)
        checkpoint = pbt.result().population[claim.member].checkpoint
        assert checkpoint is not None
        assert checkpoint.step == 2


def test_a_state_that_raises_leaves_the_claim_open_and_leaving_gives_it_back() -> None:
    def broken() -> Any:
        raise KeyError("the user's own error")

    with asktell() as pbt:
        claim = ready(pbt)
        before = recorded(pbt)
        with claim:
            with pytest.raises(KeyError, match="the user's own error"):
                pbt.tell(claim, state=broken)
            assert recorded(pbt) == before
            assert not claim.told
        again = [pbt.ask() for _ in range(SETTINGS["population"])]
        assert claim.member in [c.member for c in again if c is not None]  # given back
        assert pbt.result().population[claim.member].step == 0


def test_a_timeout_is_real_time_whatever_the_run_s_clock() -> None:
    """A run on a gp.ManualClock (which moves only when told) still stops waiting."""
    clock = gp.ManualClock()
    store = gp.MemoryStore(clock=clock)
    options = {"storage": store, "clock": clock, "population": 1}
    with asktell(**options) as first, asktell(**options) as second:
        held = claimed(first)
        began = time.monotonic()
        assert second.ask(timeout=0.3) is None  # the one member is held by `first`
        assert 0.3 <= time.monotonic() - began < 5.0
        assert clock.now() == 0.0
        assert held.member == 0


def test_a_claim_whose_lease_was_lost_is_told_once() -> None:
    clock = gp.ManualClock()
    store = gp.MemoryStore(clock=clock)
    options = {"storage": store, "clock": clock, "lease_seconds": 5.0}
    with asktell(**options) as first, asktell(**options) as second:
        claim = ready(first)
        clock.advance(10.0)
        assert second.ask() is not None  # it takes the member over
        with pytest.raises(gp.StaleLeaseError):
            first.tell(claim, state=0.0)
        with pytest.raises(gp.InvalidArgumentError, match="told already"):
            first.tell(claim, state=0.0)
        with claim:  # leaving it gives nothing back and raises nothing
            pass
