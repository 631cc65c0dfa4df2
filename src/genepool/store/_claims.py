"""Claims: which member a claim takes, and what taking it over does to it; the rules every
backend shares (see :mod:`genepool.store._base` for the contract).

The active members are kept in claim order (:class:`ClaimQueue`, a sorted list shared
between snapshots: :class:`~genepool._persistent.SortedBlocks`), derived once per snapshot
and updated as members change (:meth:`genepool.member.Population.with_members`),
so that a claim looks at the members furthest behind first and stops at the first it may
take, instead of reading every member of the population at every claim.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from genepool._persistent import SortedBlocks
from genepool.member import ACTIVE, MemberView, Population
from genepool.store._leases import WorkerInfo, counts_crash

__all__ = ["ClaimQueue", "claim_order", "counts_a_crash", "pick_claim", "with_crash"]

ClaimKey = tuple[float, int, int]


def claim_order(member: MemberView) -> ClaimKey:
    """The order in which members are claimed: the one furthest behind first."""
    return (member.ready_count - (0.5 if member.pending else 0.0), member.step, member.id)


@dataclass(frozen=True, slots=True)
class ClaimQueue:
    """The active members' :func:`claim_order` keys, sorted: the first is the member
    furthest behind. A :class:`~genepool.member.Derived` of a population."""

    keys: SortedBlocks[ClaimKey]

    @classmethod
    def of(cls, population: Population) -> ClaimQueue:
        return cls(SortedBlocks.of(claim_order(m) for m in population if m.status == ACTIVE))

    def updated(self, changes: Sequence[tuple[MemberView, MemberView]]) -> ClaimQueue:
        keys = self.keys  # the queue of the old snapshot stays as it was
        for old, new in changes:
            before = claim_order(old) if old.status == ACTIVE else None
            after = claim_order(new) if new.status == ACTIVE else None
            if before == after:  # most writes leave a member's place in the queue alone
                continue
            if before is not None:
                keys = keys.remove(before)
            if after is not None:
                keys = keys.add(after)
        return ClaimQueue(keys)

    def slowest(self) -> int | None:
        """The fewest ready rounds an active member has done; ``None`` if none is active.
        (The first key is that member's, less half a round if it is pending.)"""
        return math.ceil(self.keys[0][0]) if self.keys else None


def pick_claim(
    members: Population | Iterable[MemberView],
    held: Callable[[int], bool],
    max_ahead: int | None,
) -> MemberView | None:
    """The member a claim takes, or ``None``.

    Among active members that nobody holds (``held(id)`` is False): a member pending its
    decision only once no active member has done fewer ready rounds (the synchronous
    barrier, live members only); any other only if it is at most ``max_ahead`` ready rounds
    ahead of the slowest active member. Then the first by :func:`claim_order`.
    """
    population = members if isinstance(members, Population) else Population(tuple(members))
    queue = population.derived(ClaimQueue.of)
    slowest = queue.slowest()
    if slowest is None:
        return None
    for ahead, _step, member_id in queue.keys:  # the furthest behind first
        if max_ahead is not None and ahead > slowest + max_ahead:
            break  # every member from here on is too far ahead (or pending past the barrier)
        view = population[member_id]
        if view.pending and view.ready_count > slowest:
            continue  # the barrier: someone has not finished the round
        if not held(member_id):
            return view
    return None


def counts_a_crash(left: WorkerInfo | None) -> bool:
    """Whether a claim that takes over a lease counts a crash against its member: the lease
    was never released (its holder ``left`` died or hung; ``None``: it was released), and
    its holder did not die with the run's driver
    (:func:`~genepool.store._leases.counts_crash`)."""
    return left is not None and counts_crash(left)


def with_crash(member: MemberView) -> MemberView:
    """The member with one crash more (see :func:`counts_a_crash`)."""
    return dataclasses.replace(member, crashes=member.crashes + 1)
