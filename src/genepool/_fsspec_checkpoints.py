"""Checkpoints on any fsspec URL: an object store (``s3://``, ``gcs://``, ...), a shared
directory (``file://``) or fsspec's in-memory filesystem (``memory://``).

The layout and the manifest are those of :class:`genepool.checkpoints.LocalCheckpoints`:
``<root>/<run>/m<member>/s<step>-<unique>/{payload.bin,manifest.json}``. An object store
cannot rename, so a write puts the payload first and the manifest last: the manifest
carries the payload's size and SHA-256, a checkpoint exists only once its manifest does,
and a payload that does not match its manifest is torn and never loaded.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from genepool._errors import (
    CheckpointError,
    MissingDependencyError,
    StorageFaultError,
    invalid,
    missing_dependency,
    storage_fault,
)
from genepool._redact import MASK, redact_url, url_secrets
from genepool.checkpoints import (
    _CHECKPOINT_DIR,
    _MEMBER_DIR,
    MANIFEST_FILE,
    OWNER_FILE,
    PAYLOAD_FILE,
    SWEEP_GRACE_SECONDS,
    TMP_PREFIX,
    CheckpointStore,
    _bad_run_name,
    _check_key,
    _check_payload,
    _create_file,
    _fields_json,
    _foreign,
    _fsync_dir,
    _id_parts,
    _manifest_json,
    _parse_manifest,
    _payload_record,
    _read_only,
    _record_json,
    _torn,
    _write_file,
    check_run_name,
)

__all__ = ["FsspecCheckpoints"]

log = logging.getLogger("genepool.checkpoints")

#: The keys under which fsspec backends give an object's modification time.
_TIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")


class FsspecCheckpoints(CheckpointStore):
    """Checkpoints under any fsspec URL, with the layout and manifest of LocalCheckpoints.

    On an object store (no rename) a write puts ``payload.bin`` first and
    ``manifest.json`` last. A checkpoint is listed and read only once its manifest exists,
    and :meth:`get` checks the payload's size and SHA-256 against it, so a crash mid-write
    leaves a torn prefix that is never loaded; :meth:`sweep` removes such leftovers once
    they are older than a grace period (at construction, and whenever called). On a local
    filesystem (``file://``) a write goes into a ``.tmp-*`` directory renamed into place,
    as in LocalCheckpoints. :meth:`delete` removes the manifest first, then the prefix.

    The object is picklable (worker processes receive it): the filesystem is opened again
    in the receiving process, from the URL and ``storage_options``. A ``memory://`` store
    lives in one process only.

    Args:
        url: Where the checkpoints live, e.g. ``"s3://bucket/prefix"``,
            ``"file:///shared/dir"`` or ``"memory://name"``.
        storage_options: Keyword arguments of the fsspec filesystem (for S3: ``key``,
            ``secret``, ``endpoint_url``, ``client_kwargs``, ...). Credentials may also
            come from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ...).
        fsync: On a local filesystem, flush each file and directory to the disk before a
            write returns. Elsewhere it changes nothing: an object store's write is durable
            once it returns.
        read_only: Only read (a run read back: :meth:`genepool.Result.open`): nothing is
            created or swept, and :meth:`put`, :meth:`delete` and :meth:`sweep` raise
            CheckpointError.

    Raises:
        InvalidArgumentError: A bad URL or storage_options.
        MissingDependencyError: fsspec, or the package of the URL's protocol (s3fs for
            ``s3://``), is not installed.
        CheckpointError: The location cannot be reached (e.g. the bucket does not exist).

    Example:
        >>> store = FsspecCheckpoints("memory://genepool-doctest")
        >>> cid = store.put("run", 3, 8, b"state", manifest={"score": 0.5})
        >>> (cid.startswith("run/m3/s8-"), store.get(cid), store.manifest(cid)["fields"])
        (True, b'state', {'score': 0.5})
        >>> store.delete(cid)
    """

    def __init__(
        self,
        url: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        fsync: bool = False,
        read_only: bool = False,
    ) -> None:
        if not isinstance(url, str) or not url.strip():
            raise invalid(
                "FsspecCheckpoints",
                "url",
                "a non-empty fsspec URL",
                repr(url),
                "Fix: e.g. 's3://bucket/prefix' or 'file:///shared/checkpoints'.",
            )
        if storage_options is not None and not (
            isinstance(storage_options, Mapping)
            and all(isinstance(k, str) for k in storage_options)
        ):
            raise invalid(
                "FsspecCheckpoints",
                "storage_options",
                "a mapping with str keys, or None",
                repr(storage_options),
            )
        self._url = url
        self._shown = redact_url(url)  # for messages and repr: no password or token
        self._options = dict(storage_options or {})
        self._fsync = bool(fsync)
        self._read_only = bool(read_only)
        self._lock = threading.Lock()
        self._fs: Any = None
        self._made: set[str] = set()  # local directories this object created or found
        self._owners: dict[str, str] = {}  # run -> the identity own() bound it to
        fs, root = self._connect()
        self._root: str = root
        self._rename: bool = _is_local(fs)
        if not self._read_only:
            self._make_root()
            self.sweep()

    def _make_root(self) -> None:
        """On a local filesystem, create the root directory if it is missing."""
        if self._rename:
            try:
                existed = os.path.isdir(self._root)
                os.makedirs(self._root, exist_ok=True)
                if self._fsync and not existed:
                    _fsync_dir(os.path.dirname(self._root))
            except OSError as err:
                raise CheckpointError(
                    f"The checkpoint directory {self._root} could not be created "
                    f"({self._text(err)})."
                ) from self._cause(err)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for worker processes: the URL and settings, not the open filesystem."""
        state = self.__dict__.copy()
        state["_fs"] = None
        state["_made"] = set()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _text(self, err: BaseException) -> str:
        """An error's text for a message: no password or token of the URL in it."""
        text = redact_url(str(err))
        for secret in url_secrets(self._url):
            text = text.replace(secret, MASK)
        return text

    def _cause(self, err: BaseException) -> BaseException | None:
        """``err`` as the cause of a genepool error, unless its text shows a password or
        token of the URL (then none: the message already has its text, hidden)."""
        return None if self._text(err) != str(err) else err

    @property
    def url(self) -> str:
        """The URL the checkpoints live under."""
        return self._url

    @property
    def fsync(self) -> bool:
        """Whether writes on a local filesystem are flushed to the disk before they return."""
        return self._fsync

    @property
    def filesystem(self) -> Any:
        """The fsspec filesystem (opened again after unpickling)."""
        return self._filesystem()

    @property
    def root(self) -> str:
        """The URL's path as the filesystem names it (e.g. ``bucket/prefix`` for S3)."""
        return self._root

    @property
    def process_local(self) -> bool:
        """Whether the checkpoints live in this process's memory (``memory://``), where no
        other process (a worker, a later run) can read them."""
        from fsspec.implementations.memory import MemoryFileSystem

        return isinstance(self._filesystem(), MemoryFileSystem)

    @property
    def read_only(self) -> bool:
        """Whether this object only reads (see the ``read_only`` argument)."""
        return self._read_only

    def __repr__(self) -> str:
        extra = ", read_only=True" if self._read_only else ""
        return f"FsspecCheckpoints({self._shown!r}, fsync={self._fsync}{extra})"

    def __len__(self) -> int:
        return len(self.ids())

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
        """Write a checkpoint, payload first and manifest last; see
        :meth:`CheckpointStore.put`."""
        if self._read_only:
            raise _read_only(self, "put")
        _check_key(run, member, step)
        data = bytes(blob)
        fields = _fields_json(manifest)
        checkpoint_id = f"{run}/m{member}/s{step}-{uuid.uuid4().hex}"
        store = self._owner_of(run)
        text = _manifest_json(checkpoint_id, run, member, step, data, fields, store)
        fs = self._filesystem()
        final = self._join(checkpoint_id)
        try:
            if self._rename:
                self._put_renamed(fs, final, data, text)
            else:
                self._put_manifest_last(fs, final, data, text)
        except Exception as err:  # the storage's fault, not the member's: the run stops
            if isinstance(err, OSError) and err.errno is not None:
                what = f"writing checkpoint {checkpoint_id!r}"
                raise storage_fault(err, what, self._shown) from self._cause(err)
            raise StorageFaultError(
                f"Checkpoint {checkpoint_id!r} could not be written to {self._shown} "
                f"({type(err).__name__}: {self._text(err)}); nothing was stored, and the run "
                "stops with its members active. Fix: check that the bucket or directory "
                "exists and is writable, and the credentials and endpoint in "
                "storage_options or the environment; then run the same call again."
            ) from self._cause(err)
        log.debug("wrote checkpoint %s to %s (%d bytes)", checkpoint_id, self._shown, len(data))
        return checkpoint_id

    def _put_manifest_last(self, fs: Any, final: str, data: bytes, text: bytes) -> None:
        """Write the payload, then the manifest; on failure remove what was written."""
        try:
            self._write(fs, f"{final}/{PAYLOAD_FILE}", data)
            self._write(fs, f"{final}/{MANIFEST_FILE}", text)
        except BaseException:
            self._remove_quietly(fs, final)
            raise

    def _put_renamed(self, fs: Any, final: str, data: bytes, text: bytes) -> None:
        """Write both files into a temporary directory, then rename it into place."""
        parent, name = final.rsplit("/", 1)
        tmp = f"{parent}/{TMP_PREFIX}{name}"
        self._mkdirs(parent)
        try:
            os.mkdir(tmp)
            _write_file(f"{tmp}/{PAYLOAD_FILE}", data, fsync=self._fsync)
            _write_file(f"{tmp}/{MANIFEST_FILE}", text, fsync=self._fsync)
            if self._fsync:
                _fsync_dir(tmp)
            fs.mv(tmp, final)
        except BaseException:
            self._remove_quietly(fs, tmp)
            raise
        if self._fsync:
            try:
                _fsync_dir(parent)
            except BaseException:
                self._remove_quietly(fs, final)
                raise

    def _write(self, fs: Any, path: str, data: bytes) -> None:
        """Make ``data`` the object ``path`` (making its parent first where a filesystem
        has directories and lacks it)."""
        try:
            fs.pipe_file(path, data)
        except FileNotFoundError:
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            fs.pipe_file(path, data)

    def _mkdirs(self, member_dir: str) -> None:
        """Make a local member directory and its run directory, once per object."""
        if member_dir in self._made:
            return
        run_dir = member_dir.rsplit("/", 1)[0]
        for path in (run_dir, member_dir):
            try:
                os.mkdir(path)
            except FileExistsError:
                continue
            if self._fsync:
                _fsync_dir(os.path.dirname(path))
        self._made.add(member_dir)

    def delete(self, checkpoint_id: str) -> None:
        """Remove a checkpoint's whole prefix (a no-op if it is gone already).

        The manifest goes first, so the checkpoint disappears at once; on a local
        filesystem the directory is renamed to a ``.tmp-del-*`` name first. A crash in
        between leaves a leftover for :meth:`sweep`.

        Raises:
            CheckpointError: The id is not one of this store's, or it could not be removed.
        """
        if self._read_only:
            raise _read_only(self, "delete")
        path = self._path(checkpoint_id)
        fs = self._filesystem()
        try:
            if self._rename:
                parent = path.rsplit("/", 1)[0]
                trash = f"{parent}/{TMP_PREFIX}del-{uuid.uuid4().hex}"
                try:
                    fs.mv(path, trash)
                except FileNotFoundError:
                    return
                self._remove_quietly(fs, trash)
            else:
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(f"{path}/{MANIFEST_FILE}")
                self._remove_tree(fs, path)
        except Exception as err:
            raise CheckpointError(
                f"Checkpoint {checkpoint_id!r} in {self._shown} could not be deleted "
                f"({type(err).__name__}: {self._text(err)})."
            ) from self._cause(err)
        log.debug("deleted checkpoint %s from %s", checkpoint_id, self._shown)

    def sweep(
        self,
        *,
        grace_seconds: float | None = None,
        run: str | None = None,
        owner: str | None = None,
    ) -> int:
        """Remove what a crash left behind: checkpoints with a payload but no manifest (a
        write or a delete cut short) and ``.tmp-*`` directories.

        A leftover is removed once none of its objects changed for ``grace_seconds``, so
        that a write in progress in another process is left alone; one whose times the
        filesystem does not give is kept.

        Args:
            grace_seconds: The minimum age of a leftover to remove; by default
                :data:`genepool.checkpoints.SWEEP_GRACE_SECONDS`.
            run: Only this run's leftovers (default: every run's).
            owner: The identity of the datastore asking: a shorter ``grace_seconds``
                applies only in run folders marked as its own (see
                :meth:`genepool.checkpoints.CheckpointStore.sweep`). The owner marker is
                never removed.

        Returns:
            How many leftovers were removed.

        Raises:
            CheckpointError: The location cannot be listed (e.g. the bucket does not exist).
        """
        if self._read_only:
            raise _read_only(self, "sweep")
        grace = SWEEP_GRACE_SECONDS if grace_seconds is None else grace_seconds
        if run is not None:
            check_run_name(run, owner="FsspecCheckpoints.sweep")
        fs = self._filesystem()
        where = self._root if run is None else self._join(run)
        groups: dict[str, dict[str, Any]] = {}
        for name, info in self._find(fs, where, strict=True, withdirs=True).items():
            parts = self._relative(name)
            if parts is None or len(parts) < 3 or parts[0].startswith("."):
                continue
            if not _MEMBER_DIR.fullmatch(parts[1]):
                continue
            if not (parts[2].startswith(TMP_PREFIX) or _CHECKPOINT_DIR.fullmatch(parts[2])):
                continue
            groups.setdefault("/".join(parts[:3]), {})["/".join(parts[3:])] = info
        now = time.time()
        removed = 0
        graces: dict[str, float] = {}  # run -> the grace in its folder
        for prefix, entries in groups.items():
            run_name, entry = prefix.split("/", 1)[0], prefix.rsplit("/", 1)[1]
            if run_name not in graces:
                graces[run_name] = self._grace_in(run_name, grace, owner)
            if not entry.startswith(TMP_PREFIX) and (
                MANIFEST_FILE in entries or PAYLOAD_FILE not in entries
            ):
                continue  # a checkpoint, or not one of ours
            files = [i for i in entries.values() if i.get("type") != "directory"]
            times = [_mtime(i) for i in files or list(entries.values())]
            if not times or None in times:
                continue
            if now - max(t for t in times if t is not None) < graces[run_name]:
                continue
            path = self._join(prefix)
            if self._rename:
                # claim it first: a writer still using it then fails instead of
                # renaming a half-removed directory into place
                claimed = f"{path.rsplit('/', 1)[0]}/{TMP_PREFIX}sweep-{uuid.uuid4().hex}"
                try:
                    fs.mv(path, claimed)
                except OSError:
                    continue  # gone already, or another sweep took it
                path = claimed
            self._remove_quietly(fs, path)
            removed += 1
            log.info("removed checkpoint leftover %s from %s", prefix, self._shown)
        return removed

    # -- reading ---------------------------------------------------------------------
    def get(self, checkpoint_id: str) -> bytes:
        """The payload of a checkpoint, after checking its size and SHA-256.

        Raises:
            CheckpointError: The checkpoint is missing, torn (no manifest, or a payload
                that does not match it), not a genepool checkpoint, or written in a newer
                manifest format.
        """
        path = self._path(checkpoint_id)
        fs = self._filesystem()
        record = self._read_manifest(fs, checkpoint_id, path)
        name = record["payload"]["file"]
        data = self._cat(fs, f"{path}/{name}")
        if data is None:
            # a delete removes the manifest first: gone meanwhile, or torn
            if self._cat(fs, f"{path}/{MANIFEST_FILE}") is None:
                raise self._missing(checkpoint_id)
            raise _torn(checkpoint_id, self._shown, f"{name} is missing")
        return _check_payload(data, record, checkpoint_id, self._shown)

    def rewrite(self, checkpoint_id: str, blob: bytes) -> None:
        """Replace a checkpoint's payload; see :meth:`CheckpointStore.rewrite`.

        The new payload goes to an object (file) of a new name, then the manifest is
        replaced by one that names it (a whole-object put; a rename on a local
        filesystem), then the old payload is removed.
        """
        if self._read_only:
            raise _read_only(self, "rewrite")
        path = self._path(checkpoint_id)
        fs = self._filesystem()
        record = self._read_manifest(fs, checkpoint_id, path)
        old = record["payload"]["file"]
        data = bytes(blob)
        record["payload"] = {"file": f"payload-{uuid.uuid4().hex}.bin", **_payload_record(data)}
        new = f"{path}/{record['payload']['file']}"
        text = _record_json(record)
        try:
            self._write(fs, new, data)
            if self._rename:  # a local filesystem: a temporary file, then a rename
                tmp = f"{path}/{TMP_PREFIX}{MANIFEST_FILE}"
                _write_file(tmp, text, fsync=self._fsync)
                os.replace(tmp, f"{path}/{MANIFEST_FILE}")
            else:
                self._write(fs, f"{path}/{MANIFEST_FILE}", text)
        except Exception as err:
            self._remove_quietly(fs, new)
            raise CheckpointError(
                f"Checkpoint {checkpoint_id!r} in {self._shown} could not be rewritten "
                f"({type(err).__name__}: {self._text(err)}); it still holds its old payload."
            ) from self._cause(err)
        self._remove_quietly(fs, f"{path}/{old}")

    def manifest(self, checkpoint_id: str) -> dict[str, Any]:
        """The manifest of a checkpoint (the payload is not checked; :meth:`get` does).

        See :meth:`CheckpointStore.manifest` for its keys.

        Raises:
            CheckpointError: As :meth:`get`, except for a payload that does not match.
        """
        path = self._path(checkpoint_id)
        return self._read_manifest(self._filesystem(), checkpoint_id, path)

    def ids(self, run: str | None = None, *, older_than: float | None = None) -> list[str]:
        """The ids of the complete checkpoints (those with a manifest), sorted.

        Args:
            run: Only this run's checkpoints.
            older_than: Only checkpoints whose manifest was written more than this many
                seconds ago (none whose time the filesystem does not give).
        """
        if run is not None:
            check_run_name(run, owner="FsspecCheckpoints.ids")
        fs = self._filesystem()
        where = self._root if run is None else self._join(run)
        latest = None if older_than is None else time.time() - older_than
        found: list[str] = []
        for name, info in self._find(fs, where).items():
            parts = self._relative(name)
            if (
                parts is None
                or len(parts) != 4
                or parts[3] != MANIFEST_FILE
                or _bad_run_name(parts[0]) is not None
                or not _MEMBER_DIR.fullmatch(parts[1])
                or not _CHECKPOINT_DIR.fullmatch(parts[2])
            ):
                continue
            if latest is not None:
                written = _mtime(info)
                if written is None or written >= latest:
                    continue
            found.append("/".join(parts[:3]))
        return sorted(found)

    # -- helpers ---------------------------------------------------------------------
    def _filesystem(self) -> Any:
        fs = self._fs
        if fs is None:
            with self._lock:
                if self._fs is None:
                    self._fs, _ = self._connect()
                fs = self._fs
        return fs

    def _connect(self) -> tuple[Any, str]:
        """Open the URL's filesystem; return it and the URL's path in it."""
        try:
            import fsspec
        except ImportError as err:
            raise missing_dependency(
                "fsspec", "s3", "Checkpoints on a URL (FsspecCheckpoints)"
            ) from self._cause(err)
        protocol = self._url.split("://", 1)[0] if "://" in self._url else "file"
        try:
            fs, root = fsspec.core.url_to_fs(self._url, **self._options)
        except ImportError as err:
            if protocol in ("s3", "s3a"):
                raise missing_dependency(
                    "s3fs", "s3", f"Checkpoints on {self._shown!r}"
                ) from self._cause(err)
            raise MissingDependencyError(
                f"Checkpoints on {self._shown!r} need fsspec's implementation of "
                f"{protocol!r}, which is not installed ({self._text(err)}). Fix: install the "
                "package that message names."
            ) from self._cause(err)
        except (ValueError, TypeError) as err:
            raise invalid(
                "FsspecCheckpoints",
                "url",
                "a URL whose protocol fsspec knows, with storage_options its filesystem takes",
                f"{self._shown!r} ({type(err).__name__}: {self._text(err)})",
                "Fix: e.g. 's3://bucket/prefix', and check the names in storage_options.",
            ) from self._cause(err)
        root = str(root).rstrip("/")
        if not root.strip("/"):
            raise invalid(
                "FsspecCheckpoints",
                "url",
                "a URL that names a bucket or directory",
                repr(self._shown),
                "Fix: e.g. 's3://bucket/prefix' or 'memory://checkpoints'.",
            )
        self._fs = fs
        return fs, root

    def _join(self, relative: str) -> str:
        return f"{self._root}/{relative}"

    def _relative(self, name: str) -> list[str] | None:
        """The parts of a listed path below the root, or None if it is not below it."""
        name = name.rstrip("/")
        if not name.startswith(self._root + "/"):
            return None
        return name[len(self._root) + 1 :].split("/")

    def _path(self, checkpoint_id: str) -> str:
        """The prefix of a checkpoint id; CheckpointError if it is not a valid id."""
        _id_parts(checkpoint_id, "FsspecCheckpoints")
        return self._join(checkpoint_id)

    def _folder(self, run: str) -> str:
        return f"{self._shown.rstrip('/')}/{run}"

    def _read_marker(self, run: str) -> bytes | None:
        return self._cat(self._filesystem(), self._join(f"{run}/{OWNER_FILE}"))

    def _create_marker(self, run: str, text: bytes) -> bool:
        """Locally, created only if absent (one of two processes wins). An object store
        has no such write: the marker is written, then read back, and the last writer of
        two at once wins."""
        if self._read_only:
            raise _read_only(self, "own")
        fs = self._filesystem()
        path = self._join(f"{run}/{OWNER_FILE}")
        try:
            if self._rename:
                os.makedirs(self._join(run), exist_ok=True)
                _create_file(path, text, fsync=self._fsync)
                return True
            if self._cat(fs, path) is not None:
                return False
            self._write(fs, path, text)
        except FileExistsError:
            return False
        except Exception as err:
            raise CheckpointError(
                f"The owner marker of {self._folder(run)} could not be written "
                f"({type(err).__name__}: {self._text(err)})."
            ) from self._cause(err)
        return self._cat(fs, path) == text

    def _read_manifest(self, fs: Any, checkpoint_id: str, path: str) -> dict[str, Any]:
        raw = self._cat(fs, f"{path}/{MANIFEST_FILE}")
        if raw is None:
            left = self._find(fs, path)
            if f"{path}/{PAYLOAD_FILE}" in left:
                # what a delete under way leaves for a moment (it removes the manifest
                # first), or a write or delete cut short: never loaded
                raise CheckpointError(
                    f"No checkpoint {checkpoint_id!r} in {self._shown}: only its "
                    f"{PAYLOAD_FILE} is there, without {MANIFEST_FILE} (it is being "
                    "deleted, or its write or delete was cut short), so it is never "
                    "loaded; sweep() removes such leftovers."
                )
            if left:
                raise _foreign(checkpoint_id, self._shown, f"it has no {MANIFEST_FILE}")
            raise self._missing(checkpoint_id)
        return _parse_manifest(raw, checkpoint_id, self._shown)

    def _cat(self, fs: Any, path: str) -> bytes | None:
        """The bytes of an object, or None if there is none."""
        try:
            return bytes(fs.cat_file(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except Exception as err:
            raise CheckpointError(
                f"{path} could not be read from {self._shown} "
                f"({type(err).__name__}: {self._text(err)}). Fix: check the connection, and "
                "the credentials and endpoint in storage_options or the environment."
            ) from self._cause(err)

    def _find(
        self, fs: Any, path: str, *, strict: bool = False, withdirs: bool = False
    ) -> dict[str, Any]:
        """Every object under ``path``, by name, with its details (listed afresh)."""
        try:
            fs.invalidate_cache(path)  # a cached listing may be another process's past
            found = fs.find(path, withdirs=withdirs, detail=True)
        except FileNotFoundError as err:
            if not strict:
                return {}
            raise CheckpointError(
                f"The checkpoint location {self._shown} does not exist ({self._text(err)}). "
                "Fix: create the bucket, or check the URL."
            ) from self._cause(err)
        except Exception as err:
            raise CheckpointError(
                f"The checkpoints in {self._shown} could not be listed "
                f"({type(err).__name__}: {self._text(err)}). Fix: check the connection, and the "
                "credentials and endpoint in storage_options or the environment."
            ) from self._cause(err)
        return dict(found) if isinstance(found, Mapping) else {n: {} for n in found}

    def _remove_tree(self, fs: Any, path: str) -> None:
        try:
            fs.invalidate_cache(path)
            fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    def _remove_quietly(self, fs: Any, path: str) -> None:
        """Remove a prefix, logging (not raising) a failure: sweep() retries."""
        try:
            self._remove_tree(fs, path)
        except Exception as err:
            log.warning("could not remove %s (%s); sweep() will retry", path, err)

    def _missing(self, checkpoint_id: str) -> CheckpointError:
        return CheckpointError(
            f"No checkpoint {checkpoint_id!r} in {self._shown}: it was deleted, or never "
            "written there."
        )


def _is_local(fs: Any) -> bool:
    """Whether ``fs`` is fsspec's local filesystem (whose ``mv`` is an atomic rename)."""
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _mtime(info: Mapping[str, Any]) -> float | None:
    """An object's modification time (seconds since the epoch) from a listing's details."""
    for key in _TIME_KEYS:
        value = info.get(key)
        if isinstance(value, datetime.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=datetime.timezone.utc)
            return value.timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=datetime.timezone.utc)
            return parsed.timestamp()
    return None
