"""The population's datastore: the contract every backend keeps.

Workers meet only here. A backend stores, per run: the run's config; one row per member
(a :class:`~genepool.member.MemberView`, with its lease); the reports; the events; and
which checkpoints are pinned or collected.

The contract (checked by ``tests/store/test_contract.py`` over every backend):

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
* **Events alone.** :meth:`Store.events` is ``history(run).events``: the same events, in
  the same order. The base class reads them through :meth:`Store.history`; a backend
  whose history is large overrides it to read the events only (a worker restoring its
  plateau tracker, or :class:`genepool.Result` drawing a lineage, needs no report).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from genepool._errors import StaleLeaseError, StorageError
from genepool.member import ACTIVE, FAILED, Event, MemberView, Population, Report
from genepool.store._claims import claim_order, pick_claim

__all__ = [
    "History",
    "Lease",
    "Store",
    "WorkerInfo",
    "claim_order",
    "counts_crash",
    "holder_dead",
    "pick_claim",
]


@functools.cache
def _this_machine() -> str:
    """The process space this process runs in, read once: the kernel's boot id and this
    process's PID namespace (Linux), as ``"<boot id>/<pid namespace>"``. Two processes
    with the same value can see each other's pids; ``""`` where it cannot be read (other
    systems), and then no holder is ever known dead at once."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except (OSError, ValueError):
        return ""
    return f"{boot}/{namespace}" if boot and namespace else ""


# A child made by fork reads its own: it may be in a new PID namespace.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_this_machine.cache_clear)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """Who holds a lease: a worker's name, host, process id and start time, and the
    process space its pid belongs to (``machine``: the kernel's boot id and the PID
    namespace, ``"<boot id>/<pid namespace>"``; ``""`` when unknown, as in a lease written
    by a genepool older than the field).

    ``driver_pid`` and ``driver_start`` name the run's driver, the process that started
    this worker (its pid and start time in clock ticks since boot), in the same process
    space; the executors set them, ``None`` where there is no driver to name (a worker on
    another machine) or it is unknown. A worker that dies with its driver counts no crash
    against its member (:func:`counts_crash`)."""

    name: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started: float = 0.0
    proc_start: int | None = field(default_factory=lambda: _process_start(os.getpid()))
    machine: str = field(default_factory=_this_machine)
    driver_pid: int | None = None
    driver_start: int | None = None

    @classmethod
    def with_driver(cls, name: str, *, started: float, driver: int | None) -> WorkerInfo:
        """This process's info as a worker whose driver is the process ``driver`` (read
        now: its start time tells a reused pid apart); ``driver=None`` names none."""
        start = None if driver is None else _process_start(driver)
        return cls(name=name, started=started, driver_pid=driver, driver_start=start)


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to train one member until ``expires``, proven by ``token``."""

    run: str
    member: int
    token: int
    worker: WorkerInfo
    expires: float


@dataclass(frozen=True, slots=True)
class History:
    """Everything recorded of a run: its reports and its events, in order."""

    reports: tuple[Report, ...]
    events: tuple[Event, ...]


def _process_start(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (Linux), to tell reused pids apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


#: How long a holder seen alive (its pid running, with its start time) is taken to be the
#: same process without reading ``/proc`` again. A holder that exits is still known dead at
#: once (its pid is gone); only a pid reused by a new process within this time goes unseen
#: for that long. Reading ``/proc`` for every held member at every claim cost more than
#: the rest of the claim.
ALIVE_RECHECK_SECONDS = 1.0

_seen_alive: dict[tuple[int, int], float] = {}


def holder_dead(worker: WorkerInfo) -> bool:
    """Whether a lease holder is known dead: in this very process space (the same host
    name, boot and PID namespace), its process is gone (or its pid now belongs to a
    process started later). Any other holder is never known dead, its lease runs out
    instead: one on another machine, even one with the same host name (containers and
    cloned images share host names), one in another PID namespace, and one whose machine
    is unknown (``""``: an old lease, or a system where it cannot be read)."""
    if worker.host != _hostname() or not worker.machine or worker.machine != _this_machine():
        return False
    try:
        os.kill(worker.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    if worker.proc_start is None:
        return False
    key = (worker.pid, worker.proc_start)
    now = time.monotonic()
    seen = _seen_alive.get(key)
    if seen is not None and now - seen < ALIVE_RECHECK_SECONDS:
        return False
    started = _process_start(worker.pid)
    if started is not None and started != worker.proc_start:
        _seen_alive.pop(key, None)
        return True
    if len(_seen_alive) > 4096:  # holders come and go over a long life: forget them
        _seen_alive.clear()
    _seen_alive[key] = now
    return False


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


def counts_crash(worker: WorkerInfo) -> bool:
    """Whether taking over a lease ``worker`` never released counts a crash against its
    member: not when the worker and the run's driver it records are both known dead (in
    this process space, as :func:`holder_dead` knows it; the driver's pid gone or reused).
    Killing the driver (a preempted job, the out-of-memory killer) ends its workers too,
    and the member did nothing wrong. Any other lease left behind counts one: a worker that
    died while its driver lived, one that hung until its lease expired, and one whose
    driver cannot be checked (none recorded, or another machine)."""
    if worker.driver_pid is None or not holder_dead(worker):
        return True
    driver = WorkerInfo(
        name="driver",
        host=worker.host,
        pid=worker.driver_pid,
        proc_start=worker.driver_start,
        machine=worker.machine,
    )
    return not holder_dead(driver)


@functools.cache
def _hostname() -> str:
    """This machine's name (asked once)."""
    return socket.gethostname()


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
