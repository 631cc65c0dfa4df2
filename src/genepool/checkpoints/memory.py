"""Checkpoints in this process's memory (:class:`MemoryCheckpoints`): for tests and for
runs in one process, whose checkpoints end with it."""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections.abc import Mapping
from typing import Any

from genepool._errors import CheckpointError
from genepool.checkpoints._base import CheckpointStore
from genepool.checkpoints._layout import (
    build_manifest,
    check_key,
    check_run_name,
    normalise_fields,
    payload_record,
)

__all__ = ["MemoryCheckpoints"]


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
        check_key(run, member, step)
        data = bytes(blob)
        fields = normalise_fields(manifest)
        with self._lock:
            checkpoint_id = f"{run}/m{member}/s{step}-{next(self._seq)}"
            store = self._owner_of(run)
            record = build_manifest(checkpoint_id, run, member, step, data, fields, store)
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
            record["payload"].update(payload_record(data))
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
