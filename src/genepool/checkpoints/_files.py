"""The file procedures of checkpoints in a local (or mounted) folder: write a file whole,
create one only if absent, flush a folder's entries, read a folder's last change, list the
members' folders, remove a tree, take a folder away by a rename before removing it, and
sweep a member's folder of old temporaries; and which folder a ``file://`` URL names.
:mod:`genepool.checkpoints.local` and its spares use them (tests patch them here)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
import uuid
from typing import Any

from genepool.checkpoints._layout import MEMBER_DIR, TMP_PREFIX

__all__ = [
    "create_file",
    "file_size",
    "fsync_dir",
    "last_change",
    "local_path",
    "member_dirs",
    "remove_tree",
    "rename_and_remove",
    "sweep_temporaries",
    "write_file",
]

log = logging.getLogger("genepool.checkpoints")


_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def write_file(path: str, data: bytes, *, fsync: bool) -> None:
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


def create_file(path: str, data: bytes, *, fsync: bool) -> None:
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


def fsync_dir(path: str) -> None:
    """Flush a directory's entries to disk (a no-op on Windows, which cannot open one)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_size(path: str) -> int:
    """The size of a file; -1 if it cannot be read."""
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def last_change(path: str) -> float:
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


def remove_tree(path: str) -> None:
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


def rename_and_remove(path: str, kind: str) -> None:
    """Rename the folder ``path`` to a new ``.tmp-<kind>-*`` name beside it, then remove it.

    Only one of two processes can win the rename, and a writer still using the folder then
    fails instead of renaming a half-removed folder into place; a crash in between leaves a
    ``.tmp-*`` folder for the sweep. The rename's OSError is raised (FileNotFoundError: the
    folder is gone already); a failure to remove is logged.
    """
    taken = os.path.join(os.path.dirname(path), f"{TMP_PREFIX}{kind}-{uuid.uuid4().hex}")
    os.rename(path, taken)
    remove_tree(taken)


def sweep_temporaries(member_dir: str, *, grace: float, now: float) -> int:
    """Remove the ``.tmp-*`` folders of ``member_dir`` in which nothing changed for
    ``grace`` seconds before ``now``; how many were removed."""
    try:
        entries = [e for e in os.scandir(member_dir) if e.name.startswith(TMP_PREFIX)]
    except OSError:
        return 0
    removed = 0
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False) or now - last_change(entry.path) < grace:
            continue
        try:
            # claim it first: a writer still using it then fails instead of
            # renaming a half-removed directory into place
            rename_and_remove(entry.path, "sweep")
        except OSError:
            continue  # gone already, or another sweep took it
        removed += 1
        log.info("removed stale temporary checkpoint directory %s", entry.path)
    return removed


def member_dirs(root: str, run: str | None) -> list[str]:
    """The members' folders, ``<root>/<run>/m<member>``, of every run or of one (a name
    checked already)."""
    if run is not None:
        run_dirs = [os.path.join(root, run)]
    else:
        try:
            run_dirs = [
                e.path for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")
            ]
        except OSError:
            return []
    found: list[str] = []
    for run_dir in run_dirs:
        try:
            found.extend(
                e.path for e in os.scandir(run_dir) if e.is_dir() and MEMBER_DIR.fullmatch(e.name)
            )
        except OSError:
            continue
    return found


def local_path(url: str) -> str | None:
    """The folder a URL of this machine's filesystem names (``file://...`` or
    ``local://...``, read as fsspec reads it); ``None`` for any other URL, for one that
    names no folder below the filesystem's root, or without fsspec."""
    protocol, sep, _ = url.partition("://")
    if not sep or "::" in url or protocol not in ("file", "local"):
        return None
    try:
        from fsspec.implementations.local import LocalFileSystem
    except ImportError:
        return None
    path = str(LocalFileSystem._strip_protocol(url)).rstrip("/")
    return path if path.strip("/") else None
