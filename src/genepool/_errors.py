"""The one error hierarchy of genepool.

Every error the library raises on purpose is a :class:`GenepoolError`, and also
an instance of the builtin that fits it (``ValueError`` for a bad argument,
``ImportError`` for a missing extra), so that ``except ValueError`` keeps working.
"""

from __future__ import annotations

import errno
from typing import Any

__all__ = [
    "CheckpointError",
    "CollectedPinError",
    "GenepoolError",
    "HyperparameterNotAppliedError",
    "InvalidArgumentError",
    "MissingDependencyError",
    "StaleLeaseError",
    "StorageError",
    "StorageFaultError",
    "TrainableError",
]


class GenepoolError(Exception):
    """Base class of every error genepool raises on purpose."""


class InvalidArgumentError(GenepoolError, ValueError):
    """An argument or a declared value is not valid; the message says how to fix it."""


class MissingDependencyError(GenepoolError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class TrainableError(GenepoolError, RuntimeError):
    """The user's trainable broke the trainable contract (not: it raised while training)."""


class HyperparameterNotAppliedError(GenepoolError, RuntimeError):
    """The hyperparameters in effect in a trainable differ from the ones decided."""


class StorageError(GenepoolError, RuntimeError):
    """The datastore or the checkpoint storage failed or refused an operation, or is in an
    inconsistent state: a fault of the storage, never of a member. A run stops on one
    with its members left active, and the same call resumes it once the cause is gone."""


class StorageFaultError(StorageError):
    """The storage failed while in use (a full disk, an I/O error, a lost connection to
    the database): a fault that is usually passing, and never a member's. A run stops on
    one with its members active; the same call resumes it once the cause is gone
    (``genepool`` exits with status 75 on one: try again later)."""


class StaleLeaseError(StorageError):
    """A write came with a lease (fencing token) that is no longer the member's current one."""


class CollectedPinError(StorageError):
    """An exploit asked to pin its donor's checkpoint, which was collected meanwhile
    (the donor moved on): nothing was written, and the member goes on with its own
    weights. A race between workers, not a fault of the storage."""


class CheckpointError(GenepoolError, RuntimeError):
    """A checkpoint is missing, torn, or cannot be (de)serialised."""


def invalid(
    owner: str, name: str, must: str, got: Any, fix: str | None = None
) -> InvalidArgumentError:
    """Build the one message shape for bad arguments.

    ``The 'low' parameter of Float must be less than 'high'. Got low=3 instead. Fix: ...``
    """
    message = f"The {name!r} parameter of {owner} must be {must}. Got {got} instead."
    if fix:
        message += f" {fix}"
    return InvalidArgumentError(message)


def missing_dependency(package: str, extra: str, purpose: str) -> MissingDependencyError:
    """Build the error for a missing optional dependency, naming the extra to install."""
    return MissingDependencyError(
        f"{purpose} needs the optional dependency {package!r}, which is not installed. "
        f"Install it with: pip install 'genepool[{extra}]'"
    )


#: What to do about a failed write, by its ``errno``.
_FIXES = {
    errno.ENOSPC: "free space on the disk that holds it (or move it to a larger one)",
    errno.EDQUOT: "free space within your disk quota there (or raise the quota)",
    errno.EIO: "the disk reported an I/O error: check it (dmesg, its health) or move to another",
    errno.EROFS: "the filesystem is read-only: remount it read-write or use another",
    errno.EACCES: "give this process the right to write there",
    errno.EPERM: "give this process the right to write there",
}


def storage_fault(err: OSError, what: str, where: str) -> StorageFaultError:
    """The error for an operating-system fault while ``what`` (``"writing checkpoint
    'run/m0/s4-...'"``) in ``where`` (a folder, a URL without its secrets): the cause,
    and the fix by its ``errno`` (a full disk, an I/O error, a read-only filesystem)."""
    fix = _FIXES.get(err.errno or 0, "remove the cause")
    return StorageFaultError(
        f"{what} in {where} failed: {err.strerror or err}. The storage failed, not the "
        f"member: the run stops with its members active. Fix: {fix}, then run the same "
        "call again: it resumes."
    )
