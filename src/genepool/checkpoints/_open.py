"""Which checkpoint store a location names (:func:`open_checkpoints`): a folder, as a path
or a ``file://`` URL, is :class:`~genepool.checkpoints.LocalCheckpoints`'; any other URL
is :class:`~genepool.checkpoints.FsspecCheckpoints`', loaded on first use (a worker that
writes to a folder never imports it)."""

from __future__ import annotations

import os

from genepool.checkpoints._base import CheckpointStore
from genepool.checkpoints._files import local_path
from genepool.checkpoints.local import LocalCheckpoints

__all__ = ["open_checkpoints"]


def open_checkpoints(
    location: str | os.PathLike[str], *, fsync: bool = False, read_only: bool = False
) -> CheckpointStore:
    """The checkpoint store at ``location``: a folder (a path or a ``file://`` URL) or any
    other fsspec URL (``s3://bucket/prefix``, ``memory://name``). ``fsync`` and
    ``read_only`` are those of the store's class."""
    if isinstance(location, str) and "://" in location:
        folder = local_path(location)
        if folder is None:
            from genepool.checkpoints.fsspec import FsspecCheckpoints

            return FsspecCheckpoints(location, fsync=fsync, read_only=read_only)
        location = folder
    return LocalCheckpoints(os.fspath(location), fsync=fsync, read_only=read_only)
