"""A durable store in a SQL database through SQLAlchemy Core: SQLite or PostgreSQL.

SQLite (a file) is the embedded default: every process of one machine opens the same file.
PostgreSQL serves workers on several machines. Both keep the contract of
:class:`~genepool.store.Store`, and behave as :class:`~genepool.store.MemoryStore` does.

How the two databases are used:

* **SQLite** runs in WAL mode (readers never wait for the writer) with ``synchronous=NORMAL``
  and a busy timeout, and every write transaction begins with ``BEGIN IMMEDIATE``: writers
  queue for the database's one write lock instead of failing half-way. Since writes are
  serialized anyway, each one bumps the run's version and the store decides claims and
  fencing from its cached snapshot, brought up to date inside the transaction. WAL does not
  work on a network filesystem: such a path is refused (use PostgreSQL there).
* **PostgreSQL** claims with ``SELECT ... FOR UPDATE SKIP LOCKED`` and a compare-and-set on
  the member's row, so that concurrent workers neither take the same member nor wait for
  each other; commits and renewals lock the member's row. Writes that change a member's
  view (or pin a checkpoint) also lock the run's row to bump its version: they commit in
  version order, which is what lets every process refresh its snapshot incrementally.

**Reading never writes.** A store opened ``read_only`` (``Result.open``, ``load_best``,
``genepool status``...) opens a SQLite file ``mode=ro`` and PostgreSQL in read-only
transactions: it creates no file, schema or table, and leaves the journal mode as it is.
**A database that is not genepool's** (a SQLite file holding other tables and no genepool
schema, or no SQLite file at all) is refused, for writing too, before anything is written
to it; genepool's tables all start with ``genepool_``.

Lease times come from the database's clock (``clock_timestamp()`` on PostgreSQL, the
machine's clock for SQLite, which lives on that machine) unless a ``clock`` is injected.

**The snapshot cache.** Each member row carries the run version of its last write. A
process keeps the run's members parsed in memory and, on :meth:`SQLStore.population`,
reads only the rows newer than its cache: a serial run re-reads nothing, and a run of many
workers re-parses only what the others changed.

**Statements** are SQLAlchemy Core constructs (in :mod:`genepool.store._sqlschema`, with
the schema), built on first use. On SQLite, each is compiled once by SQLAlchemy's dialect
and run on the sqlite3 connection itself: SQLAlchemy's per-call work (15-20 microseconds a
statement) would otherwise cost more than SQLite's own. A SQLite store handed to another
process (a worker) travels with the statements a worker runs compiled, and opens its own
sqlite3 connection: the worker never imports SQLAlchemy. On PostgreSQL, statements run
through SQLAlchemy, where the network dominates.

**Writers queue** on an advisory lock beside a SQLite file (``<file>.genepool-lock``),
polled every few tens of microseconds, before ``BEGIN IMMEDIATE``: SQLite's busy handler
would sleep a millisecond or more at each try (see :class:`_WriterQueue`).

**Encoding.** Members, configs, metrics and event data are stored as JSON text that
round-trips exactly: floats (``repr`` precision, NaN and infinities included), ints, bools,
``None``, nested mappings and lists, and tuples (tagged ``{"$t": [...]}``). NumPy scalars
and arrays are stored as the equivalent Python values.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import os
import sqlite3
import sys
import threading
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from genepool._errors import (
    CollectedPinError,
    StaleLeaseError,
    StorageError,
    StorageFaultError,
    invalid,
    missing_dependency,
)
from genepool._redact import redact_url
from genepool.clock import Clock
from genepool.member import ACTIVE, CheckpointRef, Event, MemberView, Mode, Population, Report
from genepool.store._base import (
    History,
    Lease,
    Store,
    WorkerInfo,
    counts_crash,
    holder_dead,
    pick_claim,
    revive_ids,
    revived,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = ["SCHEMA_VERSION", "SQLStore"]

log = logging.getLogger("genepool.store")

try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows: SQLite's busy handler alone
    _fcntl = None  # type: ignore[assignment]

#: The version of the database layout this genepool writes. An older database is upgraded
#: when opened; a newer one is refused.
SCHEMA_VERSION = 2

_BUSY_SECONDS = 30.0
_CHUNK = 500  # ids per IN (...) list
_CLAIM_ATTEMPTS = 100

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

# -- statements --------------------------------------------------------------------------


class _Q:
    """A statement of :mod:`genepool.store._sqlschema`, by name. The Core statement is
    built on first use, and on SQLite its compiled SQL is what runs: a process handed the
    compiled SQL by its driver (see :meth:`SQLStore.__reduce__`) never imports SQLAlchemy.
    """

    __slots__ = ("dml", "name")

    def __init__(self, name: str, *, dml: bool = False) -> None:
        self.name = name
        self.dml = dml  # an INSERT or UPDATE: its SQL depends on the parameters given

    @property
    def core(self) -> Any:
        from genepool.store import _sqlschema

        return _sqlschema.statement(self.name)

    def __repr__(self) -> str:
        return f"_Q({self.name!r})"


_S_IDENTITY = _Q("_S_IDENTITY")
_S_RUN = _Q("_S_RUN")
_S_RUN_NAMES = _Q("_S_RUN_NAMES")
_S_ROWS_ALL = _Q("_S_ROWS_ALL")
_S_ROWS_NEW = _Q("_S_ROWS_NEW")
_S_VERSION = _Q("_S_VERSION")
_U_BUMP = _Q("_U_BUMP", dml=True)
_U_BUMP_RETURNING = _Q("_U_BUMP_RETURNING", dml=True)
_S_LOCK_RUN = _Q("_S_LOCK_RUN")
_U_MEMBER = _Q("_U_MEMBER", dml=True)
_I_MEMBERS = _Q("_I_MEMBERS", dml=True)
_I_RUN = _Q("_I_RUN", dml=True)
_I_REPORTS = _Q("_I_REPORTS", dml=True)
_I_EVENTS = _Q("_I_EVENTS", dml=True)
_I_PIN = _Q("_I_PIN", dml=True)
_D_PIN = _Q("_D_PIN")
_S_COLLECTED = _Q("_S_COLLECTED")
_S_USED = _Q("_S_USED")
_S_USED_ONE = _Q("_S_USED_ONE")
_S_LEASE = _Q("_S_LEASE")
_S_REPORTS = _Q("_S_REPORTS")
_S_EVENTS = _Q("_S_EVENTS")
_S_CLAIM_ROWS = _Q("_S_CLAIM_ROWS")
_S_HELD = _Q("_S_HELD")
_S_CLAIM_LOCK = _Q("_S_CLAIM_LOCK")
_S_COMMIT_LOCK = _Q("_S_COMMIT_LOCK")
_U_RENEW_DB_CLOCK = _Q("_U_RENEW_DB_CLOCK", dml=True)
_U_RENEW_GIVEN = _Q("_U_RENEW_GIVEN", dml=True)
_I_COLLECTED_SQLITE = _Q("_I_COLLECTED_SQLITE", dml=True)
_I_COLLECTED_POSTGRESQL = _Q("_I_COLLECTED_POSTGRESQL", dml=True)

#: What a SQLite worker runs, with the names of the parameters it gives (an INSERT's or
#: UPDATE's SQL depends on them): :meth:`SQLStore.__reduce__` hands these over compiled.
#: Anything else is compiled where it is first used (importing SQLAlchemy there).
_MEMBER_COLUMNS = ("view", "status", "ready_count", "step", "pending", "checkpoint")
_WHERE_MEMBER = ("b_run", "b_id")
_WORKER_SQLITE: tuple[tuple[_Q, tuple[str, ...]], ...] = (
    (_S_RUN, ()),
    (_S_ROWS_ALL, ()),
    (_S_ROWS_NEW, ()),
    (_S_VERSION, ()),
    (_U_BUMP, ("r",)),
    (_U_BUMP_RETURNING, ("r",)),
    (_D_PIN, ()),
    (_S_COLLECTED, ()),
    (_S_USED_ONE, ()),
    (_S_REPORTS, ()),
    (_S_EVENTS, ()),
    (_I_PIN, ("run_id", "member", "checkpoint")),
    (_I_REPORTS, ("run_id", "member", "step", "time", "score", "metrics")),
    (_I_EVENTS, ("run_id", "kind", "member", "step", "data", "time")),
    (_I_COLLECTED_SQLITE, ("run_id", "checkpoint")),
    # claims (a lease, and a crash counted), renewals, commits (a view, a release, both)
    (_U_MEMBER, ("token", "expires", "holder", "version", *_WHERE_MEMBER)),
    (_U_MEMBER, ("token", "expires", "holder", "version", *_MEMBER_COLUMNS, *_WHERE_MEMBER)),
    (_U_MEMBER, ("expires", "version", *_WHERE_MEMBER)),
    (_U_MEMBER, (*_MEMBER_COLUMNS, "version", *_WHERE_MEMBER)),
    (_U_MEMBER, (*_MEMBER_COLUMNS, "holder", "expires", "version", *_WHERE_MEMBER)),
    (_U_MEMBER, ("holder", "expires", "version", *_WHERE_MEMBER)),
)


# -- JSON that round-trips exactly -------------------------------------------------------

_TUPLE, _DICT = "$t", "$d"
_TAGS = (_TUPLE, _DICT)
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if _TUPLE in obj:
            return tuple(obj[_TUPLE])
        if _DICT in obj:
            return dict(obj[_DICT])
    return obj


_loads = json.JSONDecoder(object_hook=_hook).decode


def _enc(x: Any) -> Any:
    """``x`` as plain JSON values; tuples and mappings that JSON would not keep are tagged."""
    t = type(x)
    if t is float or t is int or t is str or t is bool or x is None:
        return x
    if t is list:
        return [_enc(v) for v in x]
    if t is tuple:
        return {_TUPLE: [_enc(v) for v in x]}
    if isinstance(x, Mapping):
        return _enc_map(x)
    if isinstance(x, tuple):
        return {_TUPLE: [_enc(v) for v in x]}
    if isinstance(x, list):
        return [_enc(v) for v in x]
    if isinstance(x, str):
        return str(x)
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, numbers.Real):
        return float(x)
    tolist = getattr(x, "tolist", None)  # NumPy arrays and scalars
    if callable(tolist):
        return _enc(tolist())
    raise StorageError(
        f"a value of type {t.__name__} ({x!r}) cannot be stored: use numbers, strings, "
        "booleans, None, lists, tuples and mappings"
    )


def _enc_map(m: Mapping[Any, Any]) -> Any:
    if all(type(k) is str for k in m) and not (len(m) == 1 and next(iter(m)) in _TAGS):
        return {k: _enc(v) for k, v in m.items()}
    return {_DICT: [[_enc(k), _enc(v)] for k, v in m.items()]}


def _view_json(m: MemberView) -> str:
    ck = m.checkpoint
    return _dumps(
        {
            "id": _enc(m.id),
            "hparams": _enc_map(m.hparams),
            "step": _enc(m.step),
            "generation": _enc(m.generation),
            "parent": _enc(m.parent),
            "status": m.status,
            "checkpoint": None if ck is None else _ref_json(ck),
            "score": _enc(m.score),
            "recent": [_enc(v) for v in m.recent],
            "failures": _enc(m.failures),
            "ready_count": _enc(m.ready_count),
            "stop_reason": m.stop_reason,
            "pending": bool(m.pending),
            "crashes": _enc(m.crashes),
            "ready_counter": _enc(m.ready_counter),
            **({"previous": [_ref_json(p) for p in m.previous]} if m.previous else {}),
            **({"curve": [[_enc(c), _enc(v)] for c, v in m.curve]} if m.curve else {}),
        }
    )


def _ref_json(ck: CheckpointRef) -> dict[str, Any]:
    return {
        "id": ck.id,
        "member": _enc(ck.member),
        "step": _enc(ck.step),
        "counter": _enc(ck.counter),
        "score": _enc(ck.score),
        "hparams": _enc_map(ck.hparams),
    }


def _ref_from_json(ck: Any) -> CheckpointRef:
    return CheckpointRef(
        ck["id"], ck["member"], ck["step"], ck["counter"], ck["score"], ck["hparams"]
    )


class _Corrupt(Exception):
    """A row whose stored text is not what genepool writes (bad JSON, or values of the
    wrong type): the store turns it into a :class:`~genepool.StorageError` that names the
    database, the table and the row."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.table: str | None = None
        self.row: str | None = None

    def at(self, table: str, row: str) -> _Corrupt:
        """This error, saying where the row is (once: the innermost caller knows best)."""
        if self.table is None:
            self.table, self.row = table, row
        return self


def _is_num(x: object) -> bool:
    return type(x) is float or type(x) is int


def _is_int(x: object) -> bool:
    return type(x) is int


def _json_object(text: object, what: str) -> dict[str, Any]:
    """The JSON object ``text`` holds; :class:`_Corrupt` if it holds anything else."""
    if not isinstance(text, str):
        raise _Corrupt(f"its {what} is {type(text).__name__}, not JSON text")
    try:
        d = _loads(text)
    except ValueError as err:
        raise _Corrupt(f"its {what} is not valid JSON ({err})") from None
    if type(d) is not dict:
        raise _Corrupt(f"its {what} is {type(d).__name__} JSON, not an object")
    return d


def _view_from_json(text: str) -> MemberView:
    """The member a row's ``view`` holds; :class:`_Corrupt` if it is not one."""
    d = _json_object(text, "view")
    try:
        ck = d.get("checkpoint")
        view = MemberView(
            id=d["id"],
            hparams=d["hparams"],
            step=d.get("step", 0),
            generation=d.get("generation", 0),
            parent=d.get("parent"),
            status=d.get("status", ACTIVE),
            checkpoint=None if ck is None else _ref_from_json(ck),
            score=d.get("score"),
            recent=tuple(d.get("recent", ())),
            failures=d.get("failures", 0),
            ready_count=d.get("ready_count", 0),
            stop_reason=d.get("stop_reason"),
            pending=d.get("pending", False),
            crashes=d.get("crashes", 0),
            ready_counter=d.get("ready_counter", 0.0),
            previous=tuple(_ref_from_json(p) for p in d.get("previous", ())),
            curve=tuple((c, v) for c, v in d.get("curve", ())),
        )
    except KeyError as err:
        raise _Corrupt(f"its view lacks {err}") from None
    except (TypeError, ValueError, AttributeError) as err:
        raise _Corrupt(f"its view holds a value of the wrong type ({err})") from None
    wrong = _wrong_in_view(view)
    if wrong is not None:
        raise _Corrupt(f"its view's {wrong}")
    return view


def _wrong_in_view(v: MemberView) -> str | None:
    """What in a decoded member has the wrong type, or ``None`` (checked field by field:
    a view is decoded whenever another process changed its member)."""
    if not _is_int(v.id):
        return f"id is {v.id!r}"
    if type(v.hparams) is not dict:
        return f"hparams is {v.hparams!r}"
    for name in ("step", "generation", "failures", "ready_count", "crashes"):
        if not _is_int(getattr(v, name)):
            return f"{name} is {getattr(v, name)!r}"
    if v.parent is not None and not _is_int(v.parent):
        return f"parent is {v.parent!r}"
    if type(v.status) is not str:
        return f"status is {v.status!r}"
    if v.score is not None and not _is_num(v.score):
        return f"score is {v.score!r}"
    if not all(_is_num(x) for x in v.recent):
        return f"recent is {list(v.recent)!r}"
    if v.stop_reason is not None and type(v.stop_reason) is not str:
        return f"stop_reason is {v.stop_reason!r}"
    if type(v.pending) is not bool:
        return f"pending is {v.pending!r}"
    if not _is_num(v.ready_counter):
        return f"ready_counter is {v.ready_counter!r}"
    if not all(_is_num(c) and _is_num(x) for c, x in v.curve):
        return f"curve is {list(v.curve)!r}"
    ck = v.checkpoint
    if ck is not None and not _good_ref(ck):
        return f"checkpoint is {ck!r}"
    for p in v.previous:
        if not _good_ref(p):
            return f"previous holds {p!r}"
    return None


def _good_ref(ck: CheckpointRef) -> bool:
    return (
        type(ck.id) is str
        and _is_int(ck.member)
        and _is_int(ck.step)
        and _is_num(ck.counter)
        and (ck.score is None or _is_num(ck.score))
        and type(ck.hparams) is dict
    )


def _row_params(m: MemberView, text: str) -> dict[str, Any]:
    """The member row's columns for a view (its JSON, and the columns claims read)."""
    return {
        "view": text,
        "status": m.status,
        "ready_count": int(m.ready_count),
        "step": int(m.step),
        "pending": bool(m.pending),
        "checkpoint": None if m.checkpoint is None else m.checkpoint.id,
    }


def _holder_json(w: WorkerInfo) -> str:
    return _dumps(
        [w.name, w.host, w.pid, _enc(w.started), w.proc_start, w.machine]
        + ([] if w.driver_pid is None else [w.driver_pid, w.driver_start])
    )


def _holder_from_json(text: str) -> WorkerInfo:
    """The lease holder a row's ``holder`` holds; :class:`_Corrupt` if it is not one.

    A holder written by a genepool older than ``WorkerInfo.machine`` has five fields: it
    reads back with the machine unknown (``""``), so its lease runs out rather than being
    taken at once (its process might be on another machine with the same host name). One
    that names the run's driver has eight, the driver's pid and start time last; one with
    six names none (its death counts a crash, as it always did)."""
    try:
        name, host, pid, started, proc_start, *rest = _loads(text)
        if len(rest) not in (0, 1, 3):
            raise ValueError(f"{5 + len(rest)} fields, not 5, 6 or 8")
        machine: Any = rest[0] if rest else ""
        driver_pid, driver_start = rest[1:] if len(rest) == 3 else (None, None)
    except (ValueError, TypeError) as err:
        raise _Corrupt(f"its holder is not a lease holder's JSON ({err})") from None
    if not (
        type(name) is str
        and type(host) is str
        and _is_int(pid)
        and _is_num(started)
        and (proc_start is None or _is_int(proc_start))
        and type(machine) is str
        and (driver_pid is None or _is_int(driver_pid))
        and (driver_start is None or _is_int(driver_start))
    ):
        raise _Corrupt(f"its holder holds values of the wrong type ({text[:200]!r})")
    return WorkerInfo(
        name=name,
        host=host,
        pid=pid,
        started=started,
        proc_start=proc_start,
        machine=machine,
        driver_pid=driver_pid,
        driver_start=driver_start,
    )


#: How far this machine's clock may lag the database's (PostgreSQL), in seconds: a lease is
#: taken as held that long after it ran out by this clock (:meth:`SQLStore.held`).
CLOCK_MARGIN_SECONDS = 60.0


def _held(holder: str | None, expires: float | None, now: float) -> bool:
    """Whether a lease (its holder's JSON and expiry) still holds its member at ``now``."""
    if holder is None or expires is None or expires <= now:
        return False
    return not holder_dead(_holder_from_json(holder))


def _stale(lease: Lease, token: int | None, holder: str | None) -> StaleLeaseError:
    current = token if (token is not None and holder is not None) else "nobody"
    return StaleLeaseError(
        f"member {lease.member}: lease token {lease.token} is no longer current "
        f"(held now: {current}); this worker must stop writing for it"
    )


# -- the network-filesystem check --------------------------------------------------------


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


def _mount_type(path: str, mounts: str = "/proc/mounts") -> str | None:
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


def _check_local_filesystem(database: str) -> None:
    directory = os.path.dirname(os.path.abspath(database))
    if not os.path.isdir(directory):
        raise StorageError(
            f"cannot open the SQLite database {database!r}: its directory {directory!r} "
            "does not exist"
        )
    fstype = _mount_type(directory)
    if fstype is not None and fstype.lower() in NETWORK_FILESYSTEMS:
        raise StorageError(
            f"the SQLite database {database!r} is on a network filesystem ({fstype}): "
            "SQLite's WAL mode, which several workers need, does not work there and the "
            "database could be corrupted. Put the file on a local disk, or use PostgreSQL "
            "('postgresql://user@host/database') to share a store between machines."
        )


# -- URLs --------------------------------------------------------------------------------


URL_MUST = "a 'sqlite:///path' or 'postgresql://user@host/database' URL"


def _sa_url(url: str, owner: str = "SQLStore", name: str = "url", must: str = URL_MUST) -> Any:
    """The SQLAlchemy URL for a user's URL (see :func:`genepool.store._sqlschema.sa_url`)."""
    from genepool.store import _sqlschema

    return _sqlschema.sa_url(url, owner, name, must)


def _db_errors() -> tuple[type[BaseException], ...]:
    """What the database raises: sqlite3's errors, and SQLAlchemy's once it is loaded (a
    SQLite worker handed its SQL compiled never loads it)."""
    exc = sys.modules.get("sqlalchemy.exc")
    if exc is None:
        return (sqlite3.Error,)
    return (sqlite3.Error, exc.SQLAlchemyError)


#: What a database says when the URL itself is wrong (not a passing fault).
_REFUSALS = ("does not exist", "authentication", "password", "permission denied for")


def _refused(text: str) -> bool:
    """Whether a database error means the URL or its rights are wrong: to fix, not to wait
    out (see :class:`~genepool.StorageFaultError`)."""
    lower = text.lower()
    return any(word in lower for word in _REFUSALS)


def _database_error(what: str, err: BaseException) -> StorageError:
    """The error for the database's ``err`` while ``what``: a
    :class:`~genepool.StorageFaultError` (wait it out) unless the URL is wrong."""
    text = redact_url(str(err))
    said = f"{what}: {text}. {_fix_for(text)}"
    return StorageError(said) if _refused(text) else StorageFaultError(said)


def _fix_for(text: str) -> str:
    """What to do about a database error, by its text: the storage failed, not a member,
    and a run stops on it with its members active."""
    lower = text.lower()
    if _refused(text):
        return "Fix: check the URL: its database name, user and password, and their rights."
    if "full" in lower or "no space" in lower or "quota" in lower:
        fix = "free space on the disk that holds the database (or raise its quota)"
    elif "i/o" in lower or "malformed" in lower or "corrupt" in lower:
        fix = "check the disk that holds the database (an I/O error), or restore a backup"
    elif "locked" in lower or "busy" in lower:
        fix = "another process holds the database's lock for too long: find it and end it"
    elif "connect" in lower or "server" in lower or "closed" in lower or "terminat" in lower:
        fix = "check that the database server is running and reachable"
    elif "readonly" in lower or "read-only" in lower or "permission" in lower:
        fix = "give this process the right to write the database and its folder"
    else:
        fix = "remove the cause"
    return f"Fix: {fix}, then run the same call again: a run resumes where it stopped."


def _integrity_errors() -> tuple[type[BaseException], ...]:
    exc = sys.modules.get("sqlalchemy.exc")
    if exc is None:
        return (sqlite3.IntegrityError,)
    return (sqlite3.IntegrityError, exc.IntegrityError)


# -- SQLite connections ------------------------------------------------------------------


def sqlite_connect_args() -> dict[str, Any]:
    """``sqlite3.connect``'s arguments beside the database."""
    return {"timeout": _BUSY_SECONDS, "check_same_thread": False}


def sqlite_pragmas(
    dbapi_connection: Any, where: object, *, in_memory: bool, read_only: bool = False
) -> None:
    """Set up a new sqlite3 connection: WAL, ``synchronous=NORMAL``, the busy timeout and
    foreign keys, and no BEGIN of sqlite3's own (the store begins ``IMMEDIATE``). A
    read-only connection gets the busy timeout alone: it changes nothing in the file."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(_BUSY_SECONDS * 1000)}")
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


def _read_only_uri(path: str) -> str:
    """The ``file:`` URI that opens the SQLite file ``path`` read-only."""
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"


def _sqlite_tables(path: str, shown: str) -> set[str]:
    """The tables of the SQLite file ``path``, read without changing it (no WAL switch, no
    schema); :class:`~genepool.StorageError` if it is not a SQLite database. ``shown``
    names the store in the message."""
    try:
        raw = sqlite3.connect(_read_only_uri(path), uri=True, timeout=_BUSY_SECONDS)
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


def _require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise missing_dependency("psycopg", "postgres", "A PostgreSQL store") from None


# -- transactions: one interface over SQLAlchemy and SQLite's DBAPI connection -----------


class _Tx(ABC):
    """An open transaction that runs the module's Core statements with named parameters."""

    @abstractmethod
    def all(self, stmt: _Q, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """Every row of a query."""

    @abstractmethod
    def run(self, stmt: _Q, params: Mapping[str, Any]) -> int:
        """Execute a statement; the id of the row it inserted (when it inserted one)."""

    @abstractmethod
    def many(self, stmt: _Q, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute a statement once per parameter set (a batch)."""

    @abstractmethod
    def commit(self) -> None:
        """Commit now (the transaction ends)."""

    @abstractmethod
    def rollback(self) -> None:
        """Roll back now (the transaction ends)."""

    @property
    @abstractmethod
    def active(self) -> bool:
        """Whether the transaction is still open."""

    def first(self, stmt: _Q, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """The first row of a query, ``None`` if there is none."""
        rows = self.all(stmt, params)
        return rows[0] if rows else None

    def scalar(self, stmt: _Q, params: Mapping[str, Any]) -> Any:
        """The first column of the first row (``None`` if there is no row)."""
        row = self.first(stmt, params)
        return None if row is None else row[0]


class _AlchemyTx(_Tx):
    """A transaction on a SQLAlchemy connection (PostgreSQL)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def all(self, stmt: _Q, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        return self.conn.execute(stmt.core, dict(params)).all()

    def run(self, stmt: _Q, params: Mapping[str, Any]) -> int:
        core = stmt.core
        result = self.conn.execute(core, dict(params))
        if core.is_insert and result.inserted_primary_key:
            return int(result.inserted_primary_key[0])
        return 0

    def many(self, stmt: _Q, rows: Sequence[Mapping[str, Any]]) -> None:
        self.conn.execute(stmt.core, [dict(r) for r in rows])

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    @property
    def active(self) -> bool:
        return self.conn.in_transaction()


#: A statement compiled for SQLite: its SQL, its parameters' names in order, and the
#: values of those it fixes itself.
Compiled = tuple[str, tuple[str, ...], dict[str, Any]]


class _SQLiteTx(_Tx):
    """A transaction run straight on the sqlite3 connection.

    The statements are the same Core statements, compiled once by SQLAlchemy's SQLite
    dialect; executing them on the DBAPI connection skips SQLAlchemy's per-call work
    (15-20 microseconds a statement, several times SQLite's own).
    """

    def __init__(self, raw: Any, compiled: Callable[[_Q, Mapping[str, Any]], Compiled]):
        self.raw = raw
        self._compiled = compiled

    def _args(self, stmt: _Q, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        sql, order, fixed = self._compiled(stmt, params)
        return sql, [params[k] if k in params else fixed[k] for k in order]

    def all(self, stmt: _Q, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        sql, args = self._args(stmt, params)
        rows: list[Sequence[Any]] = self.raw.execute(sql, args).fetchall()
        return rows

    def run(self, stmt: _Q, params: Mapping[str, Any]) -> int:
        sql, args = self._args(stmt, params)
        return int(self.raw.execute(sql, args).lastrowid or 0)

    def many(self, stmt: _Q, rows: Sequence[Mapping[str, Any]]) -> None:
        sql, order, fixed = self._compiled(stmt, rows[0])
        self.raw.executemany(sql, [[r[k] if k in r else fixed[k] for k in order] for r in rows])

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        self.raw.rollback()  # a no-op when SQLite already ended the transaction

    @property
    def active(self) -> bool:
        return bool(self.raw.in_transaction)


class _WriterQueue:
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
            deadline = time.monotonic() + _BUSY_SECONDS
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


# -- the per-run cache -------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Row:
    """One member as this process last read it (with its lease, on SQLite)."""

    version: int
    view: MemberView
    text: str
    token: int
    expires: float | None
    holder: WorkerInfo | None
    holder_text: str | None


@dataclass(eq=False, slots=True)
class _RunState:
    """What this process knows of a run: its config and its members as of ``version``."""

    id: int
    config: dict[str, Any]
    mode: Mode
    metric: str | None
    version: int = 0
    rows: list[_Row] = field(default_factory=list)
    snapshot: Population | None = None
    name: str = ""

    def apply(self, rows: Sequence[Sequence[Any]]) -> None:
        """Bring the cache up to date with rows read from the database (in any order)."""
        changed: list[MemberView] = []
        try:
            for i, version, text, token, expires, holder in rows:
                view = self._apply_row(i, version, text, token, expires, holder)
                if view is not None:
                    changed.append(view)
        finally:  # the snapshot takes every view cached, even when a later row is corrupt
            if changed and self.snapshot is not None:
                self.snapshot = self.snapshot.with_members(changed)

    def _apply_row(
        self, i: int, version: int, text: str, token: int, expires: Any, holder: str | None
    ) -> MemberView | None:
        """Cache one row read from the database; its new view, if the view changed."""
        cached = self.rows
        if i >= len(cached):
            raise StorageError(f"member {i} is not one of the run's {len(cached)} members")
        r = cached[i]
        if version <= r.version:
            return None
        new_view, new_holder = text != r.text, holder != r.holder_text
        try:  # both read before the row changes: a corrupt row leaves it as it was
            view = _view_from_json(text) if new_view else r.view
            worker = r.holder
            if new_holder:
                worker = None if holder is None else _holder_from_json(holder)
        except _Corrupt as err:
            self.version = 0  # read every newer row again next time: this one too
            raise err.at(_MEMBERS_TABLE, _member_row(self.name, self.id, i)) from None
        r.version = version
        if new_view:
            r.view, r.text = view, text
        r.token, r.expires = token, expires
        if new_holder:
            r.holder, r.holder_text = worker, holder
        if version > self.version:
            self.version = version
        return view if new_view else None

    def own(self, member: int, version: int) -> _Row | None:
        """The cached row to update with this process's own write at ``version``: ``None``
        when the cache is behind (a refresh will read the write) or already has it."""
        r = self.rows[member]
        if self.version < version - 1 or r.version >= version:
            return None
        r.version = version
        if version > self.version:
            self.version = version
        return r

    def advance(self, version: int) -> None:
        """Note a write at ``version`` that changed no member row."""
        if version - 1 <= self.version < version:
            self.version = version

    def replace_view(self, row: _Row, view: MemberView, text: str) -> None:
        """Cache ``view`` (as ``text``) as the member of ``row``: the snapshot, if made,
        becomes a new one with it (:meth:`Population.with_members`)."""
        row.view, row.text = view, text
        if self.snapshot is not None:
            self.snapshot = self.snapshot.with_members([view])

    def population(self) -> Population:
        """The snapshot of the cached members (made once, then updated per change)."""
        pop = self.snapshot
        if pop is None:
            pop = self.snapshot = Population(tuple([r.view for r in self.rows]), self.mode)
        return pop


def _load_rows(rows: Sequence[Sequence[Any]], run: str, run_id: int) -> tuple[list[_Row], int]:
    out: list[_Row] = []
    top = 0
    for expected, (i, version, text, token, expires, holder) in enumerate(rows):
        if i != expected:
            raise StorageError(f"the run's member rows are not 0 .. n - 1 (found {i})")
        try:
            holder_info = None if holder is None else _holder_from_json(holder)
            view = _view_from_json(text)
        except _Corrupt as err:
            raise err.at(_MEMBERS_TABLE, _member_row(run, run_id, i)) from None
        out.append(_Row(version, view, text, token, expires, holder_info, holder))
        top = max(top, version)
    return out, top


_RUNS_TABLE = "genepool_runs"
_MEMBERS_TABLE = "genepool_members"
_REPORTS_TABLE = "genepool_reports"
_EVENTS_TABLE = "genepool_events"


def _member_row(run: str, run_id: int, member: int) -> str:
    return f"run_id={run_id}, id={member} (run {run!r}, member {member})"


def _metric(config: Mapping[str, Any]) -> str | None:
    metric = config.get("metric")
    return metric if isinstance(metric, str) else None


_NO_HPARAMS: Mapping[str, Any] = MappingProxyType({})
_RETRY = object()
_SQLITE_BEGIN = {"write": "BEGIN IMMEDIATE", "read": "BEGIN", "auto": None}
_abandoned: list[object] = []  # connections inherited through fork: a child never closes them

TxKind = Literal["write", "read", "auto"]


# -- the store ---------------------------------------------------------------------------


class SQLStore(Store):
    """The durable store: a SQLite file, or a PostgreSQL database shared by machines.

    Several runs share one database. The object pickles as its URL: a child process opens
    its own connection (connections are never shared between processes).

    Args:
        url: ``"sqlite:///runs.db"`` (a relative path), ``"sqlite:////abs/path/runs.db"``,
            or ``"postgresql://user:password@host:5432/database"`` (needs
            ``pip install 'genepool[postgres]'``, for psycopg 3). A PostgreSQL URL may set
            the schema with ``?options=-csearch_path%3Dmyschema``.
        clock: Times leases; by default the database's clock (PostgreSQL) or the machine's
            (SQLite). Tests inject a :class:`~genepool.clock.ManualClock`.
        echo: Log every SQL statement (as SQLAlchemy's ``echo`` does).
        read_only: Only read (what :meth:`genepool.Result.open` and the ``genepool``
            commands that read do): a SQLite file that does not exist is an error, not
            created; nothing is written to the database (no schema created or upgraded,
            no switch to WAL, no lock file beside it), and every write raises
            :class:`~genepool.StorageError`. An older schema is read as it is.

    A SQLite file that is not genepool's (it holds other tables and no genepool schema,
    or is not a SQLite database) is refused before anything is written to it. A row
    that genepool did not write (JSON that does not parse, a value of the wrong type) is
    a :class:`~genepool.StorageError` naming the table and the row.

    Raises:
        StorageError: The database cannot be opened, is not a genepool database (a
            SQLite file of another application, or no SQLite file at all), or its schema
            is newer than this genepool; a SQLite file is on a network filesystem; or,
            read-only, the file does not exist or holds no genepool schema.
        MissingDependencyError: A PostgreSQL URL without psycopg installed.
    """

    _engine: Engine | None
    _conn: Connection | None
    _raw: sqlite3.Connection | None  # SQLite without SQLAlchemy
    _connect_args: tuple[tuple[Any, ...], dict[str, Any]]  # sqlite3.connect's

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        echo: bool = False,
        read_only: bool = False,
    ) -> None:
        if not isinstance(url, str):
            raise invalid("SQLStore", "url", "a database URL string", type(url).__name__)
        if type(read_only) is not bool:
            raise invalid("SQLStore", "read_only", "True or False", repr(read_only))
        from genepool.store import _sqlschema as schema

        sa_url = schema.sa_url(url)
        self._start(url, clock, echo, sqlite=sa_url.get_backend_name() == "sqlite")
        self._read_only = read_only
        if self._sqlite:
            database = sa_url.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                sa_url = self._check_sqlite_file(database, sa_url)
            self._engine = schema.sqlite_engine(sa_url, echo, read_only=read_only)
        else:
            if sa_url.drivername == "postgresql+psycopg":
                _require_psycopg()
            self._engine = schema.postgresql_engine(sa_url, echo, read_only=read_only)
            self._i_collected = _I_COLLECTED_POSTGRESQL
        self._returning = bool(self._engine.dialect.update_returning)
        try:
            self._open_schema()
        except BaseException:
            self.close()
            raise
        if self._sqlite:
            self._connect_args = schema.sqlite_connect(self._engine)
        log.debug("opened %r", self)

    def _start(self, url: str, clock: Clock | None, echo: bool, *, sqlite: bool) -> None:
        """The state every store starts with, before it connects."""
        self.url = url
        self._clock = clock
        self._echo = echo
        self._sqlite = sqlite
        self._read_only = False
        self._identity: str | None = None
        self.fuses_commit_and_claim = sqlite  # one write under SQLite's write lock
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._writers = _WriterQueue(None)
        self._engine = None
        self._conn = None
        self._raw = None
        self._connect_args = ((), {})
        self._returning = False
        self._runs: dict[str, _RunState] = {}
        self._compiled: dict[Any, Compiled] = {}
        self._i_collected = _I_COLLECTED_SQLITE

    @classmethod
    def _attach_sqlite(
        cls,
        url: str,
        clock: Clock | None,
        echo: bool,
        connect: tuple[tuple[tuple[Any, ...], dict[str, Any]], str | None],
        returning: bool,
        compiled: Mapping[Any, Compiled],
    ) -> SQLStore:
        """The store as a process handed it by another opens it (see :meth:`__reduce__`):
        a SQLite file the other process opened (and whose schema it checked), with the
        statements compiled, on a sqlite3 connection of its own, without SQLAlchemy.
        ``connect``: ``sqlite3.connect``'s arguments, and the writer queue's file."""
        self = cls.__new__(cls)
        self._start(url, clock, echo, sqlite=True)
        self._connect_args, queue = connect
        self._writers = _WriterQueue(queue)
        self._returning = returning
        self._compiled.update(compiled)
        return self

    # -- opening -------------------------------------------------------------------------
    def _check_sqlite_file(self, database: str, sa_url: Any) -> Any:
        """Before the first connection (which would switch the file to WAL): refuse a file
        that is not genepool's, and for reading one that does not exist. Returns the URL
        to connect with (read-only: the file opened ``mode=ro``, and no writer queue)."""
        if self._read_only and not os.path.isfile(database):
            raise StorageError(
                f"{self!r}: there is no SQLite database {database!r} to read (nothing was "
                "created). Fix: check the path in the URL; a run (gp.run) creates the file."
            )
        _check_local_filesystem(database)
        if os.path.isfile(database) and os.path.getsize(database) > 0:
            _check_not_foreign(_sqlite_tables(database, repr(self)), database, repr(self))
        if self._read_only:
            return sa_url.set(
                database=_read_only_uri(database).split("?", 1)[0],
                query={"mode": "ro", "uri": "true"},
            )
        self._writers = _WriterQueue(os.path.abspath(database) + ".genepool-lock")
        return sa_url

    def _open_schema(self) -> None:
        """Create the tables in an empty database, upgrade an older one, refuse a newer.
        Read-only: only check that the database holds a schema this genepool reads."""
        from genepool.store import _sqlschema as schema

        try:
            if self._read_only:
                with self._lock, self._require_engine().connect() as conn:
                    schema.check_readable(conn, repr(self))
                    self._identity = schema.stored_identity(conn)
                    conn.rollback()
            elif self._sqlite:
                with self._lock:
                    conn = self._connection()
                    with conn.begin():
                        self._identity = schema.setup(conn, repr(self), redact_url(self.url))
            else:
                engine = self._require_engine()
                self._identity = schema.setup_postgresql(engine, repr(self), redact_url(self.url))
        except _db_errors() as err:
            raise _database_error(f"{self!r}: cannot open the database", err) from err

    @property
    def identity(self) -> str:
        """The database's random id, kept in its ``genepool_meta`` table (made when genepool
        first opened it to write)."""
        found = self._identity
        if found is None:
            if not self._read_only:  # a store handed to this process: read it once
                with self._tx("auto") as tx:
                    found = tx.scalar(_S_IDENTITY, {})
            if found is None:  # read-only, and a schema older than version 2
                raise StorageError(
                    f"{self!r}: the database has no identity yet: its genepool schema is "
                    "older than version 2, and was opened only to read. Fix: open it to "
                    "write once (gp.run with storage= this URL), which upgrades it."
                )
            found = self._identity = str(found)
        return found

    # -- plumbing ------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"SQLStore({redact_url(self.url)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        """A SQLite store travels with its statements compiled, so that the process it goes
        to never imports SQLAlchemy (a third of a second of a worker's start); a
        PostgreSQL store travels as its URL."""
        if self._read_only:
            return (_reopen, (self.url, self._clock, self._echo, True))
        if not self._sqlite or (self._engine is None and not self._compiled):
            return (_reopen, (self.url, self._clock, self._echo))
        for stmt, columns in _WORKER_SQLITE:
            self._compile(stmt, dict.fromkeys(columns))
        compiled = dict(self._compiled)
        connect = (self._connect_args, self._writers.path)
        args = (self.url, self._clock, self._echo, connect, self._returning, compiled)
        return (_reopen_sqlite, args)

    def close(self) -> None:
        """Close this process's connections (the store reopens them if it is used again)."""
        with self._lock:
            conn, self._conn = self._conn, None
            raw, self._raw = self._raw, None
            if os.getpid() == self._pid:
                for c in (conn, raw):
                    if c is None:
                        continue
                    try:
                        c.close()
                    except _db_errors():  # pragma: no cover - already broken
                        log.debug("closing the connection raised", exc_info=True)
            if self._engine is not None:
                self._engine.dispose()
            self._writers.close()

    def _after_fork(self) -> None:
        """In a forked child: drop (never close) the parent's connections."""
        for c in (self._conn, self._raw):
            if c is not None:
                _abandoned.append(c)
        self._conn = self._raw = None
        if self._engine is not None:
            self._engine.dispose(close=False)
        self._writers.close()
        self._lock = threading.RLock()
        self._pid = os.getpid()

    def _require_engine(self) -> Engine:
        if self._engine is None:  # pragma: no cover - only SQLite stores go without
            raise StorageError(f"{self!r} has no SQLAlchemy engine")
        return self._engine

    def _connection(self) -> Connection:
        """SQLite: this process's one connection, through SQLAlchemy (the caller holds the
        lock)."""
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._conn = self._require_engine().connect()
        return conn

    def _dbapi(self) -> Any:
        """SQLite: this process's one sqlite3 connection (the caller holds the lock)."""
        if self._engine is not None:
            conn = self._connection()
            raw: Any = conn.connection.dbapi_connection
            if self._echo and not conn.info.get("genepool_traced"):
                raw.set_trace_callback(_echo_sql)  # SQL that bypasses SQLAlchemy
                conn.info["genepool_traced"] = True
            return raw
        if self._raw is None:
            args, kwargs = self._connect_args
            raw = sqlite3.connect(*args, **kwargs)
            sqlite_pragmas(raw, redact_url(self.url), in_memory=False)
            if self._echo:
                raw.set_trace_callback(_echo_sql)
            self._raw = raw
        return self._raw

    def _compile(self, stmt: _Q, params: Mapping[str, Any]) -> Compiled:
        """SQLite: the statement's SQL (for these parameter names, if it is an INSERT or
        UPDATE), compiled once."""
        key = (stmt.name, frozenset(params)) if stmt.dml else stmt.name
        found = self._compiled.get(key)
        if found is None:
            from genepool.store import _sqlschema as schema

            dialect = None if self._engine is None else self._engine.dialect
            columns = tuple(params) if stmt.dml else None
            found = self._compiled[key] = schema.compile_sqlite(stmt.name, columns, dialect)
        return found

    def _now(self) -> float:
        return self._clock.now() if self._clock is not None else time.time()

    @contextmanager
    def _tx(self, kind: TxKind) -> Iterator[_Tx]:
        """A transaction: ``write`` (SQLite: ``BEGIN IMMEDIATE``), ``read`` (one consistent
        snapshot) or ``auto`` (a single read statement). On SQLite the store's lock is held
        throughout (one connection per process). Committed at the end unless the body
        committed or rolled back itself; rolled back on an exception."""
        if os.getpid() != self._pid:
            self._after_fork()
        if kind == "write" and self._read_only:
            raise StorageError(
                f"{self!r} was opened read-only (to read a run: Result.open, load_best, the "
                "genepool commands), and writes nothing. Fix: open it for writing "
                "(SQLStore(url), or gp.run with storage=url)."
            )
        try:
            if self._sqlite:
                with self._lock:
                    raw = self._dbapi()
                    begin = _SQLITE_BEGIN[kind]
                    with self._writers.turn() if kind == "write" else nullcontext():
                        if begin is not None:
                            raw.execute(begin)
                        with self._transaction(_SQLiteTx(raw, self._compile)) as tx:
                            yield tx
            else:
                with self._require_engine().connect() as conn:
                    if kind == "read":
                        conn.execution_options(isolation_level="REPEATABLE READ")
                    conn.begin()
                    with self._transaction(_AlchemyTx(conn)) as tx:
                        yield tx
        except _db_errors() as err:
            raise _database_error(f"{self!r}: the database failed", err) from err
        except _Corrupt as err:
            raise self._corrupt(err) from None

    def _corrupt(self, err: _Corrupt) -> StorageError:
        """The error for a row genepool never wrote: where it is, and what to do."""
        where = f"the row {err.row} of {err.table}" if err.table else "a row"
        return StorageError(
            f"{self!r}: {where} is corrupt: {err.reason}. genepool never writes such a row: "
            "it was changed outside genepool, or the database file is damaged. Fix: restore "
            "the database from a backup, or correct or delete that row with the database's "
            "own client (sqlite3, psql)."
        )

    @staticmethod
    @contextmanager
    def _transaction(tx: _Tx) -> Iterator[_Tx]:
        try:
            yield tx
        except BaseException:
            if tx.active:
                tx.rollback()
            raise
        if tx.active:
            tx.commit()

    def _state(self, tx: _Tx, run: str) -> _RunState:
        """The run's cache, read in full the first time this process meets the run."""
        st = self._runs.get(run)
        if st is not None:
            return st
        found = tx.first(_S_RUN, {"name": run})
        if found is None:
            raise KeyError(f"no run named {run!r} in this store")
        run_id, config_text = found
        try:
            config = _json_object(config_text, "config")
        except _Corrupt as err:
            raise err.at(_RUNS_TABLE, f"id={run_id} (run {run!r})") from None
        rows, version = _load_rows(tx.all(_S_ROWS_ALL, {"r": run_id}), run, run_id)
        mode = config.get("mode", "max")
        st = _RunState(run_id, config, mode, _metric(config), version, rows, name=run)
        with self._lock:
            return self._runs.setdefault(run, st)

    def _bump(self, tx: _Tx, st: _RunState) -> int:
        """Add one to the run's version (which locks its row until the transaction ends)."""
        if self._returning:
            return int(tx.scalar(_U_BUMP_RETURNING, {"r": st.id}))
        tx.run(_U_BUMP, {"r": st.id})
        return int(tx.scalar(_S_VERSION, {"r": st.id}))

    @staticmethod
    def _catch_up(tx: _Tx, st: _RunState, upto: int) -> None:
        """In a write transaction holding the run's lock (every version up to ``upto`` is
        committed and visible): bring the cache up to ``upto``."""
        if st.version < upto:
            st.apply(tx.all(_S_ROWS_NEW, {"r": st.id, "v": st.version}))
            st.version = max(st.version, upto)

    @staticmethod
    def _report_row(st: _RunState, report: Report) -> dict[str, Any]:
        metrics: Mapping[str, Any] = report.metrics
        key, score = st.metric, None
        if key is not None and key in metrics:
            value = metrics[key]
            if type(value) is float and math.isfinite(value):  # kept in its own column only
                score = value
                metrics = {k: v for k, v in metrics.items() if k != key}
            elif isinstance(value, numbers.Real) and not isinstance(value, bool):
                as_float = float(value)  # a copy for queries; the exact value stays in JSON
                score = as_float if math.isfinite(as_float) else None
        return {
            "run_id": st.id,
            "member": int(report.member),
            "step": int(report.step),
            "time": float(report.time),
            "score": score,
            "metrics": _dumps(_enc_map(metrics)),
        }

    @staticmethod
    def _event_row(st: _RunState, event: Event) -> dict[str, Any]:
        return {
            "run_id": st.id,
            "kind": str(event.kind),
            "member": int(event.member),
            "step": int(event.step),
            "data": _dumps(_enc_map(event.data)),
            "time": float(event.time),
        }

    # -- runs ----------------------------------------------------------------------------
    def create_run(
        self, run: str, *, config: Mapping[str, Any], members: Sequence[MemberView]
    ) -> bool:
        rows = sorted(members, key=lambda m: m.id)
        config_json = _enc_map(config)
        config_text = _dumps(config_json)
        digest = hashlib.sha256(
            json.dumps(config_json, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        texts = [_view_json(m) for m in rows]
        with self._tx("write") as tx:
            if tx.first(_S_RUN, {"name": run}) is not None:
                tx.rollback()
                return False
            if [m.id for m in rows] != list(range(len(rows))):
                raise StorageError("member ids must be 0 .. population - 1")
            try:
                run_id = tx.run(
                    _I_RUN,
                    {
                        "name": run,
                        "config": config_text,
                        "config_hash": digest,
                        "created": self._now(),
                        "version": 1,
                    },
                )
                if rows:
                    tx.many(
                        _I_MEMBERS,
                        [
                            {
                                "run_id": run_id,
                                "id": m.id,
                                "version": 1,
                                "token": 0,
                                "expires": None,
                                "holder": None,
                                **_row_params(m, text),
                            }
                            for m, text in zip(rows, texts, strict=True)
                        ],
                    )
            except _integrity_errors():  # another process was first
                tx.rollback()
                return False
            tx.commit()
            decoded = _loads(config_text)
            st = _RunState(
                run_id,
                decoded,
                decoded.get("mode", "max"),
                _metric(decoded),
                1,
                [_Row(1, m, t, 0, None, None, None) for m, t in zip(rows, texts, strict=True)],
                name=run,
            )
            with self._lock:
                self._runs[run] = st
        log.debug("created run %r with %d members in %r", run, len(rows), self)
        return True

    def runs(self) -> list[str]:
        with self._tx("auto") as tx:
            return [row[0] for row in tx.all(_S_RUN_NAMES, {})]

    def run_config(self, run: str) -> Mapping[str, Any]:
        st = self._runs.get(run)
        if st is None:
            with self._tx("auto") as tx:
                st = self._state(tx, run)
        return dict(st.config)

    def population(self, run: str) -> Population:
        with self._tx("auto") as tx:
            st = self._state(tx, run)
            rows = tx.all(_S_ROWS_NEW, {"r": st.id, "v": st.version})
            with self._lock:
                if rows:
                    st.apply(rows)
                return st.population()

    def held(self, run: str) -> frozenset[int]:
        # PostgreSQL times leases by its own clock: a margin for this machine's
        margin = 0.0 if self._sqlite or self._clock is not None else CLOCK_MARGIN_SECONDS
        with self._tx("auto") as tx:
            rows = tx.all(_S_HELD, {"r": self._state(tx, run).id})
        now = self._now() - margin
        return frozenset(int(i) for i, expires, holder in rows if _held(holder, expires, now))

    # -- leases --------------------------------------------------------------------------
    def claim(
        self, run: str, worker: WorkerInfo, *, lease_seconds: float, max_ahead: int | None = None
    ) -> Lease | None:
        if self._sqlite:
            return self._claim_serialized(run, worker, lease_seconds, max_ahead)
        return self._claim_skip_locked(run, worker, lease_seconds, max_ahead)

    def commit_and_claim(
        self,
        lease: Lease,
        worker: WorkerInfo,
        *,
        lease_seconds: float,
        max_ahead: int | None = None,
        member: MemberView | None = None,
        reports: Sequence[Report] = (),
        events: Sequence[Event] = (),
        pin: str | None = None,
    ) -> Lease | None:
        if self._sqlite:
            last = (lease, member, reports, events, pin)
            return self._claim_serialized(lease.run, worker, lease_seconds, max_ahead, last)
        return super().commit_and_claim(
            lease,
            worker,
            lease_seconds=lease_seconds,
            max_ahead=max_ahead,
            member=member,
            reports=reports,
            events=events,
            pin=pin,
        )

    def _claim_serialized(
        self,
        run: str,
        worker: WorkerInfo,
        lease_seconds: float,
        max_ahead: int | None,
        last: tuple[Lease, MemberView | None, Sequence[Report], Sequence[Event], str | None]
        | None = None,
    ) -> Lease | None:
        """SQLite: under the database's write lock, the up-to-date cache decides (after
        ``last``, the caller's previous lease and the round's last write, is committed)."""
        with self._tx("write") as tx:
            st = self._state(tx, run)
            version = self._bump(tx, st)
            self._catch_up(tx, st, version - 1)
            now = self._now()
            rows = st.rows
            members = st.population()
            freed = -1  # the member whose lease ``last`` ended in this write
            cache: Callable[[], None] | None = None
            if last is not None:
                lease, written, reports, events, pin = last
                try:  # checks the lease (and the pin) before it writes anything
                    cache = self._write_commit(
                        tx, st, version, lease, written, reports, events, pin, True
                    )
                except StaleLeaseError:
                    if written is not None or reports or events or pin is not None:
                        raise
                else:  # nothing to write with a lost lease: only claim
                    freed = lease.member
                    if written is not None:  # the claim sees the member as just written
                        members = members.with_members([written])

            def held(member: int) -> bool:
                r = rows[member]
                return (
                    member != freed
                    and r.holder is not None
                    and r.expires is not None
                    and r.expires > now
                    and not holder_dead(r.holder)
                )

            best = pick_claim(members, held, max_ahead)
            if best is None:
                if cache is None:
                    tx.rollback()
                    return None
                tx.commit()
                cache()
                return None
            row = rows[best.id]
            token, expires, holder = row.token + 1, now + lease_seconds, _holder_json(worker)
            params: dict[str, Any] = {
                "token": token,
                "expires": expires,
                "holder": holder,
                "version": version,
            }
            view: MemberView | None = None
            # never released: its holder died or hung (with its driver: no crash)
            if row.holder is not None and best.id != freed and counts_crash(row.holder):
                view = replace(best, crashes=best.crashes + 1)
                text = _view_json(view)
                params.update(_row_params(view, text))
            tx.run(_U_MEMBER, {**params, "b_run": st.id, "b_id": best.id})
            tx.commit()
            if cache is not None:
                cache()
            own = st.own(best.id, version)
            if own is None and best.id == freed and rows[freed].version == version:
                own = rows[freed]  # claimed again the member ``last`` wrote: one row
            if own is not None:
                own.token, own.expires, own.holder, own.holder_text = token, expires, worker, holder
                if view is not None:
                    st.replace_view(own, view, text)
        return Lease(run, best.id, token, worker, expires)

    def _claim_skip_locked(
        self, run: str, worker: WorkerInfo, lease_seconds: float, max_ahead: int | None
    ) -> Lease | None:
        """PostgreSQL: pick from the active rows, then lock the pick ``SKIP LOCKED`` and
        check that it has not changed (compare-and-set): a row another transaction holds
        is in use and passed over; a row that changed starts the claim again."""
        for _attempt in range(_CLAIM_ATTEMPTS):
            with self._tx("write") as tx:
                st = self._state(tx, run)
                outcome = self._try_claim(tx, st, run, worker, lease_seconds, max_ahead)
            if outcome is not _RETRY:
                return outcome  # type: ignore[return-value]
        raise StorageError(
            f"run {run!r}: no claim succeeded in {_CLAIM_ATTEMPTS} attempts (the members "
            "kept changing under it)"
        )

    def _try_claim(
        self,
        tx: _Tx,
        st: _RunState,
        run: str,
        worker: WorkerInfo,
        lease_seconds: float,
        max_ahead: int | None,
    ) -> Lease | object | None:
        rows = tx.all(_S_CLAIM_ROWS, {"r": st.id})
        if not rows:
            return None
        now = self._clock.now() if self._clock is not None else float(rows[0][7])
        seen = {r[0]: r for r in rows}
        views = [
            MemberView(id=i, hparams=_NO_HPARAMS, step=step, ready_count=ready, pending=pending)
            for i, ready, step, pending, *_ in rows
        ]
        skipped: set[int] = set()

        def held(member: int) -> bool:
            r = seen[member]
            try:
                return member in skipped or _held(r[6], r[5], now)
            except _Corrupt as err:
                raise err.at(_MEMBERS_TABLE, _member_row(run, st.id, member)) from None

        while (best := pick_claim(views, held, max_ahead)) is not None:
            where = {"b_run": st.id, "b_id": best.id}
            locked = tx.first(_S_CLAIM_LOCK, where)
            if locked is None:  # another transaction has the row: it is in use
                skipped.add(best.id)
                continue
            if locked[0] != ACTIVE or tuple(locked[1:7]) != tuple(seen[best.id][1:7]):
                return _RETRY  # it changed since it was read
            token, expires = int(locked[4]) + 1, now + lease_seconds
            params: dict[str, Any] = {"token": token, "expires": expires}
            params["holder"] = _holder_json(worker)
            # never released: its holder died or hung (with its driver: no crash)
            try:
                crashed = locked[6] is not None and counts_crash(_holder_from_json(locked[6]))
                old = _view_from_json(locked[7]) if crashed else None
            except _Corrupt as err:
                raise err.at(_MEMBERS_TABLE, _member_row(run, st.id, best.id)) from None
            if old is not None:
                view = replace(old, crashes=old.crashes + 1)
                params.update(_row_params(view, _view_json(view)))
                params["version"] = self._bump(tx, st)
            tx.run(_U_MEMBER, {**params, **where})
            return Lease(run, best.id, token, worker, expires)
        return None

    def renew(self, lease: Lease, *, lease_seconds: float) -> Lease:
        with self._tx("write") as tx:
            st = self._state(tx, lease.run)
            where = {"b_run": st.id, "b_id": lease.member}
            if self._sqlite:
                version = self._bump(tx, st)
                self._catch_up(tx, st, version - 1)
                self._leased_row(st, lease)
                expires = self._now() + lease_seconds
                tx.run(_U_MEMBER, {"expires": expires, "version": version, **where})
                tx.commit()
                own = st.own(lease.member, version)
                if own is not None:
                    own.expires = expires
            else:
                if self._clock is not None:
                    stmt, extra = _U_RENEW_GIVEN, {"exp": self._clock.now() + lease_seconds}
                else:
                    stmt, extra = _U_RENEW_DB_CLOCK, {"secs": float(lease_seconds)}
                found = tx.scalar(stmt, {**where, "b_token": lease.token, **extra})
                if found is None:
                    current = tx.first(_S_LEASE, where)
                    tx.rollback()
                    token, holder = current if current is not None else (None, None)
                    raise _stale(lease, token, holder)
                expires = float(found)
        return replace(lease, expires=expires)

    @staticmethod
    def _leased_row(st: _RunState, lease: Lease) -> _Row:
        """The member's cached row, if ``lease`` is its current lease (SQLite, up to date)."""
        if not 0 <= lease.member < len(st.rows):
            raise StorageError(f"the lease names member {lease.member}, not one of the run's")
        row = st.rows[lease.member]
        if row.holder is None or row.token != lease.token:
            raise _stale(lease, row.token, row.holder_text)
        return row

    # -- writes --------------------------------------------------------------------------
    def commit(
        self,
        lease: Lease,
        *,
        member: MemberView | None = None,
        reports: Sequence[Report] = (),
        events: Sequence[Event] = (),
        pin: str | None = None,
        release: bool = False,
    ) -> Population:
        with self._tx("write") as tx:
            st = self._state(tx, lease.run)
            version: int | None
            if self._sqlite:
                version = self._bump(tx, st)
                self._catch_up(tx, st, version - 1)
                cache = self._write_commit(
                    tx, st, version, lease, member, reports, events, pin, release
                )
            else:
                where = {"b_run": st.id, "b_id": lease.member}
                locked = tx.first(_S_COMMIT_LOCK, where)
                if locked is None:
                    raise StorageError(
                        f"the lease names member {lease.member}, not one of the run's"
                    )
                token, holder, old_status, old_checkpoint = locked
                if holder is None or token != lease.token:
                    raise _stale(lease, token, holder)
                # a new view or pin changes what collect may take: serialize with it
                version = self._bump(tx, st) if member is not None or pin is not None else None
                cache = self._write_commit(
                    tx,
                    st,
                    version,
                    lease,
                    member,
                    reports,
                    events,
                    pin,
                    release,
                    old=(old_status, old_checkpoint, False),
                )
            tx.commit()
            cache()
            if self._sqlite:  # the cache is up to date with this write
                return st.population()
        return self.population(lease.run)

    def _write_commit(
        self,
        tx: _Tx,
        st: _RunState,
        version: int | None,
        lease: Lease,
        member: MemberView | None,
        reports: Sequence[Report],
        events: Sequence[Event],
        pin: str | None,
        release: bool,
        old: tuple[str, str | None, bool] | None = None,
    ) -> Callable[[], None]:
        """A commit's writes, in ``tx`` (which the caller commits); returns what brings
        the cache up to date once it has. ``old`` is the member's (status, checkpoint id,
        whether ``member`` is the row as it is); on SQLite it comes from the up-to-date
        cache, where the lease is checked too."""
        if old is None:
            row = self._leased_row(st, lease)
            old_checkpoint = row.view.checkpoint.id if row.view.checkpoint else None
            old = (row.view.status, old_checkpoint, member is row.view)
        old_status, old_checkpoint, unchanged = old
        self._check(tx, st, lease, member, old_status, pin)
        text = None if member is None or unchanged else _view_json(member)
        own_new = (
            member is not None
            and member.checkpoint is not None
            and member.checkpoint.member == member.id
            and (old_checkpoint is None or member.checkpoint.id != old_checkpoint)
        )
        if pin is not None or own_new:  # a member holds one pin at most
            tx.run(_D_PIN, {"r": st.id, "m": lease.member})
        if pin is not None:
            tx.run(_I_PIN, {"run_id": st.id, "member": lease.member, "checkpoint": pin})
        params: dict[str, Any] = {}
        if member is not None and text is not None:
            params.update(_row_params(member, text))
        if release:
            params["holder"] = params["expires"] = None
        if params:
            if version is not None:
                params["version"] = version
            tx.run(_U_MEMBER, {**params, "b_run": st.id, "b_id": lease.member})
        if reports:
            tx.many(_I_REPORTS, [self._report_row(st, r) for r in reports])
        if events:
            tx.many(_I_EVENTS, [self._event_row(st, e) for e in events])

        def cache() -> None:
            if version is None:
                return
            with self._lock:
                own = st.own(lease.member, version) if params else None
                if own is not None:
                    if member is not None and text is not None:
                        st.replace_view(own, member, text)
                    if release:
                        own.holder = own.holder_text = own.expires = None
                elif not params:
                    st.advance(version)

        return cache

    @staticmethod
    def _check(
        tx: _Tx,
        st: _RunState,
        lease: Lease,
        member: MemberView | None,
        old_status: str,
        pin: str | None,
    ) -> None:
        """Refuse what the contract forbids, before anything is written."""
        if member is not None:
            if member.id != lease.member:
                raise StorageError(f"lease for member {lease.member} cannot write {member.id}")
            if old_status != ACTIVE:
                raise StorageError(f"member {lease.member} is {old_status} and cannot change")
        if pin is not None and tx.first(_S_COLLECTED, {"r": st.id, "c": pin}) is not None:
            raise CollectedPinError(f"checkpoint {pin} was collected and cannot be pinned")

    def collect(self, run: str, candidates: Sequence[str]) -> list[str]:
        with self._tx("write") as tx:
            st = self._state(tx, run)
            if not candidates:
                tx.rollback()
                return []
            unique = list(dict.fromkeys(candidates))
            used: set[str] = set()
            if self._sqlite:  # a statement per candidate costs microseconds here
                for c in unique:
                    if tx.first(_S_USED_ONE, {"r": st.id, "c": c}) is not None:
                        used.add(c)
            else:  # commits that change views or pins hold this lock: serialize with them
                tx.run(_S_LOCK_RUN, {"r": st.id})
                for start in range(0, len(unique), _CHUNK):
                    chunk = unique[start : start + _CHUNK]
                    used.update(row[0] for row in tx.all(_S_USED, {"r": st.id, "c": chunk}))
            used.update(self._kept(tx, st))
            out = [c for c in candidates if c not in used]
            fresh = [{"run_id": st.id, "checkpoint": c} for c in unique if c not in used]
            if fresh:
                tx.many(self._i_collected, fresh)
            return out

    def revive(self, run: str, members: Sequence[int] | None = None) -> list[int]:
        with self._tx("write") as tx:
            st = self._state(tx, run)
            version = self._bump(tx, st)  # holds the run's lock: one revive at a time
            rows, _ = _load_rows(tx.all(_S_ROWS_ALL, {"r": st.id}), run, st.id)
            ids = revive_ids(Population(tuple(r.view for r in rows), st.mode), members)
            if not ids:
                tx.rollback()
                return []
            now = self._now()
            events: list[dict[str, Any]] = []
            for i in ids:
                view, event = revived(rows[i].view, now)
                params = _row_params(view, _view_json(view))
                params.update(holder=None, expires=None, version=version)
                tx.run(_U_MEMBER, {**params, "b_run": st.id, "b_id": i})
                events.append(self._event_row(st, event))
            tx.many(_I_EVENTS, events)
        # the cache reads these rows at its next refresh (they are newer than it)
        return ids

    def _kept(self, tx: _Tx, st: _RunState) -> set[str]:
        """The checkpoints members keep as their previous ones (``MemberView.previous``),
        read in ``collect``'s write transaction: every view written before it is in the
        cache once it is brought up to the run's version."""
        rows = tx.all(_S_ROWS_NEW, {"r": st.id, "v": st.version})
        with self._lock:
            if rows:
                st.apply(rows)
            return {p.id for r in st.rows for p in r.view.previous}

    def history(self, run: str) -> History:
        with self._tx("read") as tx:
            st = self._state(tx, run)
            report_rows = tx.all(_S_REPORTS, {"r": st.id})
            event_rows = tx.all(_S_EVENTS, {"r": st.id})
        key = st.metric
        reports = []
        for seq, member, step, at, score, metrics_text in report_rows:
            try:
                # a report of the decision score alone stores "{}": no JSON to parse
                metrics = {} if metrics_text == "{}" else _json_object(metrics_text, "metrics")
                if not (_is_int(member) and _is_int(step) and _is_num(at)):
                    raise _Corrupt(
                        f"its member, step or time is not a number ({member!r}, {step!r}, {at!r})"
                    )
                if score is not None and not _is_num(score):
                    raise _Corrupt(f"its score is {score!r}")
            except _Corrupt as err:
                raise self._corrupt(err.at(_REPORTS_TABLE, f"seq={seq} (run {run!r})")) from None
            if score is not None and key is not None and key not in metrics:
                metrics = {key: score, **metrics}
            reports.append(Report(member, step, metrics, at))
        return History(tuple(reports), self._events_from(event_rows, run))

    def events(self, run: str) -> tuple[Event, ...]:
        with self._tx("read") as tx:
            st = self._state(tx, run)
            rows = tx.all(_S_EVENTS, {"r": st.id})
        return self._events_from(rows, run)

    def _events_from(self, rows: Sequence[Sequence[Any]], run: str) -> tuple[Event, ...]:
        """The events of ``run`` from their rows (``_S_EVENTS``)."""
        events = []
        for seq, kind, member, step, data, at in rows:
            try:
                details = _json_object(data, "data")
                if not (type(kind) is str and _is_int(member) and _is_int(step) and _is_num(at)):
                    raise _Corrupt(
                        f"its kind, member, step or time has the wrong type ({kind!r}, "
                        f"{member!r}, {step!r}, {at!r})"
                    )
            except _Corrupt as err:
                raise self._corrupt(err.at(_EVENTS_TABLE, f"seq={seq} (run {run!r})")) from None
            events.append(Event(kind, member, step, details, at))
        return tuple(events)


def _echo_sql(statement: str) -> None:
    """With ``echo``: log a statement run on SQLite's DBAPI connection where SQLAlchemy
    logs its own (``echo=True`` shows that logger)."""
    logger = logging.getLogger("sqlalchemy.engine.Engine")
    # as SQLAlchemy's echo does: its own flag decides, not the logger's level
    logger.handle(
        logger.makeRecord(logger.name, logging.INFO, __file__, 0, "%s", (statement,), None)
    )


def _reopen(url: str, clock: Clock | None, echo: bool, read_only: bool = False) -> SQLStore:
    return SQLStore(url, clock=clock, echo=echo, read_only=read_only)


def _reopen_sqlite(
    url: str,
    clock: Clock | None,
    echo: bool,
    connect: tuple[tuple[tuple[Any, ...], dict[str, Any]], str | None],
    returning: bool,
    compiled: Mapping[Any, Compiled],
) -> SQLStore:
    return SQLStore._attach_sqlite(url, clock, echo, connect, returning, compiled)
