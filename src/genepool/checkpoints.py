"""Checkpoints: immutable blobs with ids, written once and read by any member.

A checkpoint holds what a member is: the trainable's state and its random stream. The
datastore records which checkpoint each member holds and which are pinned by an exploit;
the worker deletes one (:meth:`CheckpointStore.discard`) only after
:meth:`genepool.store.Store.collect` said nothing refers to it. This module keeps the bytes
and a manifest (what the caller says about them, plus their size, SHA-256, the versions
that wrote them, and the datastore they belong to): in memory (:class:`MemoryCheckpoints`)
or in a local directory (:class:`LocalCheckpoints`); any fsspec URL in
:class:`genepool._fsspec_checkpoints.FsspecCheckpoints`.

**Ownership.** Each run's folder (``<root>/<run>/``) belongs to one datastore, named by
its :attr:`~genepool.store.Store.identity` in a marker beside the members' folders
(``<root>/<run>/genepool-owner.json``), and each checkpoint's manifest names it too. A run
is refused a folder that belongs to another datastore (:meth:`CheckpointStore.own`), and
nothing deletes a checkpoint that belongs to another (:meth:`CheckpointStore.owned_by`),
so two runs given one checkpoints folder never delete each other's checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import itertools
import json
import logging
import os
import platform
import re
import shutil
import sys
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from genepool._codec import FORMAT_VERSION, decode, encode
from genepool._errors import CheckpointError, StorageError, invalid, storage_fault

__all__ = [
    "FORMAT_VERSION",
    "CheckpointStore",
    "LocalCheckpoints",
    "MemoryCheckpoints",
    "Owner",
    "decode",
    "encode",
]

log = logging.getLogger("genepool.checkpoints")

#: Version of the ``manifest.json`` layout; a newer one is refused by :meth:`get`. Format 2
#: added ``store`` (the identity of the datastore the checkpoint belongs to); format 1 is
#: still read (its ``store`` reads as ``None``).
MANIFEST_FORMAT = 2
#: How old (seconds since the last change) a ``.tmp-*`` directory must be for
#: :meth:`LocalCheckpoints.sweep` to remove it: far longer than any write in progress.
SWEEP_GRACE_SECONDS = 3600.0
#: How many discarded checkpoint directories one :class:`LocalCheckpoints` object keeps,
#: per run, to write later checkpoints into (creating a directory and two files costs far
#: more than renaming a directory and overwriting its files).
SPARES_PER_RUN = 16
#: Only a checkpoint whose payload is at most this large (bytes) is kept as a spare: for a
#: larger one, writing the bytes costs far more than making the directory.
SPARE_MAX_BYTES = 1 << 20
#: A spare directory kept longer than this (seconds) is removed rather than reused, so it
#: never comes near :data:`SWEEP_GRACE_SECONDS`.
SPARE_MAX_AGE_SECONDS = 600.0

PAYLOAD_FILE = "payload.bin"
MANIFEST_FILE = "manifest.json"
TMP_PREFIX = ".tmp-"
#: The marker in a run's folder that names the datastore it belongs to. Neither
#: :meth:`CheckpointStore.ids` nor :meth:`CheckpointStore.sweep` ever takes it for a
#: checkpoint or a leftover (they look only in the members' ``m<id>`` folders).
OWNER_FILE = "genepool-owner.json"
OWNER_FORMAT = 1

# Windows refuses these in a file name; "/" and "\\" would add path levels.
_BAD_NAME_CHARS = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
_MEMBER_DIR = re.compile(r"m(0|[1-9][0-9]*)")
_CHECKPOINT_DIR = re.compile(r"s(0|[1-9][0-9]*)-[0-9a-f]{32}")
#: The payload file a manifest may name: ``payload.bin``, or the one :meth:`rewrite` wrote.
_PAYLOAD_NAME = re.compile(r"payload(-[0-9a-f]{32})?\.bin")


@dataclass(frozen=True, slots=True)
class Owner:
    """The datastore a run's checkpoint folder belongs to.

    Attributes:
        store: The datastore's :attr:`~genepool.store.Store.identity`.
        shown: How it is shown in messages: its ``repr``, passwords hidden.
        durable: Whether it outlives the process (``False`` for a
            :class:`~genepool.store.MemoryStore`, gone when its process ends).
    """

    store: str
    shown: str
    durable: bool = True


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
        return None if raw is None else _parse_owner(raw, self._folder(run))

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
        if not self._create_marker(run, _owner_json(run, owner)):
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


class MemoryCheckpoints(CheckpointStore):
    """Checkpoints as bytes in this process's memory."""

    def __init__(self) -> None:
        self._blobs: dict[str, tuple[bytes, dict[str, Any]]] = {}
        self._written: dict[str, float] = {}
        self._markers: dict[str, bytes] = {}
        self._owners: dict[str, str] = {}
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def put(
        self,
        run: str,
        member: int,
        step: int,
        blob: bytes,
        *,
        manifest: Mapping[str, Any] | None = None,
    ) -> str:
        """Store ``blob`` and its manifest; see :meth:`CheckpointStore.put`."""
        _check_key(run, member, step)
        data = bytes(blob)
        fields = _normalise_fields(manifest)
        with self._lock:
            checkpoint_id = f"{run}/m{member}/s{step}-{next(self._seq)}"
            store = self._owner_of(run)
            record = _build_manifest(checkpoint_id, run, member, step, data, fields, store)
            self._blobs[checkpoint_id] = (data, record)
            self._written[checkpoint_id] = time.time()
            return checkpoint_id

    def get(self, checkpoint_id: str) -> bytes:
        """The bytes of a checkpoint; CheckpointError if it does not exist."""
        return self._entry(checkpoint_id)[0]

    def manifest(self, checkpoint_id: str) -> dict[str, Any]:
        """The manifest of a checkpoint; see :meth:`CheckpointStore.manifest`."""
        return copy.deepcopy(self._entry(checkpoint_id)[1])

    def rewrite(self, checkpoint_id: str, blob: bytes) -> None:
        """Replace a checkpoint's payload; see :meth:`CheckpointStore.rewrite`."""
        data = bytes(blob)
        with self._lock:
            record = copy.deepcopy(self._entry(checkpoint_id)[1])
            record["payload"].update(_payload_record(data))
            self._blobs[checkpoint_id] = (data, record)

    def delete(self, checkpoint_id: str) -> None:
        """Remove a checkpoint (a no-op if it is gone already)."""
        with self._lock:
            self._blobs.pop(checkpoint_id, None)
            self._written.pop(checkpoint_id, None)

    def ids(self, run: str | None = None, *, older_than: float | None = None) -> list[str]:
        """The ids of the checkpoints in this store, sorted; see :meth:`CheckpointStore.ids`."""
        if run is not None:
            check_run_name(run, owner="MemoryCheckpoints.ids")
        prefix = None if run is None else run + "/"
        latest = None if older_than is None else time.time() - older_than
        with self._lock:
            return sorted(
                c
                for c, written in self._written.items()
                if (prefix is None or c.startswith(prefix)) and (latest is None or written < latest)
            )

    def __len__(self) -> int:
        return len(self._blobs)

    def _folder(self, run: str) -> str:
        return f"the checkpoints of run {run!r} in this process's memory (MemoryCheckpoints)"

    def _read_marker(self, run: str) -> bytes | None:
        with self._lock:
            return self._markers.get(run)

    def _create_marker(self, run: str, text: bytes) -> bool:
        with self._lock:
            return self._markers.setdefault(run, text) is text

    def _entry(self, checkpoint_id: str) -> tuple[bytes, dict[str, Any]]:
        try:
            return self._blobs[checkpoint_id]
        except KeyError:
            raise CheckpointError(f"No checkpoint {checkpoint_id!r} in this store.") from None


class LocalCheckpoints(CheckpointStore):
    """Checkpoints as immutable directories under a local (or mounted) directory.

    Each checkpoint is ``root/<run>/m<member>/s<step>-<unique>/`` holding ``payload.bin``
    and ``manifest.json``; its id is that path relative to ``root``, with ``/`` separators.
    ``<unique>`` is a random UUID, so an id is never reused, across processes and
    restarts alike.

    A write goes into ``.tmp-s<step>-<unique>/`` next to its final place and is renamed
    into place once complete, so a reader never sees a partial checkpoint. A crash
    mid-write leaves only a ``.tmp-*`` directory, which :meth:`sweep` removes (at
    construction, and whenever called). :meth:`get` checks the payload's size and SHA-256
    against the manifest. Neither hard links nor symbolic links are used.

    A checkpoint is never changed while it has its id. Once the worker discards one
    (:meth:`discard`: nothing refers to it any more), its directory is renamed to a
    ``.tmp-spare-<unique>`` name and kept by this object, a few per run, for a later
    :meth:`put` to write into (its two files overwritten in place, then the directory
    renamed into place): on many file systems creating a directory and two files costs
    ten times more than that. :meth:`drain` removes the spares; the worker calls it when
    it ends, and :meth:`sweep` removes those a crash left behind.

    Args:
        root: The directory that holds the checkpoints (created if missing).
        fsync: Flush each file and directory to the disk before a write returns, so a
            checkpoint survives a power loss, not only a crash of the process. Slower;
            off by default.
        read_only: Only read (a run read back: :meth:`genepool.Result.open`): the
            directory is neither created nor swept, and :meth:`put`, :meth:`delete`,
            :meth:`discard` and :meth:`sweep` raise CheckpointError.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     store = LocalCheckpoints(root)
        ...     cid = store.put("run", 3, 8, b"state", manifest={"score": 0.5})
        ...     (cid.startswith("run/m3/s8-"), store.get(cid), store.manifest(cid)["fields"])
        (True, b'state', {'score': 0.5})
    """

    def __init__(
        self, root: str | os.PathLike[str], *, fsync: bool = False, read_only: bool = False
    ) -> None:
        self._root = os.path.abspath(os.fspath(root))
        self._fsync = bool(fsync)
        self._read_only = bool(read_only)
        existed = os.path.isdir(self._root)
        try:
            if not self._read_only:
                os.makedirs(self._root, exist_ok=True)
            if self._fsync and not existed and not self._read_only:
                _fsync_dir(os.path.dirname(self._root))
        except OSError as err:
            raise CheckpointError(
                f"The checkpoint directory {self._root} could not be created ({err})."
            ) from err
        self._made: set[str] = set()  # directories this object created or found
        self._owners: dict[str, str] = {}  # run -> the identity own() bound it to
        # discarded checkpoint directories, renamed to spare names, to write into again:
        # run directory -> [(path, when it was discarded)]
        self._spares: dict[str, list[tuple[str, float]]] = {}
        self._lock = threading.Lock()
        self._token = uuid.uuid4().hex  # names this object's spare directories
        self._seq = itertools.count()
        if not self._read_only:
            self.sweep()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for worker processes: the root and settings, none of this object's
        caches or spare directories."""
        state = self.__dict__.copy()
        state["_made"] = set()
        state["_spares"] = {}
        for name in ("_lock", "_token", "_seq"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._token = uuid.uuid4().hex
        self._seq = itertools.count()

    @property
    def root(self) -> str:
        """The absolute path of the checkpoint directory."""
        return self._root

    @property
    def fsync(self) -> bool:
        """Whether writes are flushed to the disk before they return."""
        return self._fsync

    @property
    def read_only(self) -> bool:
        """Whether this object only reads (see the ``read_only`` argument)."""
        return self._read_only

    def __repr__(self) -> str:
        extra = ", read_only=True" if self._read_only else ""
        return f"LocalCheckpoints({self._root!r}, fsync={self._fsync}{extra})"

    # -- writing ---------------------------------------------------------------------
    def put(
        self,
        run: str,
        member: int,
        step: int,
        blob: bytes,
        *,
        manifest: Mapping[str, Any] | None = None,
    ) -> str:
        """Write a checkpoint atomically; see :meth:`CheckpointStore.put`."""
        if self._read_only:
            raise _read_only(self, "put")
        _check_key(run, member, step)
        data = bytes(blob)
        fields = _fields_json(manifest)
        name = f"s{step}-{os.urandom(16).hex()}"  # (not uuid4: half the cost, cold)
        checkpoint_id = f"{run}/m{member}/{name}"
        store = self._owner_of(run)
        text = _manifest_json(checkpoint_id, run, member, step, data, fields, store)
        run_dir = os.path.join(self._root, run)
        parent = os.path.join(run_dir, f"m{member}")
        tmp = os.path.join(parent, TMP_PREFIX + name)
        final = os.path.join(parent, name)
        spare: str | None = None
        try:
            self._mkdir(run_dir)
            self._mkdir(parent)
            spare = self._take_spare(run_dir)
            if spare is not None:
                try:
                    self._write_into(spare, data, text, fresh=False)
                    os.rename(spare, final)
                except FileNotFoundError:
                    # the spare was swept away under us (another process took it for
                    # stale): write into a new directory instead
                    _remove_tree(spare)
                    spare = None
            if spare is None:
                self._write_into(tmp, data, text, fresh=True)
                os.rename(tmp, final)
        except BaseException as err:
            _remove_tree(tmp)
            if spare is not None:
                _remove_tree(spare)
            if isinstance(err, OSError):  # a full disk, an I/O error: nothing stored
                raise storage_fault(
                    err, f"writing checkpoint {checkpoint_id!r}", self._root
                ) from err
            raise
        if self._fsync:
            try:
                _fsync_dir(parent)
            except OSError as err:
                with contextlib.suppress(OSError, CheckpointError):
                    self.delete(checkpoint_id)
                raise storage_fault(
                    err, f"flushing checkpoint {checkpoint_id!r} to the disk", self._root
                ) from err
        log.debug("wrote checkpoint %s (%d bytes)", checkpoint_id, len(data))
        return checkpoint_id

    def _write_into(self, tmp: str, data: bytes, text: bytes, *, fresh: bool) -> None:
        """Write the payload and the manifest into the temporary directory ``tmp``: made
        here if ``fresh``, else a spare directory whose files are overwritten."""
        if fresh:
            os.mkdir(tmp)
        _write_file(os.path.join(tmp, PAYLOAD_FILE), data, fsync=self._fsync)
        _write_file(os.path.join(tmp, MANIFEST_FILE), text, fsync=self._fsync)
        if self._fsync:
            _fsync_dir(tmp)

    def _take_spare(self, run_dir: str) -> str | None:
        """A spare directory of the run to write into (this object's alone from now on);
        None if there is none."""
        while True:
            with self._lock:
                spares = self._spares.get(run_dir)
                if not spares:
                    return None
                path, discarded = spares.pop()
            if time.time() - discarded <= SPARE_MAX_AGE_SECONDS:
                return path
            _remove_tree(path)

    def discard(self, checkpoint_id: str) -> None:
        """Remove a checkpoint that nothing refers to any more, keeping its directory (up to
        :data:`SPARES_PER_RUN` per run, and if its payload is at most
        :data:`SPARE_MAX_BYTES`) for a later :meth:`put` to write into.

        The checkpoint is gone at once: its directory is renamed to a ``.tmp-spare-*``
        name, which no id names. A no-op if it is gone already.

        Raises:
            CheckpointError: As :meth:`delete`.
        """
        if self._read_only:
            raise _read_only(self, "discard")
        path = self._path(checkpoint_id)
        member_dir = os.path.dirname(path)
        run_dir = os.path.dirname(member_dir)
        with self._lock:
            full = len(self._spares.get(run_dir, ())) >= SPARES_PER_RUN
        # (a directory whose payload was rewritten has no payload.bin: it is not kept)
        if full or not 0 <= _size(os.path.join(path, PAYLOAD_FILE)) <= SPARE_MAX_BYTES:
            self.delete(checkpoint_id)
            return
        spare = os.path.join(member_dir, f"{TMP_PREFIX}spare-{self._token}-{next(self._seq)}")
        try:
            os.rename(path, spare)
        except FileNotFoundError:
            return
        except OSError as err:
            raise CheckpointError(
                f"Checkpoint {checkpoint_id!r} in {self._root} could not be deleted ({err})."
            ) from err
        with self._lock:
            self._spares.setdefault(run_dir, []).append((spare, time.time()))
        log.debug("discarded checkpoint %s", checkpoint_id)

    def drain(self) -> None:
        """Remove the spare directories :meth:`discard` kept. The store stays usable."""
        with self._lock:
            spares = [path for kept in self._spares.values() for path, _ in kept]
            self._spares.clear()
        for path in spares:
            _remove_tree(path)

    def delete(self, checkpoint_id: str) -> None:
        """Remove a checkpoint (a no-op if it is gone already, also under a concurrent delete).

        The directory is first renamed to a ``.tmp-del-*`` name (only one deleter can win
        that rename), then removed; a crash in between leaves a ``.tmp-*`` directory for
        :meth:`sweep`.

        Raises:
            CheckpointError: The id is not one of this store's, or the directory could not
                be renamed (e.g. a file in it is open on Windows).
        """
        if self._read_only:
            raise _read_only(self, "delete")
        path = self._path(checkpoint_id)
        trash = os.path.join(os.path.dirname(path), f"{TMP_PREFIX}del-{uuid.uuid4().hex}")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        except OSError as err:
            raise CheckpointError(
                f"Checkpoint {checkpoint_id!r} in {self._root} could not be deleted ({err})."
            ) from err
        _remove_tree(trash)
        log.debug("deleted checkpoint %s", checkpoint_id)

    def sweep(
        self,
        *,
        grace_seconds: float | None = None,
        run: str | None = None,
        owner: str | None = None,
    ) -> int:
        """Remove the ``.tmp-*`` directories that a crash left behind (a torn write, a
        delete cut short, the spare directories of a process that died).

        A temporary directory is removed once neither it nor a file in it changed for
        ``grace_seconds``, so that a write in progress in another process is left alone.

        Args:
            grace_seconds: The minimum age of a temporary directory to remove; by default
                :data:`SWEEP_GRACE_SECONDS`.
            run: Only this run's (default: every run's).
            owner: The identity of the datastore asking: a shorter ``grace_seconds``
                applies only in run folders marked as its own (see
                :meth:`CheckpointStore.sweep`). The owner marker is never removed.

        Returns:
            How many temporary directories were removed.
        """
        if self._read_only:
            raise _read_only(self, "sweep")
        if run is not None:
            check_run_name(run, owner="LocalCheckpoints.sweep")
        if grace_seconds is None:
            grace_seconds = SWEEP_GRACE_SECONDS
        now = time.time()
        removed = 0
        graces: dict[str, float] = {}  # run folder -> the grace there
        for member_dir in self._member_dirs(run):
            try:
                entries = [e for e in os.scandir(member_dir) if e.name.startswith(TMP_PREFIX)]
            except OSError:
                continue
            run_dir = os.path.dirname(member_dir)
            if run_dir not in graces:
                graces[run_dir] = self._grace_in(os.path.basename(run_dir), grace_seconds, owner)
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                age = now - _last_change(entry.path)
                if age < graces[run_dir]:
                    continue
                # claim it first: a writer still using it then fails instead of
                # renaming a half-removed directory into place
                claimed = os.path.join(member_dir, f"{TMP_PREFIX}sweep-{uuid.uuid4().hex}")
                try:
                    os.rename(entry.path, claimed)
                except OSError:
                    continue  # gone already, or another sweep took it
                _remove_tree(claimed)
                removed += 1
                log.info("removed stale temporary checkpoint directory %s", entry.path)
        return removed

    # -- reading ---------------------------------------------------------------------
    def get(self, checkpoint_id: str) -> bytes:
        """The payload of a checkpoint, after checking its size and SHA-256.

        Raises:
            CheckpointError: The checkpoint is missing, torn (its payload does not match
                its manifest, or the manifest is unreadable), not a genepool checkpoint,
                or written in a newer manifest format.
        """
        path = self._path(checkpoint_id)
        try:
            return self._read_payload(checkpoint_id, path)
        except CheckpointError:
            # deleted meanwhile (its directory may even be a spare being written into
            # again): say so, rather than that it is torn
            if not os.path.lexists(path):
                raise self._missing(checkpoint_id) from None
            raise

    def _read_payload(self, checkpoint_id: str, path: str) -> bytes:
        record = self._read_manifest(checkpoint_id, path)
        name = record["payload"]["file"]
        try:
            with open(os.path.join(path, name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            if not os.path.isdir(path):
                raise self._missing(checkpoint_id) from None
            raise self._torn(checkpoint_id, f"{name} is missing") from None
        except OSError as err:
            raise self._torn(checkpoint_id, f"{name} is unreadable: {err}") from err
        return _check_payload(data, record, checkpoint_id, self._root)

    def rewrite(self, checkpoint_id: str, blob: bytes) -> None:
        """Replace a checkpoint's payload; see :meth:`CheckpointStore.rewrite`.

        The new payload goes into a file of a new name, then the manifest is replaced
        (a rename) by one that names it, then the old payload file is removed: at every
        moment the manifest names a complete payload.
        """
        if self._read_only:
            raise _read_only(self, "rewrite")
        path = self._path(checkpoint_id)
        record = self._read_manifest(checkpoint_id, path)
        old = record["payload"]["file"]
        data = bytes(blob)
        record["payload"] = {"file": f"payload-{os.urandom(16).hex()}.bin", **_payload_record(data)}
        new = os.path.join(path, record["payload"]["file"])
        tmp = os.path.join(path, TMP_PREFIX + MANIFEST_FILE)
        try:
            _write_file(new, data, fsync=self._fsync)
            _write_file(tmp, _record_json(record), fsync=self._fsync)
            os.replace(tmp, os.path.join(path, MANIFEST_FILE))
            if self._fsync:
                _fsync_dir(path)
        except OSError as err:
            for leftover in (tmp, new):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
            raise CheckpointError(
                f"Checkpoint {checkpoint_id!r} in {self._root} could not be rewritten ({err}); "
                "it still holds its old payload."
            ) from err
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(path, old))

    def manifest(self, checkpoint_id: str) -> dict[str, Any]:
        """The manifest of a checkpoint (the payload is not checked; :meth:`get` does).

        See :meth:`CheckpointStore.manifest` for its keys.

        Raises:
            CheckpointError: As :meth:`get`, except for a payload that does not match.
        """
        path = self._path(checkpoint_id)
        try:
            return self._read_manifest(checkpoint_id, path)
        except CheckpointError:
            if not os.path.lexists(path):
                raise self._missing(checkpoint_id) from None
            raise

    def ids(self, run: str | None = None, *, older_than: float | None = None) -> list[str]:
        """The ids of the complete checkpoints on disk, sorted; of one run if given.

        Args:
            run: Only this run's checkpoints.
            older_than: Only checkpoints whose directory and files last changed more than
                this many seconds ago.
        """
        if run is not None:
            check_run_name(run, owner="LocalCheckpoints.ids")
        latest = None if older_than is None else time.time() - older_than
        found: list[str] = []
        for member_dir in self._member_dirs(run):
            try:
                entries = [
                    e
                    for e in os.scandir(member_dir)
                    if e.is_dir() and _CHECKPOINT_DIR.fullmatch(e.name)
                ]
            except OSError:
                continue
            rel = os.path.relpath(member_dir, self._root).replace(os.sep, "/")
            found.extend(
                f"{rel}/{e.name}"
                for e in entries
                if latest is None or _last_change(e.path) < latest
            )
        return sorted(found)

    def __len__(self) -> int:
        return len(self.ids())

    # -- helpers ---------------------------------------------------------------------
    def _mkdir(self, path: str) -> None:
        if path in self._made:
            return
        try:
            os.mkdir(path)
        except FileExistsError:
            self._made.add(path)
            return
        self._made.add(path)
        if self._fsync:
            _fsync_dir(os.path.dirname(path))

    def _member_dirs(self, run: str | None = None) -> list[str]:
        """``root/<run>/m<member>`` directories (of every run, or one)."""
        if run is not None:
            run_dirs = [os.path.join(self._root, check_run_name(run, owner="LocalCheckpoints"))]
        else:
            try:
                run_dirs = [
                    e.path
                    for e in os.scandir(self._root)
                    if e.is_dir() and not e.name.startswith(".")
                ]
            except OSError:
                return []
        found: list[str] = []
        for run_dir in run_dirs:
            try:
                found.extend(
                    e.path
                    for e in os.scandir(run_dir)
                    if e.is_dir() and _MEMBER_DIR.fullmatch(e.name)
                )
            except OSError:
                continue
        return found

    def _path(self, checkpoint_id: str) -> str:
        """The directory of a checkpoint id; CheckpointError if it is not a valid id."""
        return os.path.join(self._root, *_id_parts(checkpoint_id, "LocalCheckpoints"))

    def _folder(self, run: str) -> str:
        return os.path.join(self._root, run)

    def _read_marker(self, run: str) -> bytes | None:
        path = os.path.join(self._root, run, OWNER_FILE)
        try:
            with open(path, "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as err:
            raise StorageError(
                f"The owner marker {path} cannot be read ({err}). Fix: check its permissions."
            ) from err

    def _create_marker(self, run: str, text: bytes) -> bool:
        if self._read_only:
            raise _read_only(self, "own")
        run_dir = os.path.join(self._root, run)
        try:
            self._mkdir(run_dir)
            _create_file(os.path.join(run_dir, OWNER_FILE), text, fsync=self._fsync)
        except FileExistsError:
            return False
        except OSError as err:
            raise CheckpointError(
                f"The owner marker of {run_dir} could not be written ({err})."
            ) from err
        return True

    def _read_manifest(self, checkpoint_id: str, path: str) -> dict[str, Any]:
        if not os.path.isdir(path):
            if os.path.lexists(path):
                raise self._foreign(checkpoint_id, "it is not a directory")
            raise self._missing(checkpoint_id)
        try:
            with open(os.path.join(path, MANIFEST_FILE), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            if not os.path.isdir(path):
                raise self._missing(checkpoint_id) from None
            if os.path.lexists(os.path.join(path, PAYLOAD_FILE)):
                raise self._torn(checkpoint_id, f"{MANIFEST_FILE} is missing") from None
            raise self._foreign(checkpoint_id, f"it has no {MANIFEST_FILE}") from None
        except OSError as err:
            raise self._torn(checkpoint_id, f"{MANIFEST_FILE} is unreadable: {err}") from err
        return _parse_manifest(raw, checkpoint_id, self._root)

    def _missing(self, checkpoint_id: str) -> CheckpointError:
        return CheckpointError(
            f"No checkpoint {checkpoint_id!r} in {self._root}: it was deleted, or never "
            "written to this directory."
        )

    def _torn(self, checkpoint_id: str, reason: str) -> CheckpointError:
        return _torn(checkpoint_id, self._root, reason)

    def _foreign(self, checkpoint_id: str, reason: str) -> CheckpointError:
        return _foreign(checkpoint_id, self._root, reason)


# -- shared helpers ------------------------------------------------------------------


def _parse_manifest(raw: bytes, checkpoint_id: str, where: str) -> dict[str, Any]:
    """Check the text of a ``manifest.json`` read for ``checkpoint_id`` from ``where`` (a
    directory or URL, for the messages) and return it as a dict.

    Raises:
        CheckpointError: The manifest is torn, foreign, for another checkpoint, or of a
            newer format than this genepool reads.
    """
    try:
        record = json.loads(raw)
    except ValueError as err:
        raise _torn(checkpoint_id, where, f"{MANIFEST_FILE} is not valid JSON: {err}") from err
    if not isinstance(record, dict) or "format" not in record:
        raise _foreign(checkpoint_id, where, f"its {MANIFEST_FILE} is not a genepool manifest")
    fmt = record["format"]
    if type(fmt) is not int or fmt < 1:
        raise _foreign(checkpoint_id, where, f"its {MANIFEST_FILE} has format {fmt!r}")
    store = record.setdefault("store", None)  # format 1 names no datastore
    if store is not None and type(store) is not str:
        raise _torn(checkpoint_id, where, f"{MANIFEST_FILE} names the datastore {store!r}")
    if fmt > MANIFEST_FORMAT:
        raise CheckpointError(
            f"Checkpoint {checkpoint_id!r} in {where} has manifest format {fmt}; "
            f"this genepool reads format {MANIFEST_FORMAT} and older. Fix: upgrade genepool "
            "to the version that wrote it (see 'versions' in its manifest.json)."
        )
    if record.get("id") != checkpoint_id:
        raise _foreign(
            checkpoint_id, where, f"its {MANIFEST_FILE} is for checkpoint {record.get('id')!r}"
        )
    payload = record.get("payload")
    if (
        not isinstance(payload, dict)
        or type(payload.get("size")) is not int
        or not isinstance(payload.get("sha256"), str)
        or not isinstance(record.get("fields"), dict)
    ):
        raise _torn(checkpoint_id, where, f"{MANIFEST_FILE} lacks the payload's size or hash")
    name = payload.setdefault("file", PAYLOAD_FILE)
    if type(name) is not str or not _PAYLOAD_NAME.fullmatch(name):
        raise _torn(checkpoint_id, where, f"{MANIFEST_FILE} names the payload file {name!r}")
    return record


def _check_payload(data: bytes, record: Mapping[str, Any], checkpoint_id: str, where: str) -> bytes:
    """``data`` if its size and SHA-256 are the ones the manifest ``record`` gives, else
    CheckpointError (torn)."""
    expected = record["payload"]
    if len(data) != expected["size"]:
        raise _torn(
            checkpoint_id,
            where,
            f"{PAYLOAD_FILE} has {len(data)} bytes, the manifest says {expected['size']}",
        )
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise _torn(
            checkpoint_id, where, f"the SHA-256 of {PAYLOAD_FILE} differs from the manifest's"
        )
    return data


def _torn(checkpoint_id: str, where: str, reason: str) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint {checkpoint_id!r} in {where} is torn: {reason}. It was changed or "
        "damaged after it was written, or its write never completed; it cannot be read."
    )


def _foreign(checkpoint_id: str, where: str, reason: str) -> CheckpointError:
    return CheckpointError(
        f"{checkpoint_id!r} in {where} is not a genepool checkpoint: {reason}. "
        "Fix: keep other files out of the checkpoints' directory or prefix."
    )


def _owner_json(run: str, owner: Owner) -> bytes:
    """The text of a run folder's owner marker."""
    record = {
        "format": OWNER_FORMAT,
        "run": run,
        "store": owner.store,
        "shown": owner.shown,
        "durable": owner.durable,
        "created": _created(),
        "genepool": _versions()["genepool"],
    }
    return (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _parse_owner(raw: bytes, folder: str) -> Owner:
    """The owner an owner marker names; StorageError if it is damaged."""
    try:
        record = json.loads(raw)
        owner = Owner(str(record["store"]), str(record["shown"]), bool(record["durable"]))
        fmt = record["format"]
    except (ValueError, TypeError, KeyError) as err:
        raise StorageError(
            f"The owner marker {OWNER_FILE} of {folder} is damaged ({type(err).__name__}: "
            f"{err}), so which datastore the folder belongs to is unknown. Fix: if the "
            "folder belongs to the datastore of the run you start, delete the marker "
            "(genepool writes it again); otherwise give the run another checkpoints folder."
        ) from err
    if type(fmt) is not int or fmt > OWNER_FORMAT:
        raise StorageError(
            f"The owner marker {OWNER_FILE} of {folder} has format {fmt!r}; this genepool "
            f"reads format {OWNER_FORMAT}. Fix: upgrade genepool."
        )
    return owner


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


def _read_only(store: CheckpointStore, method: str) -> CheckpointError:
    """The error of a write to checkpoints opened to be read only."""
    return CheckpointError(
        f"{store!r} was opened read-only (to read a run back), so {method}() changes "
        "nothing. Fix: open the checkpoints without read_only=True to write or delete."
    )


def _bad_run_name(run: object) -> str | None:
    """Why ``run`` cannot be a directory name on any platform, or None if it can."""
    if not isinstance(run, str) or not run:
        return "a non-empty string"
    if run.startswith("."):
        return "a name that does not start with '.'"
    if _BAD_NAME_CHARS.search(run) or run.endswith((" ", ".")):
        return 'a name without / \\ : * ? " < > |, control characters, or a trailing space or dot'
    try:
        size = len(run.encode())
    except UnicodeEncodeError:  # a lone surrogate: no file name on every platform
        return "a name of valid Unicode text"
    if size > 200:
        return "a name of at most 200 bytes"
    return None


def check_run_name(run: object, *, owner: str, name: str = "run") -> str:
    """``run``, if it can name a run (one directory of checkpoints, on any platform);
    else an InvalidArgumentError naming ``owner``'s argument ``name``, the value and a fix.

    Every run name given to genepool passes here before it reaches a store or a file
    path, so that no name (``..``, ``../x``, ``/abs``, ``a/b``) leads outside the
    checkpoints' root.
    """
    must = _bad_run_name(run)
    if must is not None:
        raise invalid(
            owner,
            name,
            must,
            repr(run),
            "Fix: a plain name such as 'run' or 'lr-sweep_2' (it names a directory).",
        )
    assert isinstance(run, str)  # _bad_run_name checked it
    return run


def _id_parts(checkpoint_id: str, owner: str) -> list[str]:
    """The run, member and checkpoint parts of an id; CheckpointError if it is not one."""
    parts = checkpoint_id.split("/") if isinstance(checkpoint_id, str) else []
    if (
        len(parts) != 3
        or _bad_run_name(parts[0]) is not None
        or not _MEMBER_DIR.fullmatch(parts[1])
        or not _CHECKPOINT_DIR.fullmatch(parts[2])
    ):
        raise CheckpointError(
            f"{checkpoint_id!r} is not a checkpoint id of {owner} (expected "
            "'<run>/m<member>/s<step>-<32 hex digits>'). Fix: pass an id that put() returned."
        )
    return parts


_GOOD_RUN_NAMES: set[str] = set()  # names checked already (a run writes thousands)


def _check_key(run: str, member: int, step: int) -> None:
    """Check the arguments that make a checkpoint's id."""
    plain = type(member) is int and type(step) is int and member >= 0 and step >= 0
    if plain and type(run) is str and run in _GOOD_RUN_NAMES:
        return
    check_run_name(run, owner="CheckpointStore.put")
    if len(_GOOD_RUN_NAMES) < 1024:
        _GOOD_RUN_NAMES.add(run)
    for name, value in (("member", member), ("step", step)):
        if type(value) is bool or not isinstance(value, (int, np.integer)) or value < 0:
            raise invalid("CheckpointStore.put", name, "an int >= 0", repr(value))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _normalise_fields(fields: Mapping[str, Any] | None) -> dict[str, Any]:
    """The caller's manifest fields as they read back from JSON (a deep copy)."""
    normalised: dict[str, Any] = json.loads(_fields_json(fields))
    return normalised


_FIELDS_ENCODER = json.JSONEncoder(default=_json_default, sort_keys=True, separators=(",", ":"))


def _fields_json(fields: Mapping[str, Any] | None) -> str:
    """The caller's manifest fields as JSON text (InvalidArgumentError if they are not)."""
    if fields is None:
        return "{}"
    if not isinstance(fields, Mapping) or not all(isinstance(k, str) for k in fields):
        raise invalid("CheckpointStore.put", "manifest", "a mapping with str keys", repr(fields))
    try:
        return _FIELDS_ENCODER.encode(dict(fields))
    except (TypeError, ValueError) as err:
        raise invalid(
            "CheckpointStore.put",
            "manifest",
            "JSON-serialisable",
            f"{fields!r} ({err})",
            "Fix: pass numbers, strings, lists and dicts (numpy values are converted).",
        ) from err


@functools.cache
def _versions() -> dict[str, str]:
    import genepool  # here, not at the top: the package imports this module

    return {
        "genepool": genepool.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


@functools.cache
def _versions_json() -> str:
    return json.dumps(_versions(), sort_keys=True, separators=(",", ":"))


def _created() -> str:
    """Now, in UTC, as ISO 8601 with microseconds (``2026-12-03T08:00:00.000000Z``).

    From ``time``, not ``datetime``: this runs once a round, on code gone cold since the
    last, where ``datetime`` costs several times more."""
    now = time.time()
    seconds = int(now)
    micro = int((now - seconds) * 1e6)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micro:06d}Z"


def _payload_record(data: bytes) -> dict[str, Any]:
    """The manifest's ``size`` and ``sha256`` of a payload."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _record_json(record: Mapping[str, Any]) -> bytes:
    """A manifest (a dict) as the text of ``manifest.json``."""
    return (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()


def _build_manifest(
    checkpoint_id: str,
    run: str,
    member: int,
    step: int,
    data: bytes,
    fields: dict[str, Any],
    store: str | None = None,
) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "id": checkpoint_id,
        "run": run,
        "member": int(member),
        "step": int(step),
        "payload": {"file": PAYLOAD_FILE, **_payload_record(data)},
        "created": _created(),
        "versions": dict(_versions()),
        "store": store,
        "fields": fields,
    }


def _manifest_json(
    checkpoint_id: str,
    run: str,
    member: int,
    step: int,
    data: bytes,
    fields: str,
    store: str | None = None,
) -> bytes:
    """The text of ``manifest.json`` (the dict :func:`_build_manifest` makes, as JSON), given
    the caller's fields as JSON text already.

    A run name (and so an id) holds no character that JSON escapes but non-ASCII ones,
    which JSON takes as they are: both are written between quotes as they are.
    """
    digest = hashlib.sha256(data).hexdigest()
    return (
        f'{{"created":"{_created()}","fields":{fields},"format":{MANIFEST_FORMAT},'
        f'"id":"{checkpoint_id}","member":{int(member)},'
        f'"payload":{{"file":"{PAYLOAD_FILE}","sha256":"{digest}","size":{len(data)}}},'
        f'"run":"{run}","step":{int(step)},"store":{json.dumps(store)},'
        f'"versions":{_versions_json()}}}\n'
    ).encode()


_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _write_file(path: str, data: bytes, *, fsync: bool) -> None:
    """Make ``data`` the whole content of the file ``path``, flushed to disk if ``fsync``.

    The file is new, or one of a spare directory: then it is overwritten in place and cut
    to size (truncating it first would cost far more on ext4, which flushes a file
    truncated to nothing when it is closed).
    """
    fd = os.open(path, _OPEN_FLAGS, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.ftruncate(fd, len(data))
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _create_file(path: str, data: bytes, *, fsync: bool) -> None:
    """Create the file ``path`` holding ``data``; FileExistsError if it exists already
    (two processes creating it at once: one wins)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    """Flush a directory's entries to disk (a no-op on Windows, which cannot open one)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _size(path: str) -> int:
    """The size of a file; -1 if it cannot be read."""
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _last_change(path: str) -> float:
    """The latest modification time of a directory and the files directly in it."""
    try:
        latest = os.stat(path).st_mtime
        for entry in os.scandir(path):
            try:
                latest = max(latest, entry.stat(follow_symlinks=False).st_mtime)
            except OSError:
                continue
    except OSError:
        return time.time()
    return latest


def _remove_tree(path: str) -> None:
    """Remove a directory tree, tolerating a concurrent removal; failures are logged."""

    def on_error(func: Any, failed: str, exc: BaseException) -> None:
        if not isinstance(exc, FileNotFoundError):
            log.warning("could not remove %s (%s); sweep() will retry", failed, exc)

    if not os.path.lexists(path):
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=on_error)
    else:
        shutil.rmtree(path, onerror=lambda func, failed, info: on_error(func, failed, info[1]))
