"""What every logger sends of a lineage: at most ``lineage_points`` points, spread evenly."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import genepool as gp
from genepool.loggers import LINEAGE_POINTS
from genepool.loggers._base import LineagePoint, check_lineage_points, lineage_thinned


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
