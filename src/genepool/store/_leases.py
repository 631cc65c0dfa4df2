"""Leases: who holds a member (:class:`WorkerInfo`), the right to train it
(:class:`Lease`), and the rules every backend keeps about them.

* A lease **holds** its member while it has not run out and its holder is not known dead
  (:func:`holds`; :func:`holder_dead` knows a holder dead only in this very process
  space).
* A write with a lease that is no longer the member's current one (its token was bumped
  by another claim, or the lease was released) is refused with
  :class:`~genepool.StaleLeaseError` (:func:`check_lease`): the fencing of the contract.
* A lease taken over without being released counts a crash against its member, unless its
  holder died with the run's driver (:func:`counts_crash`).
"""

from __future__ import annotations

import functools
import os
import socket
import time
from dataclasses import dataclass, field

from genepool._errors import StaleLeaseError

__all__ = [
    "ALIVE_RECHECK_SECONDS",
    "Lease",
    "WorkerInfo",
    "check_lease",
    "counts_crash",
    "holder_dead",
    "holds",
    "stale_lease",
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


def holds(*, holder: WorkerInfo | None, expires: float | None, now: float) -> bool:
    """Whether a lease (its holder and expiry; ``None`` for no lease) holds its member at
    ``now``: it has not run out, and its holder is not known dead (:func:`holder_dead`)."""
    return holder is not None and expires is not None and expires > now and not holder_dead(holder)


def check_lease(lease: Lease, *, current: int | None) -> None:
    """Refuse a write with ``lease`` unless it is the member's current lease.

    Args:
        lease: The lease the writer holds.
        current: The token of the member's current lease; ``None`` when nobody holds it
            (it was released, or never claimed).

    Raises:
        StaleLeaseError: The lease was lost: the writer must stop writing for the member.
    """
    if current is None or current != lease.token:
        raise stale_lease(lease, current=current)


def stale_lease(lease: Lease, *, current: int | None) -> StaleLeaseError:
    """The error for a write with ``lease`` when the member's current lease is ``current``
    (its token; ``None`` when nobody holds it)."""
    return StaleLeaseError(
        f"member {lease.member}: lease token {lease.token} is no longer current "
        f"(held now: {'nobody' if current is None else current}); this worker must stop "
        "writing for it"
    )
