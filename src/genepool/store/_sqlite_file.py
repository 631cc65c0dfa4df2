"""A SQLite file: where it may live, whose it is, how a connection to it is set up, and the
queue its writers wait in.

* **A local disk only.** SQLite's WAL mode, which several workers need, does not work on a
  network filesystem: a file on one is refused (:func:`check_local_filesystem`; use
  PostgreSQL there).
* **genepool's or nobody's.** A SQLite file that holds other tables and no genepool
  schema, or is not a SQLite database at all, is refused before anything is written to it
  (:func:`check_file`).
* **Connections** run in WAL mode (readers never wait for the writer) with
  ``synchronous=NORMAL``, a busy timeout and foreign keys (:func:`sqlite_pragmas`).
* **Writers queue** on an advisory lock beside the file (``<file>.genepool-lock``),
  polled every few tens of microseconds, before ``BEGIN IMMEDIATE``: SQLite's busy
  handler would sleep a millisecond or more at each try (:class:`WriterQueue`).

Nothing here imports SQLAlchemy: a SQLite worker uses it too.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from genepool._errors import StorageError

try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows: SQLite's busy handler alone
    _fcntl = None  # type: ignore[assignment]

__all__ = [
    "BUSY_SECONDS",
    "NETWORK_FILESYSTEMS",
    "WriterQueue",
    "check_file",
    "check_local_filesystem",
    "mount_type",
    "read_only_uri",
    "sqlite_connect_args",
    "sqlite_pragmas",
]

log = logging.getLogger("genepool.store")

#: How long a writer waits for the database's write lock (SQLite's busy timeout), and for
#: its turn in the writer queue.
BUSY_SECONDS = 30.0

#: Filesystem types (as in /proc/mounts) on which SQLite's WAL mode does not work.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smb2",
        "smb3",
        "smbfs",
        "ncpfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "davfs",
        "sshfs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.ceph",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.rclone",
        "fuse.davfs2",
    }
)


def _unescape_mount(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and i + 4 <= len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_type(path: str, mounts: str = "/proc/mounts") -> str | None:
    """The type of the filesystem holding ``path`` (Linux); ``None`` when it is unknown."""
    try:
        with open(mounts, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best_len, best_type = -1, None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        point, fstype = _unescape_mount(parts[1]), parts[2]
        prefix = point.rstrip("/") + "/"
        if (real == point or real.startswith(prefix)) and len(point) >= best_len:
            best_len, best_type = len(point), fstype  # the last of stacked mounts wins
    return best_type


def check_local_filesystem(database: str) -> None:
    directory = os.path.dirname(os.path.abspath(database))
    if not os.path.isdir(directory):
        raise StorageError(
            f"cannot open the SQLite database {database!r}: its directory {directory!r} "
            "does not exist"
        )
    fstype = mount_type(directory)
    if fstype is not None and fstype.lower() in NETWORK_FILESYSTEMS:
        raise StorageError(
            f"the SQLite database {database!r} is on a network filesystem ({fstype}): "
            "SQLite's WAL mode, which several workers need, does not work there and the "
            "database could be corrupted. Put the file on a local disk, or use PostgreSQL "
            "('postgresql://user@host/database') to share a store between machines."
        )


def sqlite_connect_args() -> dict[str, Any]:
    """``sqlite3.connect``'s arguments beside the database."""
    return {"timeout": BUSY_SECONDS, "check_same_thread": False}


def sqlite_pragmas(
    dbapi_connection: Any, where: object, *, in_memory: bool, read_only: bool = False
) -> None:
    """Set up a new sqlite3 connection: WAL, ``synchronous=NORMAL``, the busy timeout and
    foreign keys, and no BEGIN of sqlite3's own (the store begins ``IMMEDIATE``). A
    read-only connection gets the busy timeout alone: it changes nothing in the file."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_SECONDS * 1000)}")
        if read_only:
            return
        mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()
    if str(mode).lower() != "wal" and not in_memory:
        log.warning("SQLite database %s is in journal mode %r, not WAL", where, mode)


#: The tables that make a database genepool's (``genepool_runs`` alone: one written before
#: the schema had a version).
_GENEPOOL_TABLES = frozenset({"genepool_schema_version", "genepool_runs"})
_FIX_FOREIGN = (
    "Fix: point the URL at a genepool database, or at a file that does not exist yet "
    "(gp.run creates it)"
)


def read_only_uri(path: str) -> str:
    """The ``file:`` URI that opens the SQLite file ``path`` read-only."""
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"


def _tables(path: str, shown: str) -> set[str]:
    """The tables of the SQLite file ``path``, read without changing it (no WAL switch, no
    schema); :class:`~genepool.StorageError` if it is not a SQLite database. ``shown``
    names the store in the message."""
    try:
        raw = sqlite3.connect(read_only_uri(path), uri=True, timeout=BUSY_SECONDS)
        try:
            rows = raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            raw.close()
    except sqlite3.DatabaseError as err:
        not_sqlite = getattr(err, "sqlite_errorname", "") == "SQLITE_NOTADB"
        if not_sqlite or "not a database" in str(err):  # (the name: Python 3.11 and later)
            raise StorageError(
                f"{shown}: the file {path!r} is not a SQLite database ({err}); nothing was "
                f"written to it. {_FIX_FOREIGN}."
            ) from err
        raise StorageError(f"{shown}: cannot read the SQLite database {path!r}: {err}") from err
    return {str(name) for (name,) in rows}


def _check_not_foreign(tables: set[str], path: str, shown: str) -> None:
    """Refuse a SQLite database that holds tables and none of genepool's: another
    application's, which genepool must not add tables to (nor switch to WAL)."""
    if tables and not tables & _GENEPOOL_TABLES:
        names = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StorageError(
            f"{shown}: the SQLite database {path!r} is not a genepool database: it holds "
            f"other tables ({names}) and no genepool schema. Nothing was written to it. "
            f"{_FIX_FOREIGN}."
        )


class WriterQueue:
    """Where this machine's writers of one SQLite file wait their turn: an advisory lock
    (``flock``) on a file beside the database, taken before ``BEGIN IMMEDIATE``.

    SQLite's own busy handler sleeps a millisecond or more at each try, while a write here
    takes a fraction of that: two workers that meet at the lock would each lose whole
    milliseconds. This lock is polled every few tens of microseconds instead. It only
    orders writers: SQLite's lock still guards the data, and a writer that waits longer
    than the busy timeout goes on to ``BEGIN IMMEDIATE`` (and SQLite's timeout) anyway, so
    a stopped process holding it delays the others no longer than SQLite's lock would.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path if path is not None and _fcntl is not None else None
        self._fd: int | None = None

    def _open(self) -> int | None:
        if self._fd is None and self.path is not None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError:  # a read-only directory, say: SQLite's lock alone then
                log.debug("no writer queue at %s", self.path, exc_info=True)
                self.path = None
        return self._fd

    @contextmanager
    def turn(self) -> Iterator[None]:
        fd = self._open()
        held = False
        if fd is not None and _fcntl is not None:
            deadline = time.monotonic() + BUSY_SECONDS
            pause = 20e-6
            while True:
                try:
                    _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
                    held = True
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(pause)
                    pause = min(pause * 2, 0.0005)
        try:
            yield
        finally:
            if held and fd is not None and _fcntl is not None:
                _fcntl.flock(fd, _fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the file (in a forked child too: the lock is its parent's, and stays)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def check_file(database: str, *, read_only: bool, shown: str) -> None:
    """Check the SQLite file ``database`` before the first connection to it (which would
    switch it to WAL): refuse one on a network filesystem, one that is not genepool's,
    and, to read, one that does not exist. ``shown`` names the store in the messages.

    Raises:
        StorageError: The file cannot be opened as asked.
    """
    if read_only and not os.path.isfile(database):
        raise StorageError(
            f"{shown}: there is no SQLite database {database!r} to read (nothing was "
            "created). Fix: check the path in the URL; a run (gp.run) creates the file."
        )
    check_local_filesystem(database)
    if os.path.isfile(database) and os.path.getsize(database) > 0:
        _check_not_foreign(_tables(database, shown), database, shown)
