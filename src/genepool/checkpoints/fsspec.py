"""Checkpoints under a remote fsspec URL: an object store (``s3://``, ``gcs://``, ...) or
fsspec's in-memory filesystem (``memory://``): :class:`FsspecCheckpoints`.

The layout and the manifest are those of :class:`~genepool.checkpoints.LocalCheckpoints`
(:mod:`genepool.checkpoints._layout`). An object store cannot rename, so a write puts the
payload first and the manifest last: the manifest carries the payload's size and SHA-256,
a checkpoint exists only once its manifest does, and a payload that does not match its
manifest is torn and never loaded. A URL of this machine's filesystem (``file://``) is
the local backend's, with its rename-based writes: ``FsspecCheckpoints("file:///x")`` is
a :class:`~genepool.checkpoints.LocalCheckpoints` on ``/x``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from genepool._errors import CheckpointError, StorageFaultError, invalid, storage_fault
from genepool.checkpoints._base import SWEEP_GRACE_SECONDS, CheckpointStore, read_only_error
from genepool.checkpoints._bucket import Bucket, mtime
from genepool.checkpoints._files import local_path
from genepool.checkpoints._layout import (
    CHECKPOINT_DIR,
    MANIFEST_FILE,
    MEMBER_DIR,
    OWNER_FILE,
    PAYLOAD_FILE,
    TMP_PREFIX,
    bad_run_name,
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
from genepool.checkpoints.local import LocalCheckpoints

__all__ = ["FsspecCheckpoints"]

log = logging.getLogger("genepool.checkpoints")


class FsspecCheckpoints(CheckpointStore):
    """Checkpoints under any fsspec URL, with the layout and manifest of LocalCheckpoints.

    On an object store (no rename) a write puts ``payload.bin`` first and
    ``manifest.json`` last. A checkpoint is listed and read only once its manifest exists,
    and :meth:`get` checks the payload's size and SHA-256 against it, so a crash mid-write
    leaves a torn prefix that is never loaded; :meth:`sweep` removes such leftovers once
    they are older than a grace period (at construction, and whenever called).
    :meth:`delete` removes the manifest first, then the prefix. A URL of this machine's
    filesystem (``file://``) makes a :class:`~genepool.checkpoints.LocalCheckpoints` on its
    folder instead: a write goes into a ``.tmp-*`` directory renamed into place.

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

    def __new__(
        cls,
        url: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        fsync: bool = False,
        read_only: bool = False,
    ) -> Any:
        """A URL of this machine's filesystem makes the local backend (see the class)."""
        folder = local_path(url) if isinstance(url, str) else None
        if folder is not None:
            return LocalCheckpoints(folder, fsync=fsync, read_only=read_only)
        return super().__new__(cls)

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
        self._fsync = bool(fsync)
        self._read_only = bool(read_only)
        self._owners: dict[str, str] = {}  # run -> the identity own() bound it to
        self._bucket = Bucket(url, storage_options or {})
        if not self._read_only:
            self.sweep()

    def __getnewargs__(self) -> tuple[str]:
        """What an unpickling gives :meth:`__new__`: the URL (a remote one)."""
        return (self._bucket.url,)

    @property
    def url(self) -> str:
        """The URL the checkpoints live under."""
        return self._bucket.url

    @property
    def fsync(self) -> bool:
        """The ``fsync`` given: on an object store, a write is durable once it returns."""
        return self._fsync

    @property
    def filesystem(self) -> Any:
        """The fsspec filesystem (opened again after unpickling)."""
        return self._bucket.fs

    @property
    def root(self) -> str:
        """The URL's path as the filesystem names it (e.g. ``bucket/prefix`` for S3)."""
        return self._bucket.root

    @property
    def process_local(self) -> bool:
        """Whether the checkpoints live in this process's memory (``memory://``), where no
        other process (a worker, a later run) can read them."""
        from fsspec.implementations.memory import MemoryFileSystem

        return isinstance(self._bucket.fs, MemoryFileSystem)

    @property
    def read_only(self) -> bool:
        """Whether this object only reads (see the ``read_only`` argument)."""
        return self._read_only

    def __repr__(self) -> str:
        extra = ", read_only=True" if self._read_only else ""
        return f"FsspecCheckpoints({self._bucket.shown!r}, fsync={self._fsync}{extra})"

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
            raise read_only_error(self, "put")
        check_key(run, member, step)
        data = bytes(blob)
        fields = fields_json(manifest)
        checkpoint_id = f"{run}/m{member}/s{step}-{uuid.uuid4().hex}"
        store = self._owner_of(run)
        text = manifest_json(checkpoint_id, run, member, step, data, fields, store)
        bucket = self._bucket
        final = bucket.join(checkpoint_id)
        try:
            bucket.write(f"{final}/{PAYLOAD_FILE}", data)
            bucket.write(f"{final}/{MANIFEST_FILE}", text)
        except Exception as err:  # the storage's fault, not the member's: the run stops
            bucket.remove_quietly(final)
            if isinstance(err, OSError) and err.errno is not None:
                what = f"writing checkpoint {checkpoint_id!r}"
                raise storage_fault(err, what, bucket.shown) from bucket.cause(err)
            raise StorageFaultError(
                f"Checkpoint {checkpoint_id!r} could not be written to {bucket.shown} "
                f"({type(err).__name__}: {bucket.text(err)}); nothing was stored, and the run "
                "stops with its members active. Fix: check that the bucket or directory "
                "exists and is writable, and the credentials and endpoint in "
                "storage_options or the environment; then run the same call again."
            ) from bucket.cause(err)
        except BaseException:
            bucket.remove_quietly(final)
            raise
        log.debug("wrote checkpoint %s to %s (%d bytes)", checkpoint_id, bucket.shown, len(data))
        return checkpoint_id

    def delete(self, checkpoint_id: str) -> None:
        """Remove a checkpoint's whole prefix (a no-op if it is gone already).

        The manifest goes first, so the checkpoint disappears at once. A crash in between
        leaves a leftover for :meth:`sweep`.

        Raises:
            CheckpointError: The id is not one of this store's, or it could not be removed.
        """
        if self._read_only:
            raise read_only_error(self, "delete")
        path = self._path(checkpoint_id)
        bucket = self._bucket
        try:
            with contextlib.suppress(FileNotFoundError):
                bucket.fs.rm_file(f"{path}/{MANIFEST_FILE}")
            bucket.remove(path)
        except Exception as err:
            raise CheckpointError(
                f"Checkpoint {checkpoint_id!r} in {bucket.shown} could not be deleted "
                f"({type(err).__name__}: {bucket.text(err)})."
            ) from bucket.cause(err)
        log.debug("deleted checkpoint %s from %s", checkpoint_id, bucket.shown)

    def sweep(
        self,
        *,
        grace_seconds: float | None = None,
        run: str | None = None,
        owner: str | None = None,
    ) -> int:
        """Remove what a crash left behind: checkpoints with a payload but no manifest (a
        write or a delete cut short) and ``.tmp-*`` prefixes.

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
            raise read_only_error(self, "sweep")
        grace = SWEEP_GRACE_SECONDS if grace_seconds is None else grace_seconds
        if run is not None:
            check_run_name(run, owner="FsspecCheckpoints.sweep")
        bucket = self._bucket
        where = bucket.root if run is None else bucket.join(run)
        groups: dict[str, dict[str, Any]] = {}
        for name, info in bucket.find(where, strict=True, withdirs=True).items():
            parts = bucket.relative(name)
            if parts is None or len(parts) < 3 or parts[0].startswith("."):
                continue
            if not MEMBER_DIR.fullmatch(parts[1]):
                continue
            if not (parts[2].startswith(TMP_PREFIX) or CHECKPOINT_DIR.fullmatch(parts[2])):
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
            times = [mtime(i) for i in files or list(entries.values())]
            if not times or None in times:
                continue
            if now - max(t for t in times if t is not None) < graces[run_name]:
                continue
            bucket.remove_quietly(bucket.join(prefix))
            removed += 1
            log.info("removed checkpoint leftover %s from %s", prefix, bucket.shown)
        return removed

    def rewrite(self, checkpoint_id: str, blob: bytes) -> None:
        """Replace a checkpoint's payload; see :meth:`CheckpointStore.rewrite`.

        The new payload goes to an object of a new name, then the manifest is replaced by
        one that names it (a whole-object put), then the old payload is removed.
        """
        if self._read_only:
            raise read_only_error(self, "rewrite")
        path = self._path(checkpoint_id)
        bucket = self._bucket
        record = self._read_manifest(checkpoint_id, path)
        old = record["payload"]["file"]
        data = bytes(blob)
        record["payload"] = {"file": f"payload-{uuid.uuid4().hex}.bin", **payload_record(data)}
        new = f"{path}/{record['payload']['file']}"
        try:
            bucket.write(new, data)
            bucket.write(f"{path}/{MANIFEST_FILE}", record_json(record))
        except Exception as err:
            bucket.remove_quietly(new)
            raise CheckpointError(
                f"Checkpoint {checkpoint_id!r} in {bucket.shown} could not be rewritten "
                f"({type(err).__name__}: {bucket.text(err)}); it still holds its old payload."
            ) from bucket.cause(err)
        bucket.remove_quietly(f"{path}/{old}")

    # -- reading ---------------------------------------------------------------------
    def get(self, checkpoint_id: str) -> bytes:
        """The payload of a checkpoint, after checking its size and SHA-256.

        Raises:
            CheckpointError: The checkpoint is missing, torn (no manifest, or a payload
                that does not match it), not a genepool checkpoint, or written in a newer
                manifest format.
        """
        path = self._path(checkpoint_id)
        record = self._read_manifest(checkpoint_id, path)
        name = record["payload"]["file"]
        data = self._bucket.cat(f"{path}/{name}")
        if data is None:
            # a delete removes the manifest first: gone meanwhile, or torn
            if self._bucket.cat(f"{path}/{MANIFEST_FILE}") is None:
                raise self._missing(checkpoint_id)
            raise torn(checkpoint_id, self._bucket.shown, f"{name} is missing")
        return check_payload(data, record, checkpoint_id, self._bucket.shown)

    def manifest(self, checkpoint_id: str) -> dict[str, Any]:
        """The manifest of a checkpoint (the payload is not checked; :meth:`get` does).

        See :meth:`CheckpointStore.manifest` for its keys.

        Raises:
            CheckpointError: As :meth:`get`, except for a payload that does not match.
        """
        return self._read_manifest(checkpoint_id, self._path(checkpoint_id))

    def ids(self, run: str | None = None, *, older_than: float | None = None) -> list[str]:
        """The ids of the complete checkpoints (those with a manifest), sorted.

        Args:
            run: Only this run's checkpoints.
            older_than: Only checkpoints whose manifest was written more than this many
                seconds ago (none whose time the filesystem does not give).
        """
        if run is not None:
            check_run_name(run, owner="FsspecCheckpoints.ids")
        bucket = self._bucket
        where = bucket.root if run is None else bucket.join(run)
        latest = None if older_than is None else time.time() - older_than
        found: list[str] = []
        for name, info in bucket.find(where).items():
            parts = bucket.relative(name)
            if (
                parts is None
                or len(parts) != 4
                or parts[3] != MANIFEST_FILE
                or bad_run_name(parts[0]) is not None
                or not MEMBER_DIR.fullmatch(parts[1])
                or not CHECKPOINT_DIR.fullmatch(parts[2])
            ):
                continue
            if latest is not None:
                written = mtime(info)
                if written is None or written >= latest:
                    continue
            found.append("/".join(parts[:3]))
        return sorted(found)

    # -- helpers ---------------------------------------------------------------------
    def _path(self, checkpoint_id: str) -> str:
        """The prefix of a checkpoint id; CheckpointError if it is not a valid id."""
        id_parts(checkpoint_id, "FsspecCheckpoints")
        return self._bucket.join(checkpoint_id)

    def _folder(self, run: str) -> str:
        return f"{self._bucket.shown.rstrip('/')}/{run}"

    def _read_marker(self, run: str) -> bytes | None:
        return self._bucket.cat(self._bucket.join(f"{run}/{OWNER_FILE}"))

    def _create_marker(self, run: str, text: bytes) -> bool:
        """An object store has no write that creates only if absent: the marker is
        written, then read back, and the last writer of two at once wins."""
        if self._read_only:
            raise read_only_error(self, "own")
        bucket = self._bucket
        path = bucket.join(f"{run}/{OWNER_FILE}")
        try:
            if bucket.cat(path) is not None:
                return False
            bucket.write(path, text)
        except Exception as err:
            raise CheckpointError(
                f"The owner marker of {self._folder(run)} could not be written "
                f"({type(err).__name__}: {bucket.text(err)})."
            ) from bucket.cause(err)
        return bucket.cat(path) == text

    def _read_manifest(self, checkpoint_id: str, path: str) -> dict[str, Any]:
        bucket = self._bucket
        raw = bucket.cat(f"{path}/{MANIFEST_FILE}")
        if raw is None:
            left = bucket.find(path)
            if f"{path}/{PAYLOAD_FILE}" in left:
                # what a delete under way leaves for a moment (it removes the manifest
                # first), or a write or delete cut short: never loaded
                raise CheckpointError(
                    f"No checkpoint {checkpoint_id!r} in {bucket.shown}: only its "
                    f"{PAYLOAD_FILE} is there, without {MANIFEST_FILE} (it is being "
                    "deleted, or its write or delete was cut short), so it is never "
                    "loaded; sweep() removes such leftovers."
                )
            if left:
                raise foreign(checkpoint_id, bucket.shown, f"it has no {MANIFEST_FILE}")
            raise self._missing(checkpoint_id)
        return parse_manifest(raw, checkpoint_id, bucket.shown)

    def _missing(self, checkpoint_id: str) -> CheckpointError:
        return CheckpointError(
            f"No checkpoint {checkpoint_id!r} in {self._bucket.shown}: it was deleted, or "
            "never written there."
        )
