"""Checkpoints: immutable blobs with ids, written once and read by any member.

A checkpoint holds what a member is: the trainable's state and its random stream. The
datastore records which checkpoint each member holds and which are pinned by an exploit;
the worker deletes one only after :meth:`genepool.store.Store.collect` said nothing refers
to it. This module keeps the bytes; the in-memory backend here, a directory and any
fsspec URL in later backends.
"""

from __future__ import annotations

import io
import itertools
import pickle
import threading
from abc import ABC, abstractmethod
from typing import Any

from genepool._errors import CheckpointError

__all__ = ["CheckpointStore", "MemoryCheckpoints", "decode", "encode"]

FORMAT_VERSION = 1


def encode(payload: Any) -> bytes:
    """Serialise a checkpoint payload (pickle, with a format version)."""
    buffer = io.BytesIO()
    try:
        pickle.dump((FORMAT_VERSION, payload), buffer, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:
        raise CheckpointError(
            f"The trainable's state could not be serialised ({type(err).__name__}: {err}). "
            "Fix: return plain data (dicts, lists, numbers, numpy arrays) from save() / state."
        ) from err
    return buffer.getvalue()


def decode(blob: bytes, *, checkpoint_id: str = "?") -> Any:
    """Read back what :func:`encode` wrote; a torn or foreign blob raises CheckpointError."""
    try:
        version, payload = pickle.loads(blob)
    except Exception as err:
        raise CheckpointError(
            f"Checkpoint {checkpoint_id} is torn or not a genepool checkpoint ({err})."
        ) from err
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint {checkpoint_id} has format version {version}; this genepool reads "
            f"version {FORMAT_VERSION}."
        )
    return payload


class CheckpointStore(ABC):
    """Where checkpoint bytes live. Writes are atomic: a reader sees all of one or nothing."""

    @abstractmethod
    def put(self, run: str, member: int, step: int, blob: bytes) -> str:
        """Store ``blob`` and return its new, never reused id."""

    @abstractmethod
    def get(self, checkpoint_id: str) -> bytes:
        """The bytes of a checkpoint; CheckpointError if it does not exist."""

    @abstractmethod
    def delete(self, checkpoint_id: str) -> None:
        """Remove a checkpoint (a no-op if it is gone already)."""


class MemoryCheckpoints(CheckpointStore):
    """Checkpoints as bytes in this process's memory."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def put(self, run: str, member: int, step: int, blob: bytes) -> str:
        with self._lock:
            checkpoint_id = f"{run}/m{member}/s{step}-{next(self._seq)}"
            self._blobs[checkpoint_id] = bytes(blob)
            return checkpoint_id

    def get(self, checkpoint_id: str) -> bytes:
        try:
            return self._blobs[checkpoint_id]
        except KeyError:
            raise CheckpointError(f"No checkpoint {checkpoint_id!r} in this store.") from None

    def delete(self, checkpoint_id: str) -> None:
        with self._lock:
            self._blobs.pop(checkpoint_id, None)

    def __len__(self) -> int:
        return len(self._blobs)
