"""What every logger sends: of a lineage at most ``lineage_points`` points, spread evenly;
of each member's points and its lineage, one every ``population / rate`` seconds."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import genepool as gp
from genepool.loggers import LINEAGE_POINTS, RATE, MemberPoint
from genepool.loggers._base import (
    LineagePoint,
    Paced,
    check_lineage_points,
    check_rate,
    lineage_thinned,
)


def curve(steps: int) -> list[LineagePoint]:
    return [LineagePoint(s, float(s), s // 7, {"lr": 0.1}, math.nan) for s in range(1, steps + 1)]


@given(steps=st.integers(0, 400), every=st.integers(1, 12), most=st.none() | st.integers(2, 50))
def test_a_lineage_is_bounded_keeps_its_ends_and_spreads_evenly(
    steps: int, every: int, most: int | None
) -> None:
    points = curve(steps)
    sent = lineage_thinned(points, every, most)
    kept = [p for p in points if p.step % every == 0 or p is points[-1]]
    assert [p.step for p in sent] == sorted({p.step for p in sent})  # in order, no repeats
    assert set(map(id, sent)) <= set(map(id, kept))  # only points `every` keeps
    if most is None or len(kept) <= most:
        assert sent == kept
        return
    assert len(sent) == most
    assert sent[0] is kept[0]
    assert sent[-1] is kept[-1]
    gaps = [kept.index(b) - kept.index(a) for a, b in itertools.pairwise(sent)]
    assert max(gaps) - min(gaps) <= 1  # evenly spread over what `every` keeps


def test_the_default_bound_is_a_thousand_points() -> None:
    assert LINEAGE_POINTS == 1000
    assert len(lineage_thinned(curve(5000), 1, LINEAGE_POINTS)) == 1000
    assert len(lineage_thinned(curve(999), 1, LINEAGE_POINTS)) == 999


@pytest.mark.parametrize("value", [0, 1, 2.5, True, "10", -3])
def test_lineage_points_must_be_a_whole_number_from_two(value: object) -> None:
    with pytest.raises(gp.InvalidArgumentError, match="'lineage_points' parameter of Owner"):
        check_lineage_points(value, "Owner")


def test_none_sends_every_point() -> None:
    assert check_lineage_points(None, "Owner") is None
    assert lineage_thinned(curve(3000), 1, None) == curve(3000)


member_points = st.lists(
    st.tuples(st.integers(0, 3), st.floats(0.0, 0.5)),  # the member, the time since the last
    max_size=60,
)


def points_of(drawn: list[tuple[int, float]]) -> list[MemberPoint]:
    """Points in the order written, each member's steps counting up, the clock going on."""
    points, now, steps = [], 1.7e9, dict[int, int]()
    for member, later in drawn:
        now += later
        steps[member] = steps.get(member, 0) + 1
        points.append(MemberPoint(member, steps[member], now, {"score": 1.0}, {"lr": 0.1}))
    return points


@given(drawn=member_points, rate=st.none() | st.floats(0.5, 50.0), cut=st.integers(0, 60))
def test_a_rate_sends_a_members_first_and_last_points_and_none_closer_than_its_interval(
    drawn: list[tuple[int, float]], rate: float | None, cut: int
) -> None:
    points = points_of(drawn)
    paced = Paced(rate, 4)
    sent = paced.take(points[:cut]) + paced.take(points[cut:])  # in two batches
    last = paced.rest()
    if rate is None:
        assert sent == points
        assert last == []
        return
    assert paced.interval == 4 / rate
    for member in {p.member for p in points}:
        own = [p for p in points if p.member == member]
        chosen = [p for p in sent if p.member == member]
        assert chosen[0] is own[0]  # its first point
        ends = [p for p in last if p.member == member]
        assert (chosen + ends)[-1] is own[-1]  # and its last, once
        assert len(ends) <= 1
        for a, b in itertools.pairwise(chosen):
            assert b.time - a.time >= paced.interval  # none closer
        latest = None
        for p in own:  # and none left out that was due
            if any(p is c for c in chosen):
                latest = p
            else:
                assert latest is not None
                assert p.time - latest.time < paced.interval
    assert paced.rest() == []  # the last points are sent once


def test_a_point_whose_time_does_not_compare_is_sent() -> None:
    paced = Paced(1.0, 1)
    a, b, c, d = (MemberPoint(0, s, t, {}, {}) for s, t in enumerate([10.0, 10.5, 9.0, math.nan]))
    assert paced.take([a, b, c, d]) == [a, c, d]  # b: too soon; c: the clock went back


@pytest.mark.parametrize("value", [0, -1, math.inf, math.nan, True, "10"])
def test_a_rate_must_be_a_number_of_points_a_second(value: object) -> None:
    with pytest.raises(gp.InvalidArgumentError, match="'rate' parameter of Owner"):
        check_rate(value, "Owner")
    assert check_rate(None, "Owner") is None
    assert check_rate(RATE, "Owner") == 5.0


@given(gaps=st.lists(st.floats(0.0, 0.5), max_size=80), interval=st.floats(0.0, 2.0))
def test_a_lineage_at_a_rate_keeps_its_ends_and_none_closer(
    gaps: list[float], interval: float
) -> None:
    times = list(itertools.accumulate(gaps, initial=100.0))
    line = [LineagePoint(s + 1, float(s), 0, {}, t) for s, t in enumerate(times)]
    sent = lineage_thinned(line, 1, None, interval)
    assert sent[0] is line[0]
    assert sent[-1] is line[-1]
    for a, b in itertools.pairwise(sent[:-1]):
        assert b.time - a.time >= interval
    if interval == 0.0:
        assert sent == line
