"""The population in rank order, for truncation selection without a pass over every member.

:class:`Ranking` keeps the members a ready member ranks itself among (every one not
failed with a score of its own, :meth:`Population.ranked`) as ``(rank value, id, whether
it can donate)``, sorted (:class:`~genepool._persistent.SortedBlocks`, shared between
snapshots: a write copies a block, not the group), in one group per latest ready counter.
Comparing a member with a whole group is then a binary search, even where comparisons are
aligned (:meth:`Population.compared`): every member of a group that is not ahead of it is
compared with it at the group's counter, by its latest score. Members ahead of it are
compared one by one (in a run that claims the member furthest behind first, they are few).

It is derived once per snapshot and updated as members change
(:meth:`genepool.member.Population.with_members`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter

import numpy as np

from genepool._persistent import SortedBlocks
from genepool.member import MemberView, Mode, Population

__all__ = ["Ranking"]

#: A group's key: its members' latest ready counter; ``None`` for members without a curve.
GroupKey = float | None
#: A ranked member: its rank value (:meth:`Population.rank_value`), its id and whether it
#: can donate (:attr:`MemberView.can_donate`), ordered by the first two (no two members
#: share an id). Only what ranks is kept: a write that changes none of it (most of a
#: round's writes) leaves the ranking as it was.
Entry = tuple[float, int, bool]


def _group(member: MemberView) -> GroupKey:
    return member.curve[-1][0] if member.curve else None


@dataclass(frozen=True, slots=True)
class Ranking:
    """The ranked members, grouped by their latest ready counter, each group sorted by
    ``(rank value, id)``. A :class:`~genepool.member.Derived` of a population."""

    mode: Mode
    groups: dict[GroupKey, SortedBlocks[Entry]]

    @classmethod
    def of(cls, population: Population) -> Ranking:
        groups: dict[GroupKey, list[Entry]] = {}
        for m in population:
            value = population.rank_value(m)
            if value > -math.inf:
                groups.setdefault(_group(m), []).append((value, m.id, m.can_donate))
        return cls(population.mode, {k: SortedBlocks.of(e) for k, e in groups.items()})

    def updated(self, changes: Sequence[tuple[MemberView, MemberView]]) -> Ranking:
        rank_value = Population((), self.mode).rank_value
        groups = dict(self.groups)  # the old ranking's groups stay as they were
        for old, new in changes:
            before, after = _ranked(old, rank_value), _ranked(new, rank_value)
            if before == after:  # the same value, group and donor status: nothing moves
                continue
            if before is not None:
                groups[before[0]] = groups[before[0]].remove(before[1])
            if after is not None:
                key, entry = after
                groups[key] = groups[key].add(entry) if key in groups else SortedBlocks.of([entry])
        return Ranking(self.mode, {key: entries for key, entries in groups.items() if entries})

    def others(self, population: Population, member: MemberView) -> int:
        """How many members rank, ``member`` left out (as ``population`` has it)."""
        count = sum(len(entries) for entries in self.groups.values())
        return count - 1 if _entry(population, member.id) is not None else count

    def count_below(
        self, population: Population, member: MemberView, tie: Callable[[int], int]
    ) -> int:
        """How many members other than ``member`` rank below it, each compared with it
        (:meth:`Population.compared`), equal values ordered by ``tie(id)``."""
        mine = tie(member.id)
        below = 0
        for entries, own in self._as_seen_by(population, member):
            if own is None:  # ahead of it: one by one
                for theirs, value, other in _one_by_one(population, member, entries):
                    below += (theirs, tie(other)) < (value, mine)
                continue
            lower = entries.bisect_left((own, -math.inf))
            upper = entries.bisect_right((own, math.inf))
            below += lower
            equal = itertools.islice(entries.iter_from(lower), upper - lower)
            for _, other, _donates in equal:  # equal values: the round's order decides
                below += other != member.id and tie(other) < mine
        found = _entry(population, member.id)
        if found is not None:  # the member itself, if counted among its group's lower values
            own = _own_value(population, member, found[0])
            below -= own is not None and found[1][0] < own
        return below

    def draw(
        self, population: Population, member: MemberView, k: int, rng: np.random.Generator
    ) -> MemberView | None:
        """A member drawn uniformly, with ``rng``, among those other than ``member`` that
        rank among the top ``k`` as it sees them (each compared with it), or tie with the
        last of them, and can donate: the ``r``-th of them in id order, for ``r`` drawn
        below their number. ``None`` when none can donate."""
        ahead: list[Entry] = []  # members ahead of it, by their values as it sees them
        behind: list[SortedBlocks[Entry]] = []  # the other groups, each seen as a whole
        for entries, own in self._as_seen_by(population, member):
            if own is None:
                ahead.extend(
                    (theirs, other, population[other].can_donate)
                    for theirs, _, other in _one_by_one(population, member, entries)
                )
            else:
                behind.append(entries)
        # the k-th best value of the others: among the top k + 1 of each group and those
        # ahead, less the member's own value if among them
        values = [value for value, _, _ in ahead]
        for entries in behind:
            values.extend(map(itemgetter(0), entries.iter_from(-(k + 1))))
        mine = _entry(population, member.id)
        if mine is not None:
            entries = self.groups[mine[0]]
            if entries.bisect_left(mine[1]) >= len(entries) - (k + 1):
                values.remove(mine[1][0])
        values.sort(reverse=True)
        line = values[k - 1]
        chosen = [entry for entry in ahead if entry[0] >= line]
        for entries in behind:
            chosen.extend(entries.iter_from(entries.bisect_left((line, -math.inf))))
        ids = [other for _, other, donates in chosen if donates and other != member.id]
        if not ids:
            return None
        r = int(rng.integers(len(ids)))
        return population[int(np.partition(ids, r)[r])]  # the r-th smallest id, unsorted

    def _as_seen_by(
        self, population: Population, member: MemberView
    ) -> Iterator[tuple[SortedBlocks[Entry], float | None]]:
        """Each group with the value ``member`` has against every one of its members
        (:meth:`Population.compared`); ``None`` for a group ahead of it."""
        for key, entries in self.groups.items():
            yield entries, _own_value(population, member, key)


def _entry(population: Population, member_id: int) -> tuple[GroupKey, Entry] | None:
    """The member's group and entry in the ranking, as ``population`` has it; ``None``
    when it does not rank (or is not one of its members)."""
    try:
        view = population[member_id]
    except (KeyError, IndexError):
        return None
    return _ranked(view, population.rank_value)


def _ranked(
    member: MemberView, rank_value: Callable[[MemberView], float]
) -> tuple[GroupKey, Entry] | None:
    """The member's group and entry; ``None`` when it does not rank."""
    value = rank_value(member)
    return (_group(member), (value, member.id, member.can_donate)) if value > -math.inf else None


def _own_value(population: Population, member: MemberView, key: GroupKey) -> float | None:
    """The value ``member`` has against the members of the group ``key`` (its score at
    their latest ready counter, when aligned); ``None`` for a group ahead of it."""
    latest = _group(member)
    if not population.aligned or latest is None or key is None or key == latest:
        return population.rank_value(member)
    if key > latest:
        return None
    return population.value_at(member, key)  # behind it: where they are, by their latest


def _one_by_one(
    population: Population, member: MemberView, entries: SortedBlocks[Entry]
) -> Iterator[tuple[float, float, int]]:
    """For a group ahead of ``member``: each other member's value and ``member``'s, as
    :meth:`Population.compared` has them, and its id."""
    for _, other, _donates in entries:
        if other != member.id:
            theirs, own = population.compared(population[other], member)
            yield theirs, own, other
