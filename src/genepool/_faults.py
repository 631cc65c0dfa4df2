"""Storage faults: the run stops, and no member pays for them.

A full disk, an I/O error or a lost database is a fault of the storage, not of the
member being trained. The worker that meets one (a :class:`~genepool.StorageError`)
gives its lease back untouched, so that the member stays active at its last recorded
checkpoint, and stops; the executor stops the other workers as on Ctrl-C (they
checkpoint, then exit) and :func:`genepool.run` raises the error, which names the path
and the fix. Running the same call again resumes the run once the cause is gone.

A storage that cannot take even the release (the database is what failed) leaves the
lease behind. The worker lists such leases (:attr:`genepool.worker.Worker.left_behind`),
and the executor remembers them here, in the driver's process (a worker process passes
its own to the driver, as JSON, when it exits), and the next run
in this process on that datastore gives them back first: the member then counts no
crash, and needs not wait for the lease to run out. A new process (the usual resume)
finds their holders and its driver dead, which counts no crash either.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from typing import Any

from genepool._errors import StaleLeaseError, StorageError
from genepool.store import Lease, Store, WorkerInfo

__all__ = [
    "STORAGE_EXIT",
    "abandon",
    "abandoned",
    "give_back_abandoned",
    "leases_from_json",
    "leases_to_json",
]

log = logging.getLogger("genepool.worker")

#: The exit status of a worker process that stopped on a storage fault (``EX_TEMPFAIL``:
#: try again later); the driver stops the run rather than start another worker.
STORAGE_EXIT = 75

_lock = threading.Lock()
#: The leases left behind in this process, by the datastore's identity.
_abandoned: dict[str, list[Lease]] = {}


def _identity(store: Store) -> str | None:
    try:
        return store.identity
    except StorageError:  # the store cannot say (the database is gone): forget it
        return None


def abandon(store: Store, leases: list[Lease]) -> None:
    """Remember ``leases``, which ``store`` could not take back after a storage fault."""
    identity = _identity(store) if leases else None
    if identity is None:
        return
    with _lock:
        _abandoned.setdefault(identity, []).extend(leases)
    for lease in leases:
        log.info("member %d: lease left behind, to give back when the run resumes", lease.member)


def abandoned(store: Store) -> list[Lease]:
    """The leases of ``store`` left behind in this process (not given back yet)."""
    identity = _identity(store)
    with _lock:
        return list(_abandoned.get(identity or "", ()))


def give_back_abandoned(store: Store, run: str) -> int:
    """Release the leases of ``run`` left behind in this process (see the module), each
    only if it is still the member's (its fencing token); return how many were."""
    identity = _identity(store)
    if identity is None:
        return 0
    with _lock:
        leases = _abandoned.get(identity, [])
        mine = [lease for lease in leases if lease.run == run]
        leases[:] = [lease for lease in leases if lease.run != run]
    released = 0
    for lease in mine:
        try:
            store.commit(lease, release=True)
            released += 1
        except StaleLeaseError:  # taken over since, or run out: nothing to give back
            continue
    return released


def leases_to_json(leases: list[Lease]) -> str:
    """``leases`` as JSON, for a worker process to hand to its driver."""
    return json.dumps(
        [
            {
                "run": lease.run,
                "member": lease.member,
                "token": lease.token,
                "expires": lease.expires,
                "worker": dataclasses.asdict(lease.worker),
            }
            for lease in leases
        ]
    )


def leases_from_json(text: str) -> list[Lease]:
    """The leases :func:`leases_to_json` wrote (what does not parse is skipped: the
    lease then runs out as any other)."""
    try:
        items: Any = json.loads(text)
        return [
            Lease(
                run=str(d["run"]),
                member=int(d["member"]),
                token=int(d["token"]),
                expires=float(d["expires"]),
                worker=WorkerInfo(**d["worker"]),
            )
            for d in items
        ]
    except (ValueError, TypeError, KeyError):
        log.warning("a worker's leases left behind could not be read: they will run out")
        return []
