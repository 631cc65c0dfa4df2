"""Resident checkpoints: held in this process's memory in front of a durable store.

A driver that checkpoints durably only every few rounds (the vectorised population's
``checkpoint_every``) still records a checkpoint at every round, so that decisions, pins
and exploits work as always: :meth:`ResidentCheckpoints.put_resident` keeps it in memory.
Its id has the durable store's form (``<run>/m<member>/s<step>-<32 hex digits>``), but no
file holds it: in this process it reads from memory; in any other, and after this process
ends, it is a missing checkpoint, and a member whose current checkpoint it is falls back
to its newest previous checkpoint that reads, its last durable one (rolled back to that
checkpoint's step, hyperparameters and generation, with a ``"fallback"`` event). Deleting
it frees the memory; deleting it from the durable store is a no-op, as for any id gone.

Everything else (durable writes, listing, sweeping, ownership) is the durable store's.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from genepool.checkpoints._base import CheckpointStore
from genepool.checkpoints._layout import Owner, build_manifest, check_key, normalise_fields

__all__ = ["ResidentCheckpoints"]


class ResidentCheckpoints(CheckpointStore):
    """``durable`` with resident checkpoints in front of it.

    Args:
        durable: Where durable checkpoints go, and every other call.
    """

    def __init__(self, durable: CheckpointStore) -> None:
        self.durable = durable
        self._held: dict[str, tuple[bytes, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def put_resident(
        self,
        run: str,
        member: int,
        step: int,
        blob: bytes,
        *,
        manifest: Mapping[str, Any] | None = None,
    ) -> str:
        """Hold ``blob`` in memory as a checkpoint of ``member`` at ``step``; its id."""
        check_key(run, member, step)
        checkpoint_id = f"{run}/m{member}/s{step}-{os.urandom(16).hex()}"
        record = build_manifest(
            checkpoint_id, run, member, step, bytes(blob), normalise_fields(manifest)
        )
        with self._lock:
            self._held[checkpoint_id] = (bytes(blob), record)
        return checkpoint_id

    def is_resident(self, checkpoint_id: str) -> bool:
        """Whether ``checkpoint_id`` is held here (not durable)."""
        return checkpoint_id in self._held

    @property
    def fsync(self) -> bool:
        return self.durable.fsync

    def put(
        self,
        run: str,
        member: int,
        step: int,
        blob: bytes,
        *,
        manifest: Mapping[str, Any] | None = None,
    ) -> str:
        return self.durable.put(run, member, step, blob, manifest=manifest)

    def get(self, checkpoint_id: str) -> bytes:
        held = self._held.get(checkpoint_id)
        return held[0] if held is not None else self.durable.get(checkpoint_id)

    def manifest(self, checkpoint_id: str) -> dict[str, Any]:
        held = self._held.get(checkpoint_id)
        return dict(held[1]) if held is not None else self.durable.manifest(checkpoint_id)

    def delete(self, checkpoint_id: str) -> None:
        with self._lock:
            if self._held.pop(checkpoint_id, None) is not None:
                return
        self.durable.delete(checkpoint_id)

    def discard(self, checkpoint_id: str) -> None:
        with self._lock:
            if self._held.pop(checkpoint_id, None) is not None:
                return
        self.durable.discard(checkpoint_id)

    def rewrite(self, checkpoint_id: str, blob: bytes) -> None:
        self.durable.rewrite(checkpoint_id, blob)

    def drain(self) -> None:
        self.durable.drain()

    def ids(self, run: str | None = None, *, older_than: float | None = None) -> list[str]:
        return self.durable.ids(run, older_than=older_than)

    def sweep(
        self,
        *,
        grace_seconds: float | None = None,
        run: str | None = None,
        owner: str | None = None,
    ) -> int:
        return self.durable.sweep(grace_seconds=grace_seconds, run=run, owner=owner)

    def own(self, run: str, owner: Owner, *, referenced: Collection[str] = ()) -> None:
        self.durable.own(run, owner, referenced=referenced)

    def owner(self, run: str) -> Owner | None:
        return self.durable.owner(run)

    def owned_by(self, identity: str, checkpoint_ids: Iterable[str]) -> list[str]:
        return self.durable.owned_by(identity, checkpoint_ids)

    def __repr__(self) -> str:
        return f"ResidentCheckpoints({self.durable!r}, {len(self._held)} resident)"
