"""The population in rank order, for truncation selection without a pass over every member.

:class:`Ranking` keeps the members a ready member ranks itself among (every one not
failed with a score of its own, :meth:`Population.ranked`) as ``(rank value, id)`` pairs,
sorted, in one group per latest ready counter. Comparing a member with a whole group is
then a binary search, even where comparisons are aligned (:meth:`Population.compared`):
every member of a group that is not ahead of it is compared with it at the group's
counter, by its latest score. Members ahead of it are compared one by one (in a run that
claims the member furthest behind first, they are few).

It is derived once per snapshot and updated as members change
(:meth:`genepool.member.Population.with_members`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from genepool.member import MemberView, Mode, Population

__all__ = ["Ranking"]

#: A group's key: its members' latest ready counter; ``None`` for members without a curve.
GroupKey = float | None
#: A ranked member: its rank value (:meth:`Population.rank_value`) and its id.
Entry = tuple[float, int]


def _group(member: MemberView) -> GroupKey:
    return member.curve[-1][0] if member.curve else None


@dataclass(frozen=True, slots=True)
class Ranking:
    """The ranked members, grouped by their latest ready counter, each group sorted by
    ``(rank value, id)``. A :class:`~genepool.member.Derived` of a population."""

    mode: Mode
    groups: dict[GroupKey, list[Entry]]

    @classmethod
    def of(cls, population: Population) -> Ranking:
        groups: dict[GroupKey, list[Entry]] = {}
        for m in population:
            value = population.rank_value(m)
            if value > -math.inf:
                groups.setdefault(_group(m), []).append((value, m.id))
        for entries in groups.values():
            entries.sort()
        return cls(population.mode, groups)

    def updated(self, changes: Sequence[tuple[MemberView, MemberView]]) -> Ranking:
        rank_value = Population((), self.mode).rank_value
        groups = dict(self.groups)
        copied: set[GroupKey] = set()  # a group that changes is a copy: the old ranking's

        def group(key: GroupKey) -> list[Entry]:  # lists stay as they were
            if key not in copied:
                groups[key] = list(groups.get(key, ()))
                copied.add(key)
            return groups[key]

        for old, new in changes:
            if (value := rank_value(old)) > -math.inf:
                entries = group(_group(old))
                del entries[bisect.bisect_left(entries, (value, old.id))]
            if (value := rank_value(new)) > -math.inf:
                bisect.insort(group(_group(new)), (value, new.id))
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
            lower = bisect.bisect_left(entries, (own, -math.inf))
            upper = bisect.bisect_right(entries, (own, math.inf))
            below += lower
            for _, other in entries[lower:upper]:  # equal values: the round's order decides
                below += other != member.id and tie(other) < mine
        found = _entry(population, member.id)
        if found is not None:  # the member itself, if counted among its group's lower values
            own = _own_value(population, member, found[0])
            below -= own is not None and found[1][0] < own
        return below

    def top(self, population: Population, member: MemberView, k: int) -> list[MemberView]:
        """The members other than ``member`` that rank among the top ``k`` as it sees
        them (each compared with it), or tie with the last of them, that can donate: in
        id order."""
        candidates: list[Entry] = []  # as it sees them: at most the top k + 1 of a group
        ahead: list[Entry] = []
        for entries, own in self._as_seen_by(population, member):
            if own is None:
                ahead.extend((t, o) for t, _, o in _one_by_one(population, member, entries))
            else:
                candidates.extend(e for e in entries[-(k + 1) :] if e[1] != member.id)
        candidates.extend(ahead)
        candidates.sort(reverse=True)
        line = candidates[k - 1][0]  # the k-th best value
        ids = [other for value, other in ahead if value >= line]
        for entries, own in self._as_seen_by(population, member):
            if own is not None:
                start = bisect.bisect_left(entries, (line, -math.inf))
                ids.extend(other for _, other in entries[start:] if other != member.id)
        views = (population[other] for other in sorted(ids))
        return [view for view in views if view.can_donate]

    def _as_seen_by(
        self, population: Population, member: MemberView
    ) -> Iterator[tuple[list[Entry], float | None]]:
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
    value = population.rank_value(view)
    return (_group(view), (value, member_id)) if value > -math.inf else None


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
    population: Population, member: MemberView, entries: list[Entry]
) -> Iterator[tuple[float, float, int]]:
    """For a group ahead of ``member``: each other member's value and ``member``'s, as
    :meth:`Population.compared` has them, and its id."""
    for _, other in entries:
        if other != member.id:
            theirs, own = population.compared(population[other], member)
            yield theirs, own, other
