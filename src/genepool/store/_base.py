"""The population's datastore: the contract every backend keeps.

Workers meet only here. A backend stores, per run: the run's config; one row per member
(a :class:`~genepool.member.MemberView`, with its lease); the reports; the events; and
which checkpoints are pinned or collected.

The rules every backend keeps are written once, beside this contract: which member a
claim takes (:mod:`genepool.store._claims`), what a commit may write
(:mod:`genepool.store._commits`), and when a lease holds or is stale
(:mod:`genepool.store._leases`).

The contract (checked over every backend by ``tests/store/test_contract.py``'s
``StoreContract``, which each backend's test module subclasses):

* **Safe under concurrent workers.** Every method may be called at once from several
  threads (and, for durable backends, processes and machines).
* **Snapshots are immutable.** :meth:`Store.population` returns a new frozen object;
  later writes never change one already handed out.
* **A claim is compare-and-set.** :meth:`Store.claim` returns a lease only to one caller
  per member; it picks the active, unleased member furthest behind (:func:`claim_order`:
  fewest ready rounds, a member awaiting its decision counting half a round less, then
  lowest step, then id), and none more than ``max_ahead`` ready rounds ahead of the
  slowest active member.
* **The synchronous barrier.** A member ``pending`` its decision is claimable only once
  no active member has done fewer ready rounds: it counts live members only, so a
  finished or failed member never holds it.
* **Crashes.** A claim that takes a member whose previous lease was never released (it
  expired, or its holder is dead) adds one to the member's ``crashes`` in the same write,
  unless the run's driver died with it (:func:`counts_crash`: the holder and the driver it
  records are both known dead, in this process space): a killed driver takes its workers
  with it, and that is no fault of their members. A holder whose driver cannot be checked
  (none recorded, another machine, or a lease that expired while its holder still runs)
  keeps the rule: one crash.
* **Revive.** :meth:`Store.revive` makes failed members active again, each in one write
  with a ``"revive"`` event: from the checkpoint they hold, with ``crashes``,
  ``failures``, ``stop_reason`` and ``pending`` cleared, and no lease.
* **Fencing.** Each claim bumps the member's token; :meth:`Store.commit` and
  :meth:`Store.renew` with an older token raise :class:`~genepool.StaleLeaseError`.
* **A finished member cannot change.** Committing to a member whose status is not
  ``"active"`` raises :class:`~genepool.StorageError`.
* **Pins.** A commit may pin a checkpoint (an exploit's donor checkpoint) in the same
  write. A member holds one pin at most, on the checkpoint its weights come from: a new
  pin, or committing a checkpoint of its own, releases its previous one. A
  checkpoint that is some member's current one, or pinned, is never returned by
  :meth:`Store.collect`; a collected checkpoint can no longer be pinned (the commit
  raises :class:`~genepool.CollectedPinError`, and the member goes on with its own
  weights). Any other :class:`~genepool.StorageError` from a write is a fault of the
  storage: the worker gives its lease back and the run stops, its members active.
* **Retention.** A member keeps the checkpoints it held before its current one in its
  view's ``previous`` (newest first; the worker keeps ``gp.run(keep=)`` of them, what the
  member falls back to when its current checkpoint cannot be read). The store keeps them
  with each write of the view: a checkpoint in some member's ``previous`` is never
  returned by :meth:`Store.collect` either. Whoever writes a view that drops a checkpoint
  from ``previous`` hands it to :meth:`Store.collect`. So a run holds at most
  ``members x (keep + 1)`` checkpoints, plus the pinned ones.
* **Identity.** :attr:`Store.identity` is a random id made once per datastore and kept in
  it: every call, every process and every store object that opens the same datastore
  reads the same string, writes never change it, and no two datastores share one (a
  :class:`~genepool.store.MemoryStore` is a new datastore each time it is made). It is
  what checkpoint folders and manifests record as their owner, so that no run deletes
  the checkpoints of another datastore's run (see
  :meth:`genepool.checkpoints.CheckpointStore.own`).
* **Reading on.** :meth:`Store.history_after` reads, at one moment, the population and
  the reports and events at positions after the ones given, each in the order written,
  with the position of the last of each: ``history(run)`` is it from the start. Where
  :attr:`Store.history_in_order` is true (the memory store, SQLite: one write at a time),
  a row is visible once every row before it is, so a reader that gives back the positions
  it was handed reads each row exactly once. Elsewhere (PostgreSQL's concurrent commits)
  a later position may be seen first: a reader that must miss nothing reads it all.
* **Events alone.** :meth:`Store.events` is ``history(run).events``: the same events, in
  the same order. The base class reads them through :meth:`Store.history`; a backend
  whose history is large overrides it to read the events only (a worker restoring its
  plateau tracker, or :class:`genepool.Result` drawing a lineage, needs no report).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

from genepool._errors import StaleLeaseError, StorageError
from genepool.member import ACTIVE, FAILED, Event, MemberView, Population, Report
from genepool.store._claims import claim_order, pick_claim
from genepool.store._leases import Lease, WorkerInfo, counts_crash, holder_dead

__all__ = [
    "History",
    "HistoryAfter",
    "Lease",
    "Store",
    "WorkerInfo",
    "claim_order",
    "counts_crash",
    "holder_dead",
    "pick_claim",
]


@dataclass(frozen=True, slots=True)
class History:
    """Everything recorded of a run: its reports and its events, in order."""

    reports: tuple[Report, ...]
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class HistoryAfter:
    """What :meth:`Store.history_after` read: the population, and the reports and events
    after the positions it was given, each in order, with the position of the last of each
    (the one given when there is none after it)."""

    population: Population
    reports: tuple[Report, ...]
    events: tuple[Event, ...]
    reports_end: int
    events_end: int


#: The kind of the event :meth:`Store.revive` records.
REVIVE_EVENT = "revive"


def revived(view: MemberView, now: float) -> tuple[MemberView, Event]:
    """A failed member made active again by :meth:`Store.revive`, and its event."""
    data = {"reason": view.stop_reason, "crashes": view.crashes, "failures": view.failures}
    new = dataclasses.replace(
        view, status=ACTIVE, stop_reason=None, crashes=0, failures=0, pending=False
    )
    return new, Event(REVIVE_EVENT, view.id, view.step, data, now)


def revive_ids(population: Population, members: Sequence[int] | None) -> list[int]:
    """The failed members of ``members`` (default: all), in order; raises
    :class:`~genepool.StorageError` for an id that is not one of the population's."""
    size = len(population.members)
    wanted = range(size) if members is None else sorted(set(members))
    for i in wanted:
        if type(i) is not int or not 0 <= i < size:
            raise StorageError(
                f"revive: members={list(members or ())!r} names {i!r}, not one of the run's "
                f"member ids 0 .. {size - 1}; give ids of this run's members"
            )
    return [i for i in wanted if population.members[i].status == FAILED]


class Store(ABC):
    """The datastore contract (see the module's docstring).

    A store is a context manager: ``with SQLStore(url) as store: ...`` closes its
    connections at the end of the block (:meth:`close`)."""

    def close(self) -> None:  # noqa: B027 - most stores hold no connection
        """Close this process's connections (a store that has none does nothing); the
        store reopens them if it is used again."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    @abstractmethod
    def identity(self) -> str:
        """This datastore's random id (32 hex digits), made once and kept in it: the same
        for every store object, in every process, that opens the same datastore."""

    @abstractmethod
    def create_run(
        self, run: str, *, config: Mapping[str, Any], members: Sequence[MemberView]
    ) -> bool:
        """Create the run with its starting members; ``False`` (and no change) if it exists."""

    @abstractmethod
    def run_config(self, run: str) -> Mapping[str, Any]:
        """The config the run was created with; :class:`KeyError` if there is no such run."""

    @abstractmethod
    def population(self, run: str) -> Population:
        """An immutable snapshot of every member of the run."""

    @abstractmethod
    def held(self, run: str) -> frozenset[int]:
        """The members a lease holds now: one not released, not run out, whose holder is
        not known dead (:func:`holder_dead`). Only a worker holding a member's lease can
        record a checkpoint of it, so a checkpoint of a member not held that no member
        names is garbage, however young. A store may report more members held than are
        (a margin for clocks), never fewer."""

    @abstractmethod
    def claim(
        self, run: str, worker: WorkerInfo, *, lease_seconds: float, max_ahead: int | None = None
    ) -> Lease | None:
        """Claim the member furthest behind that nobody holds; ``None`` if there is none."""

    #: Whether :meth:`commit_and_claim` is one write (a worker then leaves a round's last
    #: write to its next claim).
    fuses_commit_and_claim: bool = False

    def commit_and_claim(
        self,
        lease: Lease,
        worker: WorkerInfo,
        *,
        lease_seconds: float,
        max_ahead: int | None = None,
        member: MemberView | None = None,
        reports: Sequence[Report] = (),
        events: Sequence[Event] = (),
        pin: str | None = None,
    ) -> Lease | None:
        """End ``lease`` with a last write, as ``commit(lease, member=member,
        reports=reports, events=events, pin=pin, release=True)``, then claim as
        :meth:`claim` does (the member just written may be claimed again, as it now stands).

        A lease that was lost raises :class:`~genepool.StaleLeaseError` (and nothing is
        written or claimed) when there is something to write; with nothing to write it is
        passed over. A pin on a collected checkpoint raises
        :class:`~genepool.CollectedPinError` (and nothing is written or claimed). The
        default is two writes; a backend that makes them one says so with
        :attr:`fuses_commit_and_claim`.
        """
        try:
            self.commit(lease, member=member, reports=reports, events=events, pin=pin, release=True)
        except StaleLeaseError:
            if member is not None or reports or events or pin is not None:
                raise
        return self.claim(lease.run, worker, lease_seconds=lease_seconds, max_ahead=max_ahead)

    @abstractmethod
    def renew(self, lease: Lease, *, lease_seconds: float) -> Lease:
        """Extend a lease (a heartbeat); raises ``StaleLeaseError`` if it was lost."""

    @abstractmethod
    def commit(
        self,
        lease: Lease,
        *,
        member: MemberView | None = None,
        reports: Sequence[Report] = (),
        events: Sequence[Event] = (),
        pin: str | None = None,
        release: bool = False,
    ) -> Population:
        """Write, atomically, the member's new row, reports, events and a pin; return a
        fresh snapshot. With ``release`` the lease ends in the same write."""

    @abstractmethod
    def collect(self, run: str, candidates: Sequence[str]) -> list[str]:
        """Mark the candidates that nothing references (no member's current checkpoint, no
        member's ``previous``, no pin) as collected and return them: the caller may then
        delete their bytes."""

    @abstractmethod
    def history(self, run: str) -> History:
        """All reports and events of the run, each in the order they were written."""

    #: Whether a reader of :meth:`history_after` that gives back the positions it was
    #: handed reads each row once (see the module's "Reading on").
    history_in_order: bool = False

    def history_after(
        self, run: str, *, reports_after: int = -1, events_after: int = -1
    ) -> HistoryAfter:
        """The population, then the reports and events at positions after ``reports_after``
        and ``events_after`` (``-1``: all), each in the order written, read at one moment.
        The default reads the population, then the whole history, its positions counted
        from 0; a backend that can read the new rows alone overrides it."""
        population = self.population(run)
        history = self.history(run)
        reports, events = history.reports[reports_after + 1 :], history.events[events_after + 1 :]
        return HistoryAfter(
            population,
            reports,
            events,
            max(reports_after, len(history.reports) - 1),
            max(events_after, len(history.events) - 1),
        )

    def events(self, run: str) -> tuple[Event, ...]:
        """The run's events in the order they were written (``history(run).events``,
        without reading the reports where the backend can)."""
        return self.history(run).events

    def revive(self, run: str, members: Sequence[int] | None = None) -> list[int]:
        """Make the run's failed members (of ``members``; default: all) active again, in
        one write, and return their ids: each goes on from the checkpoint it holds, with
        ``crashes``, ``failures``, ``stop_reason`` and ``pending`` cleared and no lease,
        and a ``"revive"`` event (data: the ``reason`` it stopped for, its ``crashes`` and
        ``failures``). A member that is not failed is left as it is; an id that is not one
        of the run's raises :class:`~genepool.StorageError`."""
        raise NotImplementedError(f"{type(self).__name__} cannot revive members")

    def runs(self) -> list[str]:
        """The names of the runs in this store."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its runs")
