"""Truncation selection through the population's ranking (issue 15, "Scale") decides as
the plain pass over every member did: the same bottom, the same donors, on populations
with ties, failed members, members without a curve, members a round ahead, aligned or
not; and a ranking carried through ``Population.with_members`` is the one made afresh."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import genepool as gp
from genepool import member as member_module
from genepool.member import CheckpointRef, MemberView, Population
from genepool.policy._ranking import Ranking
from genepool.policy.select import _tie_break, truncation_split
from genepool.store._claims import ClaimQueue


def _reference(
    fraction: float, population: Population, member: MemberView, rng: np.random.Generator
) -> MemberView | None:
    """Truncation.select as it was: a pass over every member (the specification)."""
    others = population.ranked(exclude=member.id)
    k = truncation_split(len(others) + 1, fraction)
    round_ = member.ready_count
    mine = _tie_break(round_, member.id)
    below = 0
    for other in others:
        theirs, own = population.compared(other, member)
        below += (theirs, _tie_break(round_, other.id)) < (own, mine)
    if k == 0 or below >= k:
        return None
    seen = {m.id: population.compared(m, member)[0] for m in others}
    line = sorted(seen.values())[len(others) - k]
    top = [m for m in others if seen[m.id] >= line and m.can_donate]
    if not top:
        return None
    donor: MemberView = top[int(rng.integers(len(top)))]
    return donor


@contextlib.contextmanager
def updated_if(update: bool) -> Iterator[None]:
    """With ``update``, what was derived is updated at every write, and the members kept
    in shared blocks, even for these few members (as for a population above ``FLAT``),
    else made again when asked (as for one of at most ``SMALL``)."""
    with (
        mock.patch.object(member_module, "SMALL", 0 if update else 10**9),
        mock.patch.object(member_module, "FLAT", 0 if update else member_module.FLAT),
    ):
        yield


SCORES = st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0, math.nan])


@st.composite
def views(draw: st.DrawFn, member_id: int) -> MemberView:
    rounds = draw(st.integers(0, 4))
    curve = tuple((4.0 * (r + 1), draw(SCORES.filter(math.isfinite))) for r in range(rounds))
    if draw(st.booleans()) and curve:  # an interrupted round or a copied checkpoint
        curve = curve[: draw(st.integers(1, len(curve)))]
    own = draw(st.booleans())
    score = draw(SCORES)
    checkpoint = None
    if draw(st.booleans()):
        owner = member_id if own else member_id + 1
        checkpoint = CheckpointRef(f"c{member_id}", owner, 4, 4.0, score, {"x": 1})
    return MemberView(
        id=member_id,
        hparams={"x": 1},
        checkpoint=checkpoint,
        score=score,
        curve=curve if draw(st.integers(0, 5)) else (),
        failures=draw(st.sampled_from([0, 0, 0, 1])),
        ready_count=len(curve),
    )


@st.composite
def populations(draw: st.DrawFn) -> Population:
    size = draw(st.integers(1, 12))
    members = tuple(draw(views(i)) for i in range(size))
    return Population(members, draw(st.sampled_from(["max", "min"])), draw(st.booleans()))


@settings(max_examples=400, deadline=None)
@given(populations(), st.data(), st.sampled_from([0.2, 0.25, 0.5]), st.integers(0, 3))
def test_truncation_decides_as_the_pass_over_every_member(
    population: Population, data: st.DataObject, fraction: float, seed: int
) -> None:
    member = data.draw(st.sampled_from(population.members))
    if data.draw(st.booleans()):  # deciding with its round in it, as a worker does
        population.derived(Ranking.of)
        member = data.draw(views(member.id))
        with updated_if(data.draw(st.booleans())):
            population = population.with_members([member])
    rule = gp.Truncation(fraction)
    expected = _reference(fraction, population, member, np.random.default_rng(seed))
    found = rule.select(population, member, np.random.default_rng(seed))
    assert (found.id if found else None) == (expected.id if expected else None)
    assert rule.never_selects(population, member) == (not _bottom(fraction, population, member))


def _bottom(fraction: float, population: Population, member: MemberView) -> bool:
    """Whether the member is in the bottom ``k``, by the pass over every member."""
    others = population.ranked(exclude=member.id)
    k = truncation_split(len(others) + 1, fraction)
    round_ = member.ready_count
    mine = _tie_break(round_, member.id)
    below = sum(
        (population.compared(o, member)[0], _tie_break(round_, o.id))
        < (population.compared(o, member)[1], mine)
        for o in others
    )
    return k > 0 and below < k


@settings(max_examples=200, deadline=None)
@given(populations(), st.data())
def test_what_is_derived_is_carried_through_with_members(
    population: Population, data: st.DataObject
) -> None:
    population.derived(Ranking.of)
    population.derived(ClaimQueue.of)
    changed = [
        data.draw(views(i))
        for i in data.draw(st.lists(st.sampled_from(range(len(population))), max_size=4))
    ]
    before = population.derived(Ranking.of).groups.copy()
    with updated_if(data.draw(st.booleans())):
        new = population.with_members(changed)
    fresh = Population(new.members, new.mode, new.aligned)
    assert new.derived(Ranking.of).groups == fresh.derived(Ranking.of).groups
    assert new.derived(ClaimQueue.of).keys == fresh.derived(ClaimQueue.of).keys
    assert population.derived(Ranking.of).groups == before  # the old snapshot's is unchanged
