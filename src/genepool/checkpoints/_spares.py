"""The spare folders of :class:`~genepool.checkpoints.LocalCheckpoints`: the folders of
discarded checkpoints, kept to write later checkpoints into.

On many file systems creating a folder and two files costs ten times more than renaming a
folder and overwriting its two files. So the folder of a checkpoint that nothing refers
to any more is renamed to a ``.tmp-spare-<token>-<n>`` name (which no id names) and kept,
a few per run, by the object that discarded it, for a later write of the same run. A
spare kept longer than :data:`SPARE_MAX_AGE_SECONDS` is removed rather than reused, so
that it never comes near the sweep's grace; a copy of the object in another process (a
pickle) owns no spare.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid

from genepool.checkpoints import _files
from genepool.checkpoints._layout import TMP_PREFIX

__all__ = ["SPARES_PER_RUN", "SPARE_MAX_AGE_SECONDS", "SPARE_MAX_BYTES", "Spares"]

#: How many discarded checkpoint directories one :class:`LocalCheckpoints` object keeps,
#: per run, to write later checkpoints into (creating a directory and two files costs
#: far more than renaming a directory and overwriting its files).
SPARES_PER_RUN = 16
#: Only a checkpoint whose payload is at most this large (bytes) is kept as a spare: for a
#: larger one, writing the bytes costs far more than making the directory.
SPARE_MAX_BYTES = 1 << 20
#: A spare directory kept longer than this (seconds) is removed rather than reused, so it
#: never comes near :data:`~genepool.checkpoints.SWEEP_GRACE_SECONDS`.
SPARE_MAX_AGE_SECONDS = 600.0


class Spares:
    """The spare folders one object keeps, by run folder; safe under threads."""

    def __init__(self) -> None:
        # run directory -> [(path, when it was discarded)]
        self._kept: dict[str, list[tuple[str, float]]] = {}
        self._lock = threading.Lock()
        self._token = uuid.uuid4().hex  # names this object's spare directories
        self._seq = itertools.count()

    def __reduce__(self) -> tuple[type[Spares], tuple[()]]:
        """A copy (in a worker process) starts with no spare: the folders stay this one's."""
        return (Spares, ())

    def would_keep(self, run_dir: str, payload: str) -> bool:
        """Whether a discarded checkpoint of ``run_dir`` whose payload file is ``payload``
        is kept: there is room for the run's spares, and the payload is small."""
        with self._lock:
            full = len(self._kept.get(run_dir, ())) >= SPARES_PER_RUN
        # (a directory whose payload was rewritten has no payload.bin: it is not kept)
        return not full and 0 <= _files.file_size(payload) <= SPARE_MAX_BYTES

    def new_name(self, member_dir: str) -> str:
        """A new spare name in ``member_dir``, never used before."""
        return os.path.join(member_dir, f"{TMP_PREFIX}spare-{self._token}-{next(self._seq)}")

    def keep(self, run_dir: str, path: str) -> None:
        """Keep the spare folder ``path`` (renamed to :meth:`new_name` already)."""
        with self._lock:
            self._kept.setdefault(run_dir, []).append((path, time.time()))

    def take(self, run_dir: str) -> str | None:
        """A spare folder of the run to write into (the caller's alone from now on); None
        if there is none."""
        while True:
            with self._lock:
                spares = self._kept.get(run_dir)
                if not spares:
                    return None
                path, discarded = spares.pop()
            if time.time() - discarded <= SPARE_MAX_AGE_SECONDS:
                return path
            _files.remove_tree(path)

    def drain(self) -> None:
        """Remove every spare folder kept."""
        with self._lock:
            spares = [path for kept in self._kept.values() for path, _ in kept]
            self._kept.clear()
        for path in spares:
            _files.remove_tree(path)
