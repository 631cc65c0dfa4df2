"""Checkpoints in a local (or mounted) folder: :class:`LocalCheckpoints`.

The rename-based procedures live here once: create the root, write into a temporary
folder and rename it into place, delete by a rename first, sweep a temporary by claiming
it with a rename, and tell a missing checkpoint from a torn or foreign one. A plain path
and a ``file://`` URL both come here (:func:`genepool.checkpoints.open_checkpoints`); the
file procedures themselves are in :mod:`genepool.checkpoints._files`, the spare folders
in :mod:`genepool.checkpoints._spares`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from genepool._errors import CheckpointError, StorageError, storage_fault
from genepool.checkpoints import _files
from genepool.checkpoints._base import SWEEP_GRACE_SECONDS, CheckpointStore, read_only_error
from genepool.checkpoints._layout import (
    CHECKPOINT_DIR,
    MANIFEST_FILE,
    OWNER_FILE,
    PAYLOAD_FILE,
    TMP_PREFIX,
    check_key,
    check_payload,
    check_run_name,
    fields_json,
    foreign,
    id_parts,
    manifest_json,
    parse_manifest,
    payload_record,
    record_json,
    torn,
)
from genepool.checkpoints._spares import Spares

__all__ = ["LocalCheckpoints"]

log = logging.getLogger("genepool.checkpoints")

_R = TypeVar("_R")


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
                _files.fsync_dir(os.path.dirname(self._root))
        except OSError as err:
            raise CheckpointError(
                f"The checkpoint directory {self._root} could not be created ({err})."
            ) from err
        self._made: set[str] = set()  # directories this object created or found
        self._owners: dict[str, str] = {}  # run -> the identity own() bound it to
        self._spares = Spares()  # discarded checkpoint directories, to write into again
        if not self._read_only:
            self.sweep()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for worker processes: the root and settings, none of this object's
        caches or spare directories (a copy's :class:`Spares` starts empty)."""
        state = self.__dict__.copy()
        state["_made"] = set()
        return state

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
            raise read_only_error(self, "put")
        check_key(run, member, step)
        data = bytes(blob)
        fields = fields_json(manifest)
        name = f"s{step}-{os.urandom(16).hex()}"  # (not uuid4: half the cost, cold)
        checkpoint_id = f"{run}/m{member}/{name}"
        store = self._owner_of(run)
        text = manifest_json(checkpoint_id, run, member, step, data, fields, store)
        run_dir = os.path.join(self._root, run)
        parent = os.path.join(run_dir, f"m{member}")
        tmp = os.path.join(parent, TMP_PREFIX + name)
        final = os.path.join(parent, name)
        spare: str | None = None
        try:
            self._mkdir(run_dir)
            self._mkdir(parent)
            spare = self._spares.take(run_dir)
            if spare is not None:
                try:
                    self._write_into(spare, data, text, fresh=False)
                    os.rename(spare, final)
                except FileNotFoundError:
                    # the spare was swept away under us (another process took it for
                    # stale): write into a new directory instead
                    _files.remove_tree(spare)
                    spare = None
            if spare is None:
                self._write_into(tmp, data, text, fresh=True)
                os.rename(tmp, final)
        except BaseException as err:
            _files.remove_tree(tmp)
            if spare is not None:
                _files.remove_tree(spare)
            if isinstance(err, OSError):  # a full disk, an I/O error: nothing stored
                raise storage_fault(
                    err, f"writing checkpoint {checkpoint_id!r}", self._root
                ) from err
            raise
        if self._fsync:
            try:
                _files.fsync_dir(parent)
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
        _files.write_file(os.path.join(tmp, PAYLOAD_FILE), data, fsync=self._fsync)
        _files.write_file(os.path.join(tmp, MANIFEST_FILE), text, fsync=self._fsync)
        if self._fsync:
            _files.fsync_dir(tmp)

    def discard(self, checkpoint_id: str) -> None:
        """Remove a checkpoint that nothing refers to any more, keeping its directory (up to
        :data:`~genepool.checkpoints.SPARES_PER_RUN` per run, and if its payload is at most
        :data:`~genepool.checkpoints.SPARE_MAX_BYTES`) for a later :meth:`put` to write into.

        The checkpoint is gone at once: its directory is renamed to a ``.tmp-spare-*``
        name, which no id names. A no-op if it is gone already.

        Raises:
            CheckpointError: As :meth:`delete`.
        """
        if self._read_only:
            raise read_only_error(self, "discard")
        path = self._path(checkpoint_id)
        member_dir = os.path.dirname(path)
        run_dir = os.path.dirname(member_dir)
        if not self._spares.would_keep(run_dir, os.path.join(path, PAYLOAD_FILE)):
            self.delete(checkpoint_id)
            return
        spare = self._spares.new_name(member_dir)
        try:
            os.rename(path, spare)
        except FileNotFoundError:
            return
        except OSError as err:
            raise CheckpointError(
                f"Checkpoint {checkpoint_id!r} in {self._root} could not be deleted ({err})."
            ) from err
        self._spares.keep(run_dir, spare)
        log.debug("discarded checkpoint %s", checkpoint_id)

    def drain(self) -> None:
        """Remove the spare directories :meth:`discard` kept. The store stays usable."""
        self._spares.drain()

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
            raise read_only_error(self, "delete")
        path = self._path(checkpoint_id)
        try:
            _files.rename_and_remove(path, "del")
        except FileNotFoundError:
            return
        except OSError as err:
            raise CheckpointError(
                f"Checkpoint {checkpoint_id!r} in {self._root} could not be deleted ({err})."
            ) from err
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
            raise read_only_error(self, "sweep")
        if run is not None:
            check_run_name(run, owner="LocalCheckpoints.sweep")
        if grace_seconds is None:
            grace_seconds = SWEEP_GRACE_SECONDS
        now = time.time()
        removed = 0
        graces: dict[str, float] = {}  # run folder -> the grace there
        for member_dir in self._member_dirs(run):
            run_dir = os.path.dirname(member_dir)
            if run_dir not in graces:
                graces[run_dir] = self._grace_in(os.path.basename(run_dir), grace_seconds, owner)
            removed += _files.sweep_temporaries(member_dir, grace=graces[run_dir], now=now)
        return removed

    # -- reading ---------------------------------------------------------------------
    def get(self, checkpoint_id: str) -> bytes:
        """The payload of a checkpoint, after checking its size and SHA-256.

        Raises:
            CheckpointError: The checkpoint is missing, torn (its payload does not match
                its manifest, or the manifest is unreadable), not a genepool checkpoint,
                or written in a newer manifest format.
        """
        return self._reading(checkpoint_id, self._read_payload)

    def _reading(self, checkpoint_id: str, read: Callable[[str, str], _R]) -> _R:
        """``read(checkpoint_id, path)``; a checkpoint deleted meanwhile (its directory
        may even be a spare being written into again) is said to be missing, not torn."""
        path = self._path(checkpoint_id)
        try:
            return read(checkpoint_id, path)
        except CheckpointError:
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
            raise torn(checkpoint_id, self._root, f"{name} is missing") from None
        except OSError as err:
            raise torn(checkpoint_id, self._root, f"{name} is unreadable: {err}") from err
        return check_payload(data, record, checkpoint_id, self._root)

    def rewrite(self, checkpoint_id: str, blob: bytes) -> None:
        """Replace a checkpoint's payload; see :meth:`CheckpointStore.rewrite`.

        The new payload goes into a file of a new name, then the manifest is replaced
        (a rename) by one that names it, then the old payload file is removed: at every
        moment the manifest names a complete payload.
        """
        if self._read_only:
            raise read_only_error(self, "rewrite")
        path = self._path(checkpoint_id)
        record = self._read_manifest(checkpoint_id, path)
        old = record["payload"]["file"]
        data = bytes(blob)
        record["payload"] = {"file": f"payload-{os.urandom(16).hex()}.bin", **payload_record(data)}
        new = os.path.join(path, record["payload"]["file"])
        tmp = os.path.join(path, TMP_PREFIX + MANIFEST_FILE)
        try:
            _files.write_file(new, data, fsync=self._fsync)
            _files.write_file(tmp, record_json(record), fsync=self._fsync)
            os.replace(tmp, os.path.join(path, MANIFEST_FILE))
            if self._fsync:
                _files.fsync_dir(path)
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
        return self._reading(checkpoint_id, self._read_manifest)

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
                    if e.is_dir()
                    and CHECKPOINT_DIR.fullmatch(e.name)
                    # complete: a write renames the folder in with its manifest, so one
                    # without is damage (listed by no store, as fsspec's lists none)
                    and os.path.exists(os.path.join(e.path, MANIFEST_FILE))
                ]
            except OSError:
                continue
            rel = os.path.relpath(member_dir, self._root).replace(os.sep, "/")
            found.extend(
                f"{rel}/{e.name}"
                for e in entries
                if latest is None or _files.last_change(e.path) < latest
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
            _files.fsync_dir(os.path.dirname(path))

    def _member_dirs(self, run: str | None = None) -> list[str]:
        """``root/<run>/m<member>`` directories (of every run, or one)."""
        if run is not None:
            check_run_name(run, owner="LocalCheckpoints")
        return _files.member_dirs(self._root, run)

    def _path(self, checkpoint_id: str) -> str:
        """The directory of a checkpoint id; CheckpointError if it is not a valid id."""
        return os.path.join(self._root, *id_parts(checkpoint_id, "LocalCheckpoints"))

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
            raise read_only_error(self, "own")
        run_dir = os.path.join(self._root, run)
        try:
            self._mkdir(run_dir)
            _files.create_file(os.path.join(run_dir, OWNER_FILE), text, fsync=self._fsync)
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
                raise foreign(checkpoint_id, self._root, "it is not a directory")
            raise self._missing(checkpoint_id)
        try:
            with open(os.path.join(path, MANIFEST_FILE), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            if not os.path.isdir(path):
                raise self._missing(checkpoint_id) from None
            if os.path.lexists(os.path.join(path, PAYLOAD_FILE)):
                raise torn(checkpoint_id, self._root, f"{MANIFEST_FILE} is missing") from None
            raise foreign(checkpoint_id, self._root, f"it has no {MANIFEST_FILE}") from None
        except OSError as err:
            raise torn(checkpoint_id, self._root, f"{MANIFEST_FILE} is unreadable: {err}") from err
        return parse_manifest(raw, checkpoint_id, self._root)

    def _missing(self, checkpoint_id: str) -> CheckpointError:
        return CheckpointError(
            f"No checkpoint {checkpoint_id!r} in {self._root}: it was deleted, or never "
            "written to this directory."
        )
