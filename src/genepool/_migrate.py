"""``genepool migrate``: rewrite a run's checkpoints of the first format in the safe one.

Checkpoints written before genepool had a safe format are pickles, which only trusting
code reads (reading one can run code). Migrating reads each of them once, under the
user's word that the storage is trusted, and rewrites its payload in the format that
runs nothing when read (:mod:`genepool.checkpoints._codec`). The checkpoint keeps its id
and manifest fields, so the store's references (members, pins, exploits) stay as they are.

Run it while no run uses the checkpoints: a reader that read a manifest just before its
payload was rewritten could find the old payload gone.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from genepool._errors import CheckpointError, invalid
from genepool.checkpoints import CheckpointStore
from genepool.checkpoints._codec import decode, encode, is_legacy

if TYPE_CHECKING:
    from genepool.store import Store

__all__ = ["Migration", "migrate", "migrate_checkpoints"]

log = logging.getLogger("genepool.migrate")


@dataclass
class Migration:
    """What a migration did, per checkpoint id."""

    #: Rewritten in the safe format: they read without trust now.
    migrated: list[str] = field(default_factory=list)
    #: Rewritten in the safe format, but they hold objects only pickle stores (kept as
    #: pickled entries): reading them still needs trust. Id -> where the first one is.
    still_pickled: dict[str, str] = field(default_factory=dict)
    #: In the safe format already.
    current: list[str] = field(default_factory=list)
    #: In the run's folder but not this datastore's (another's, or older and unclaimed):
    #: left as they are.
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """The counts, and where each checkpoint that still needs trust holds an object."""
        return {
            "migrated": len(self.migrated),
            "current": len(self.current),
            "skipped": len(self.skipped),
            "still_pickled": dict(self.still_pickled),
        }


def _check_trust(trust: object) -> None:
    if trust is not True:
        raise invalid(
            "migrate",
            "trust",
            "True",
            repr(trust),
            "Fix: migrating reads the old checkpoints with pickle, which can run code: pass "
            "trust=True (--trust-checkpoints) only if you trust whoever could write there.",
        )


def migrate(
    storage: str | Store,
    name: str | None = None,
    *,
    checkpoints: str | os.PathLike[str] | CheckpointStore | None = None,
    trust: bool = False,
) -> Migration:
    """Rewrite the first-format checkpoints of a store's runs (or of the run ``name``) in
    the safe format (what ``genepool migrate`` does).

    The checkpoints are those of the run's folder that belong to the store (a folder
    written before folders named their datastore is adopted as :func:`genepool.run`
    adopts it: when a member refers to one of its checkpoints).

    Args:
        storage: The store's URL, or a store.
        name: Only this run (default: every run of the store).
        checkpoints: Where the checkpoints are (default: as :func:`genepool.run`'s).
        trust: Must be True (see :func:`migrate_checkpoints`).

    Raises:
        InvalidArgumentError: ``trust`` is not True, or ``name`` is not a run of the store.
        StorageError: The run's folder belongs to another datastore.
        CheckpointError: A checkpoint is torn or could not be rewritten.
    """
    _check_trust(trust)
    from genepool._create import own_checkpoints
    from genepool._storage import open_storage
    from genepool.clock import SystemClock

    store, the_checkpoints = open_storage(storage, checkpoints, 1, SystemClock())
    try:
        runs = store.runs()
        if name is not None and name not in runs:
            raise invalid("migrate", "name", f"one of the store's runs {runs}", repr(name))
        done = Migration()
        for run in [name] if name is not None else runs:
            own_checkpoints(store, the_checkpoints, run, list(store.population(run)))
            on_disk = the_checkpoints.ids(run)
            ours = the_checkpoints.owned_by(store.identity, on_disk)
            done.skipped.extend(sorted(set(on_disk) - set(ours)))
            part = migrate_checkpoints(the_checkpoints, ids=ours, trust=trust)
            done.migrated += part.migrated
            done.current += part.current
            done.still_pickled.update(part.still_pickled)
        return done
    finally:
        close = getattr(store, "close", None)
        if isinstance(storage, str) and callable(close):  # opened here (not the caller's)
            close()


def migrate_checkpoints(
    checkpoints: CheckpointStore, *, ids: list[str], trust: bool = False
) -> Migration:
    """Rewrite those of the checkpoints ``ids`` that are in the first format in the safe
    format.

    Args:
        checkpoints: The checkpoint store.
        ids: The checkpoints to look at.
        trust: Must be True: the old checkpoints are read with pickle, which runs code, so
            the caller says that whoever could write to the storage is trusted.

    Raises:
        InvalidArgumentError: ``trust`` is not True.
        CheckpointError: A checkpoint is torn, or could not be rewritten (the ones before
            it are migrated; run again to go on).
    """
    _check_trust(trust)
    done = Migration()
    for checkpoint_id in ids:
        blob = checkpoints.get(checkpoint_id)
        if not is_legacy(blob):
            done.current.append(checkpoint_id)
            continue
        payload = decode(blob, checkpoint_id=checkpoint_id, trust=True)
        try:
            new = encode(payload)
        except CheckpointError as err:
            new = encode(payload, trust=True)
            done.still_pickled[checkpoint_id] = str(err).split(", which", 1)[0]
        checkpoints.rewrite(checkpoint_id, new)
        done.migrated.append(checkpoint_id)
        log.info("migrated checkpoint %s", checkpoint_id)
    return done
