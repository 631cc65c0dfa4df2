"""The checkpoint contract: :class:`CheckpointStore`, the rules every backend keeps.

A checkpoint holds what a member is: the trainable's state and its random stream. The
datastore records which checkpoint each member holds and which are pinned by an exploit;
the worker deletes one (:meth:`CheckpointStore.discard`) only after
:meth:`genepool.store.Store.collect` said nothing refers to it. A checkpoint store keeps
the bytes and a manifest (what the caller says about them, plus their size, SHA-256, the
versions that wrote them, and the datastore they belong to).

The rules, for every backend:

* **Ids are never reused.** :meth:`~CheckpointStore.put` returns a new id,
  ``"<run>/m<member>/s<step>-<unique>"``, across processes and restarts alike.
* **A checkpoint is immutable.** Its bytes never change while it has its id (a rewrite
  by ``genepool migrate`` keeps the same state in a newer format).
* **Writes are atomic.** A reader sees all of a checkpoint or nothing; a write cut short
  leaves at most a leftover that :meth:`~CheckpointStore.sweep` removes once it is older
  than a grace, so that another process's write in progress is never taken for one.
* **Reading checks.** A payload that does not match its manifest is torn and never
  loaded, and a checkpoint that is gone reads as missing: both a CheckpointError.
* **A full disk is the storage's fault.** A write the storage refuses raises a
  StorageError, which stops the run; nothing is stored.
* **Nothing that is not ours is deleted.** Each run's folder belongs to one datastore,
  named by its :attr:`~genepool.store.Store.identity` in a marker beside the members'
  folders, and each checkpoint's manifest names it too. A run is refused a folder that
  belongs to another datastore (:meth:`CheckpointStore.own`), and nothing deletes a
  checkpoint that belongs to another (:meth:`CheckpointStore.owned_by`), so two runs given
  one checkpoints folder never delete each other's checkpoints.

The payload's format (:mod:`genepool.checkpoints._codec`) never runs code when read. The
files' layout and the manifest's text: :mod:`genepool.checkpoints._layout`. The tests of
this contract are one class that each backend's tests subclass
(``tests/checkpoints/contract.py``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from genepool._errors import CheckpointError, StorageError
from genepool.checkpoints._layout import Owner, check_run_name, owner_json, parse_owner

__all__ = ["SWEEP_GRACE_SECONDS", "CheckpointStore", "read_only_error"]

log = logging.getLogger("genepool.checkpoints")

#: How old (seconds since the last change) a leftover of a crash must be for
#: :meth:`CheckpointStore.sweep` to remove it: far longer than any write in progress.
SWEEP_GRACE_SECONDS = 3600.0


class CheckpointStore(ABC):
    """Where checkpoint bytes live. Writes are atomic: a reader sees all of one or nothing.

    A run's checkpoints belong to its datastore: :meth:`own` marks the run's folder as
    the datastore's (or refuses a folder of another datastore), and from then on every
    :meth:`put` of that run writes the datastore's identity into the manifest.
    """

    @property
    def fsync(self) -> bool:
        """Whether a write is flushed to the disk before it returns (it survives a power
        loss); ``False`` for a store that does not (memory)."""
        return False

    @abstractmethod
    def put(
        self,
        run: str,
        member: int,
        step: int,
        blob: bytes,
        *,
        manifest: Mapping[str, Any] | None = None,
    ) -> str:
        """Store ``blob`` and return its new, never reused id.

        Args:
            run: The run's name (a single path component: no ``/``, ``\\`` or ``:``, and
                not starting with ``.``).
            member: The member's id (an int >= 0).
            step: The member's step when it saved (an int >= 0).
            blob: The payload, usually :func:`encode`'s output.
            manifest: What the caller wants kept with the checkpoint (hyperparameters,
                score, ...): JSON-serialisable values (numpy scalars and arrays are
                converted). It is read back under ``"fields"`` of :meth:`manifest`.

        Returns:
            The checkpoint's id, ``"<run>/m<member>/s<step>-<unique>"``.

        Raises:
            InvalidArgumentError: A bad run name, member or step, or a manifest that is
                not JSON-serialisable.
            StorageError: The storage could not take it (a full disk, an I/O error, no
                right to write): a fault of the storage, not of the member, which stops
                the run; nothing was stored.
        """

    @abstractmethod
    def get(self, checkpoint_id: str) -> bytes:
        """The bytes of a checkpoint; CheckpointError if it does not exist."""

    @abstractmethod
    def manifest(self, checkpoint_id: str) -> dict[str, Any]:
        """The manifest of a checkpoint (a fresh dict); CheckpointError if it does not exist.

        Its keys: ``format`` (the manifest format, :data:`MANIFEST_FORMAT`), ``id``,
        ``run``, ``member``, ``step``, ``payload`` (``{"file", "size", "sha256"}``),
        ``created`` (ISO 8601, UTC), ``versions`` (``{"genepool", "python", "numpy"}``),
        ``store`` (the identity of the datastore the checkpoint belongs to: the one that
        :meth:`own`-ed its run's folder; ``None`` for a checkpoint written without one,
        or in format 1) and ``fields`` (the caller's ``manifest=``, JSON-normalised;
        ``{}`` if none was given).
        """

    @abstractmethod
    def delete(self, checkpoint_id: str) -> None:
        """Remove a checkpoint (a no-op if it is gone already)."""

    def rewrite(self, checkpoint_id: str, blob: bytes) -> None:
        """Replace a checkpoint's payload with ``blob``, the same state in a newer format
        (``genepool migrate``). Its id, manifest fields and owner stay; a reader sees the
        old payload or the new one, whole. Not for a checkpoint a run is using: a reader
        that read the manifest just before may find the old payload gone.

        Raises:
            CheckpointError: The checkpoint is missing or torn, or could not be rewritten
                (then it still holds its old payload).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot rewrite a checkpoint")

    def discard(self, checkpoint_id: str) -> None:
        """Remove a checkpoint that nothing refers to any more (the worker's call, after
        :meth:`genepool.store.Store.collect`). Like :meth:`delete`, but a store may keep
        what it held to reuse for a later :meth:`put` (until :meth:`drain`)."""
        self.delete(checkpoint_id)

    def drain(self) -> None:
        """Release whatever :meth:`discard` kept for reuse. The store stays usable."""
        return

    def ids(self, run: str | None = None, *, older_than: float | None = None) -> list[str]:
        """The ids of the complete checkpoints, sorted: of one run if given, and only those
        written more than ``older_than`` seconds ago if given. A ``run`` that cannot be a
        run's name (``..``, ``a/b``) is an InvalidArgumentError."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its checkpoints")

    def sweep(
        self,
        *,
        grace_seconds: float | None = None,
        run: str | None = None,
        owner: str | None = None,
    ) -> int:
        """Remove what a crash left behind (of one run if given) once it is
        ``grace_seconds`` old (default :data:`SWEEP_GRACE_SECONDS`); how many were removed.
        With ``owner`` (the identity of the datastore asking), a shorter grace applies only
        to run folders that belong to that datastore: in any other a write of another
        datastore's run may be in progress, and only leftovers older than the default
        grace go. A store that a crash cannot leave anything in removes nothing. A ``run``
        that cannot be a run's name (``..``, ``a/b``) is an InvalidArgumentError."""
        if run is not None:
            check_run_name(run, owner=f"{type(self).__name__}.sweep")
        return 0

    # -- ownership -----------------------------------------------------------------------
    def own(self, run: str, owner: Owner, *, referenced: Collection[str] = ()) -> None:
        """Make ``run``'s folder belong to ``owner`` (the run's datastore), or refuse it;
        from then on this object's :meth:`put` of the run records ``owner`` in each
        manifest. :func:`genepool.run` calls it before the run starts.

        * A folder whose marker names ``owner``: it is the run's already.
        * A folder whose marker names another datastore: refused.
        * A new or empty folder, or one holding only ``owner``'s checkpoints: marked as
          ``owner``'s.
        * A folder written before folders had markers: adopted (marked) if a member of the
          run refers to one of its checkpoints (``referenced``: the ids the run's members
          hold); otherwise it is another run's, left untouched, and reported (a warning):
          the run goes on in it, and deletes only the checkpoints it writes itself.

        Raises:
            StorageError: The folder belongs to another datastore (the message names both,
                and the fix), or its marker is unreadable.
            InvalidArgumentError: ``run`` cannot be a run's name.
        """
        check_run_name(run, owner=f"{type(self).__name__}.own")
        try:
            found = self.owner(run)
        except NotImplementedError:  # a store that keeps no markers: manifests alone
            found = owner
        if found is None:
            found = self._adopt(run, owner, referenced)
        if found is not None and found.store != owner.store:
            raise _taken(self._folder(run), run, found, owner)
        self.__dict__.setdefault("_owners", {})[run] = owner.store

    def owner(self, run: str) -> Owner | None:
        """The datastore ``run``'s folder belongs to (its marker); ``None`` if it has no
        marker. StorageError if the marker is unreadable."""
        raw = self._read_marker(check_run_name(run, owner=f"{type(self).__name__}.owner"))
        return None if raw is None else parse_owner(raw, self._folder(run))

    def owned_by(self, identity: str, checkpoint_ids: Iterable[str]) -> list[str]:
        """Those of ``checkpoint_ids`` that belong to the datastore ``identity``: the
        manifest names it, or names none (format 1, or unreadable) and the run's folder
        is marked as that datastore's. The others are never to be deleted by it."""
        folders: dict[str, str | None] = {}
        out: list[str] = []
        for checkpoint_id in checkpoint_ids:
            try:
                store = self.manifest(checkpoint_id).get("store")
            except CheckpointError:  # torn: its folder's owner decides
                store = None
            if store is None:
                run = checkpoint_id.split("/", 1)[0]
                if run not in folders:
                    try:
                        found = self.owner(run)
                    except (NotImplementedError, StorageError):
                        found = None
                    folders[run] = None if found is None else found.store
                store = folders[run]
            if store == identity:
                out.append(checkpoint_id)
        return out

    def _adopt(self, run: str, owner: Owner, referenced: Collection[str]) -> Owner | None:
        """A folder without a marker: mark it as ``owner``'s unless it holds checkpoints
        that are not (see :meth:`own`); the owner it has now (``None``: left unmarked)."""
        unowned: list[str] = []
        others: set[str] = set()
        for checkpoint_id in self.ids(run):
            try:
                store = self.manifest(checkpoint_id).get("store")
            except CheckpointError:
                store = None
            if store is None:
                unowned.append(checkpoint_id)
            elif store != owner.store:
                others.add(store)
        folder = self._folder(run)
        adopted = bool(set(unowned) & set(referenced))  # the old checkpoints are the run's
        if not adopted and (unowned or others):
            log.warning(
                "%s holds checkpoints that are not those of run %r of %s: %d written before "
                "genepool recorded their datastore, to which none of its members refers, "
                "and %d of another datastore (%s). They are left untouched (this run never "
                "deletes them), and the folder is not marked as this datastore's. Fix: give "
                "this run another checkpoints folder or run name, or delete them if they "
                "are not needed.",
                folder,
                run,
                owner.shown,
                len(unowned),
                len(others),
                ", ".join(sorted(others)) or "none",
            )
            return None
        if not self._create_marker(run, owner_json(run, owner)):
            return self.owner(run)  # another process marked it meanwhile
        if adopted:
            log.info(
                "%s: %d checkpoint(s) written before genepool recorded their datastore now "
                "belong to %s, whose run %r refers to them (%d of another datastore stay "
                "that datastore's)",
                folder,
                len(unowned),
                owner.shown,
                run,
                len(others),
            )
        return owner

    def _owner_of(self, run: str) -> str | None:
        """The identity :meth:`own` bound ``run`` to in this object (``None``: unbound)."""
        owners: dict[str, str] = self.__dict__.get("_owners", {})
        return owners.get(run)

    def _folder(self, run: str) -> str:
        """Where ``run``'s folder is, for messages."""
        return f"{self!r}, run {run!r}"

    def _read_marker(self, run: str) -> bytes | None:
        """The text of ``run``'s owner marker; ``None`` if there is none."""
        raise NotImplementedError(f"{type(self).__name__} keeps no owner markers")

    def _create_marker(self, run: str, text: bytes) -> bool:
        """Write ``run``'s owner marker unless it has one; whether this call wrote it."""
        raise NotImplementedError(f"{type(self).__name__} keeps no owner markers")

    def _grace_in(self, run: str, grace: float, owner: str | None) -> float:
        """The grace :meth:`sweep` gives ``run``'s folder when ``owner`` asks: the one
        asked for in a folder of ``owner``'s, else at least the default."""
        if owner is None or grace >= SWEEP_GRACE_SECONDS:
            return grace
        try:
            found = self.owner(run)
        except (NotImplementedError, StorageError, ValueError):  # ValueError: a bad name
            found = None
        return grace if found is not None and found.store == owner else SWEEP_GRACE_SECONDS


def _taken(folder: str, run: str, found: Owner, owner: Owner) -> StorageError:
    """The refusal of a run folder that belongs to another datastore."""
    message = (
        f"The checkpoints folder {folder} of run {run!r} belongs to another datastore: "
        f"{found.shown} (identity {found.store}), not {owner.shown} (identity {owner.store}), "
        "the one this run uses. Runs of two datastores in one folder would delete each "
        "other's checkpoints, so this run is refused it. "
    )
    if not found.durable:
        message += (
            f"{found.shown} was an in-memory store: it ended with its process, so its run "
            "cannot be resumed, but its checkpoints (its best model among them) are still "
            "there. Fix: pass another checkpoints= folder or another run name=, or delete "
            "the folder if its checkpoints are no longer needed; to resume a run after its "
            "process ends, give it a durable storage= (e.g. 'sqlite:///pbt.db')."
        )
    else:
        message += (
            "Fix: pass another checkpoints= folder or another run name=, or, to resume "
            "that run, storage= the datastore it belongs to."
        )
    return StorageError(message)


def read_only_error(store: CheckpointStore, method: str) -> CheckpointError:
    """The error of a write to checkpoints opened to be read only."""
    return CheckpointError(
        f"{store!r} was opened read-only (to read a run back), so {method}() changes "
        "nothing. Fix: open the checkpoints without read_only=True to write or delete."
    )
