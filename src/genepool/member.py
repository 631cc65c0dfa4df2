"""Frozen value objects: a member as the population sees it, and the population snapshot.

These are what :func:`genepool.policy.Policy.decide` reads. They never change once made:
the store hands out a new :class:`Population` after every write.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Self, TypeVar

from genepool._persistent import BLOCK, Blocks

__all__ = [
    "ACTIVE",
    "CURVE_LENGTH",
    "FAILED",
    "FINISHED",
    "CheckpointRef",
    "Derived",
    "Event",
    "MemberView",
    "Mode",
    "Population",
    "Report",
    "Status",
]

Mode = Literal["max", "min"]
Status = Literal["active", "finished", "failed"]
ACTIVE: Status = "active"
FINISHED: Status = "finished"
FAILED: Status = "failed"
#: How many of its ready rounds a member's view keeps (``MemberView.curve``).
CURVE_LENGTH = 16


@dataclass(frozen=True, slots=True)
class CheckpointRef:
    """An immutable checkpoint: its id and what the member was when it was taken.

    Attributes:
        id: The checkpoint's id in the checkpoint store.
        member: The member that wrote it.
        step: The member's step (training its weights had) when it was taken.
        counter: The value of the ready counter then (equal to ``step`` for ``"steps"``).
        score: The decision score at that moment, ``None`` when the member had none.
        hparams: The hyperparameters in effect when it was taken.
    """

    id: str
    member: int
    step: int
    counter: float
    score: float | None
    hparams: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MemberView:
    """One member as the population sees it at a moment.

    Attributes:
        id: The member's number, 0 to population - 1.
        hparams: The hyperparameters in effect now.
        step: The training its weights have had (after an exploit: the donor's step).
        generation: How many times it was exploited; seeds its random stream.
        parent: The donor of its last exploit, ``None`` before any.
        status: ``"active"``, ``"finished"`` or ``"failed"``.
        checkpoint: Its latest checkpoint, ``None`` before the first.
        score: The score attached to ``checkpoint`` (the one a copier would get).
        recent: Its decision scores since its last exploit, oldest first (bounded window).
        failures: Consecutive failed rounds (an exception, or a NaN/inf score).
        ready_count: How many ready rounds it has completed.
        stop_reason: Why it stopped, when it did.
        pending: It has trained and checkpointed its latest round and waits for its decision
            (synchronous runs: until every active member has finished the round).
        crashes: How many times a worker died (or hung) while holding it; a member that
            keeps killing its worker (out of memory, say) is stopped.
        ready_counter: The ready counter's value at its last ready (or at the checkpoint it
            copied): the next ready counts from here, even after an interrupted round.
        curve: Its own ready rounds as ``(ready counter, score)``, oldest first, the
            latest :data:`CURVE_LENGTH`; kept through an exploit: a member ranks by the
            score of its own latest ready, never by its donor's (see
            :meth:`Population.rank_value`).
        previous: The checkpoints it held before ``checkpoint``, newest first, that the
            store keeps for it (``gp.run(keep=)`` of them): what it falls back to when its
            current checkpoint cannot be read.
        intervals: Its latest stretches of training between readies, oldest first, as
            ``(ready counter at the end, change of the score per unit of the ready
            counter since the checkpoint it started from, its hyperparameters)``: the data
            of an explore strategy that models them (:class:`genepool.PB2`), kept only
            for one (its :attr:`~genepool.policy.explore.Explore.intervals` of them).
        explore_state: What the explore strategy left at the member's latest decision for
            the next one to start from (:class:`genepool.PB2`: its model's fitted
            parameters and when), as plain data; ``None`` for strategies that keep none.
    """

    id: int
    hparams: Mapping[str, Any]
    step: int = 0
    generation: int = 0
    parent: int | None = None
    status: Status = ACTIVE
    checkpoint: CheckpointRef | None = None
    score: float | None = None
    recent: tuple[float, ...] = ()
    failures: int = 0
    ready_count: int = 0
    stop_reason: str | None = None
    pending: bool = False
    crashes: int = 0
    ready_counter: float = 0.0
    previous: tuple[CheckpointRef, ...] = ()
    curve: tuple[tuple[float, float], ...] = ()
    intervals: tuple[tuple[float, float, Mapping[str, Any]], ...] = ()
    explore_state: Mapping[str, Any] | None = None

    #: Whether its latest round failed (or the failure policy stopped it).
    failed: bool = field(init=False, repr=False, compare=False)
    #: Whether another member may copy it: it holds a checkpoint of its own with a finite
    #: score and is not failed. A member that has just exploited holds its donor's
    #: checkpoint until its next ready: it is no donor before then (its new hyperparameters
    #: are unmeasured, and the donor offers the same weights), which also keeps two members
    #: from copying one old checkpoint back and forth forever.
    can_donate: bool = field(init=False, repr=False, compare=False)

    def curve_with(self, counter: float, score: float) -> tuple[tuple[float, float], ...]:
        """:attr:`curve` with a ready at ``counter`` scoring ``score`` (what came at or
        after ``counter``, from before an exploit moved it back, goes)."""
        kept = [point for point in self.curve if point[0] < counter]
        return (*kept[-(CURVE_LENGTH - 1) :], (counter, score))

    def __post_init__(self) -> None:
        failed = self.failures > 0 or self.status == FAILED
        object.__setattr__(self, "failed", failed)
        ckpt = self.checkpoint
        score = self.score
        object.__setattr__(
            self,
            "can_donate",
            not failed
            and ckpt is not None
            and ckpt.member == self.id
            and score is not None
            and math.isfinite(score),
        )


class Derived(Protocol):
    """Something derived from a population that is cheaper to update than to make again
    (an order of its members, say), kept with it by :meth:`Population.derived`.

    Made once for a snapshot (``make(population)``); :meth:`Population.with_members`
    hands it the members it replaced and gets the new snapshot's, leaving its own as it
    was (a snapshot never changes)."""

    def updated(self, changes: Sequence[tuple[MemberView, MemberView]]) -> Self:
        """A new one for the population with each ``(old, new)`` pair's ``new`` member in
        place of ``old``; this one unchanged."""
        ...


_D = TypeVar("_D", bound=Derived)

#: A population of at most this many members is small: what was derived from a snapshot
#: of it is made afresh when first asked instead of updated at every write: for so few
#: members making it costs about what one update does, and some snapshots (a store's after
#: each write, say) are never asked. At population 32, where every round asks for the
#: ranking and the claim queue, making them afresh cost a sixth more function calls than
#: updating them (benchmarks/overhead.py's toy: 6.2 against 5.1 million); at 8, 5% fewer.
SMALL = 16
#: A new snapshot of a population of at most this many members copies a plain tuple of
#: its members: for so few, copying the tuple costs less than sharing blocks
#: (:class:`~genepool._persistent.Blocks`) and reading through them (population 128:
#: about 4 us per member-step less).
FLAT = 4 * BLOCK


def _replaced(
    members: Sequence[MemberView], replaced: Mapping[int, MemberView]
) -> Sequence[MemberView]:
    """``members`` with ``replaced[i]`` at each position ``i``: a tuple for a population of
    at most :data:`FLAT` members, else blocks shared with ``members`` but those a change
    falls in."""
    if len(members) <= FLAT:
        items = list(members)
        for at, view in replaced.items():
            items[at] = view
        return tuple(items)
    blocks = members if isinstance(members, Blocks) else Blocks(members)
    return blocks.replaced(replaced)


@dataclass(frozen=True, slots=True)
class Population:
    """An immutable snapshot of every member, with the direction of the metric.

    A new snapshot with some members replaced is :meth:`with_members`: it keeps what
    was derived from this one (:meth:`derived`), updated, where building a population
    from its members starts afresh (a store making one snapshot after another should
    use it: each of its writes then copies a block of members, sharing the others
    (:class:`~genepool._persistent.Blocks`; a tuple up to :data:`FLAT` members), and
    updates what was derived, instead of a pass over every member; a population of at
    most :data:`SMALL` members makes what was derived again when asked).

    Attributes:
        members: The members, ordered by id (a tuple, or, above :data:`FLAT` members,
            the blocks a snapshot made by :meth:`with_members` shares with the one it
            was made from).
        mode: ``"max"`` when a higher score is better, ``"min"`` otherwise.
        aligned: Compare two members at the same point of training (:meth:`compared`):
            each by its score at the latest ready both have reached, not the score of
            its latest ready (an asynchronous run, where one is a round ahead of another).
    """

    members: Sequence[MemberView]
    mode: Mode = "max"
    aligned: bool = False
    #: Member id -> position, for members not at the position of their id (made when
    #: first needed; shared by the snapshots :meth:`with_members` makes from this one).
    _index: dict[int, int] = field(default_factory=dict, compare=False, repr=False)
    _cache: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)
    #: What :meth:`derived` was asked to make, of this snapshot or of one related to it
    #: by :meth:`with_members` (shared by them): every snapshot made from here keeps it.
    _kept: set[Callable[[Population], Derived]] = field(
        default_factory=set, compare=False, repr=False
    )

    def __iter__(self) -> Iterator[MemberView]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, member_id: int) -> MemberView:
        members = self.members
        if 0 <= member_id < len(members):  # usually at the position of its id
            view = members[member_id]
            if view.id == member_id:
                return view
        return members[self._position(member_id)]

    def _position(self, member_id: int) -> int:
        """Where the member ``member_id`` is in :attr:`members`; :class:`KeyError` if none
        is. Members are usually at the position of their id: that is checked first."""
        members = self.members
        if 0 <= member_id < len(members) and members[member_id].id == member_id:
            return member_id
        if not self._index:
            self._index.update({m.id: i for i, m in enumerate(members)})
        return self._index[member_id]

    def with_members(self, views: Iterable[MemberView]) -> Population:
        """This population with each of ``views`` in place of the member with its id: a
        new snapshot (this one is unchanged) that keeps what :meth:`derived` made for
        this one, updated with the change (a small population: made again when asked)."""
        members = self.members
        replaced: dict[int, MemberView] = {}  # position -> its new member
        changes: list[tuple[MemberView, MemberView]] = []
        for view in views:
            at = self._position(view.id)
            changes.append((replaced.get(at, members[at]), view))
            replaced[at] = view
        small = len(members) <= SMALL
        new = Population(
            _replaced(members, replaced),
            self.mode,
            self.aligned,
            self._index,
            _kept=self._kept,
        )
        if not small:  # a small one's are made again when first asked (most never are)
            for make in self._kept:
                new._derived()[make] = self.derived(make).updated(changes)
        return new

    def derived(self, make: Callable[[Population], _D]) -> _D:
        """What ``make(self)`` returns, made once: from then on every snapshot made by
        :meth:`with_members` from this one, or from one it was made from, keeps it
        (updated, not made again)."""
        kept = self._derived()
        found = kept.get(make)
        if found is None:
            found = kept[make] = make(self)
            self._kept.add(make)
        return found  # type: ignore[return-value]

    def _derived(self) -> dict[Callable[[Population], Derived], Derived]:
        kept: dict[Callable[[Population], Derived], Derived] = self._cache.setdefault("derived", {})
        return kept

    def as_aligned(self) -> Population:
        """This population with :attr:`aligned` set, sharing what was derived from it."""
        if self.aligned:
            return self
        return Population(self.members, self.mode, True, self._index, self._cache, self._kept)

    def rank_value(self, member: MemberView) -> float:
        """How the member ranks when another decides, higher is better: the score of its
        own latest ready (kept through an exploit it made since: what it showed, not what
        it copied), else its checkpoint's if the checkpoint is its own; ``-inf`` if
        failed or without a score of its own."""
        if member.curve:
            score: float | None = member.curve[-1][1]
        else:  # a view from before curves were kept
            own = member.checkpoint is not None and member.checkpoint.member == member.id
            score = member.score if own else None
        if member.failed or score is None or not math.isfinite(score):
            return -math.inf
        return score if self.mode == "max" else -score

    def compared(self, other: MemberView, member: MemberView) -> tuple[float, float]:
        """``other``'s and ``member``'s :meth:`rank_value` when ``member`` decides: with
        :attr:`aligned`, each at the latest ready at or before the point of training
        both have reached (the smaller of their ready counters), from its curve."""
        if not self.aligned or not other.curve or not member.curve:
            return self.rank_value(other), self.rank_value(member)
        common = min(other.curve[-1][0], member.curve[-1][0])
        return self.value_at(other, common), self.value_at(member, common)

    def value_at(self, member: MemberView, counter: float) -> float:
        """:meth:`rank_value` from its latest ready at or before ``counter`` (its
        earliest kept one if none is)."""
        score = member.curve[0][1]
        for at, value in member.curve:
            if at > counter:
                break
            score = value
        if member.failed or not math.isfinite(score):
            return -math.inf
        return score if self.mode == "max" else -score

    def ranked(self, *, exclude: int | None = None) -> list[MemberView]:
        """The members a ready member ranks itself among: every one not failed with a
        score of its own (:meth:`rank_value`), whether or not it can donate now."""
        ranked: list[MemberView] | None = self._cache.get("ranked")
        if ranked is None:
            ranked = [m for m in self.members if self.rank_value(m) > -math.inf]
            self._cache["ranked"] = ranked
        return [m for m in ranked if m.id != exclude]

    def fitness(self, member: MemberView) -> float:
        """The member's score turned so that higher is better; ``-inf`` if failed or unscored."""
        score = member.score
        if member.failed or score is None or not math.isfinite(score):
            return -math.inf
        return score if self.mode == "max" else -score

    def _donors(self) -> list[MemberView]:
        donors: list[MemberView] | None = self._cache.get("donors")
        if donors is None:
            donors = [m for m in self.members if m.can_donate]
            self._cache["donors"] = donors
        return donors

    def donors(self, *, exclude: int | None = None) -> list[MemberView]:
        """The members another may copy: a checkpoint of their own, a score, no failure."""
        return [m for m in self._donors() if m.id != exclude]

    def best(self) -> MemberView | None:
        """The member with the best checkpoint score, ``None`` when nobody has one."""
        if "best" not in self._cache:
            sign = 1.0 if self.mode == "max" else -1.0
            scored = self._donors()
            self._cache["best"] = (
                max(scored, key=lambda m: (sign * m.score, -m.id))  # type: ignore[operator]
                if scored
                else None
            )
        best: MemberView | None = self._cache["best"]
        return best


@dataclass(frozen=True, slots=True)
class Report:
    """One call of ``step`` / ``report``: the member, its step after it, and the metrics."""

    member: int
    step: int
    metrics: Mapping[str, Any]
    time: float


@dataclass(frozen=True, slots=True)
class Event:
    """Something that changed a member: an exploit, an explore, a failure, a stop.

    ``kind`` is one of ``"start"``, ``"exploit"``, ``"explore"``, ``"failure"``, ``"stop"``,
    ``"resume"``, ``"revive"``, ``"fallback"``. ``data`` holds the details (for an
    exploit: ``donor``, ``checkpoint``, ``donor_step``, ``old_step``, ``old_hparams``,
    ``new_hparams``; for a revive, a failed member made active again: the ``reason`` it
    stopped for, its ``crashes`` and ``failures``; for a fallback, a member whose
    checkpoint could not be read: that ``checkpoint``, the ``reason``, what it fell back
    ``to``, ``"previous"``, ``"donor"`` or ``"fresh"``, the ``fallback`` checkpoint,
    ``None`` for a fresh start, and every checkpoint found ``unreadable``).
    """

    kind: str
    member: int
    step: int
    data: Mapping[str, Any]
    time: float
