"""The one error hierarchy of genepool.

Every error the library raises on purpose is a :class:`GenepoolError`, and also
an instance of the builtin that fits it (``ValueError`` for a bad argument,
``ImportError`` for a missing extra), so that ``except ValueError`` keeps working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CheckpointError",
    "GenepoolError",
    "HyperparameterNotAppliedError",
    "InvalidArgumentError",
    "MissingDependencyError",
    "StaleLeaseError",
    "StorageError",
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
    """The datastore refused an operation or is in an inconsistent state."""


class StaleLeaseError(StorageError):
    """A write came with a lease (fencing token) that is no longer the member's current one."""


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
