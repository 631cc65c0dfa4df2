"""The SQLite store: claims, commits and renewals as serialized writes.

SQLite has one write lock per file, and every write transaction takes it up front
(``BEGIN IMMEDIATE``, after this machine's writers queue for it: see
:class:`~genepool.store._sqlite_file.WriterQueue`). Since writes are serialized anyway,
each one that changes a member row bumps the run's version (one of reports and events
alone reads it, and leaves the run's row unwritten), and the store decides claims and
fencing from its snapshot cache, brought up to date inside the transaction
(:meth:`SQLiteStore._serialized`):

* **A claim** picks from the cached members (:func:`~genepool.store._claims.pick_claim`)
  and writes the new lease; a round's last commit and the next claim are one write
  (:meth:`SQLiteStore.commit_and_claim`).
* **A commit** checks the lease against the cached row
  (:func:`~genepool.store._commits.check_commit`), then writes.
* **A renewal** checks the lease likewise, and writes the new expiry.

Statements run on the sqlite3 connection itself, compiled once
(:mod:`genepool.store._statements`). A store handed to another process (a worker) travels
with the statements a worker runs compiled, and opens its own sqlite3 connection: the
worker never imports SQLAlchemy.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from genepool._errors import StaleLeaseError, StorageError
from genepool._redact import redact_url
from genepool.clock import Clock
from genepool.member import Event, MemberView, Population, Report
from genepool.store._claims import counts_a_crash, pick_claim, with_crash
from genepool.store._codec import holder_json, view_json
from genepool.store._leases import Lease, WorkerInfo, check_lease, holds
from genepool.store._snapshots import CachedRow, RunCache
from genepool.store._sqlcommit import Commit, Standing, write_commit
from genepool.store._sqlite_file import WriterQueue, check_file, read_only_uri, sqlite_pragmas
from genepool.store._sqlrows import member_columns
from genepool.store._sqlstore import SQLStore, TxKind
from genepool.store._statements import (
    D_PIN,
    I_COLLECTED_SQLITE,
    I_EVENTS,
    I_PIN,
    I_REPORTS,
    S_COLLECTED,
    S_EVENTS,
    S_REPORTS,
    S_ROWS_ALL,
    S_ROWS_NEW,
    S_RUN,
    S_USED_ONE,
    S_VERSION,
    U_BUMP,
    U_BUMP_RETURNING,
    U_MEMBER,
    Compiled,
    Statement,
    compile_sqlite,
)
from genepool.store._transactions import SQLiteTx, Tx, db_errors

if TYPE_CHECKING:
    from sqlalchemy import URL
    from sqlalchemy.engine import Connection, Engine

__all__ = ["WORKER_STATEMENTS", "SQLiteStore"]

log = logging.getLogger("genepool.store")

#: sqlite3.connect's arguments (positional, keyword).
ConnectArgs = tuple[tuple[Any, ...], dict[str, Any]]

_MEMBER_COLUMNS = ("view", "status", "ready_count", "step", "pending", "checkpoint")
_WHERE_MEMBER = ("b_run", "b_id")

#: What a SQLite worker runs, with the names of the parameters it gives (an INSERT's or
#: UPDATE's SQL depends on them): :meth:`SQLiteStore.__reduce__` hands these over compiled.
#: Anything else is compiled where it is first used (importing SQLAlchemy there).
WORKER_STATEMENTS: tuple[tuple[Statement, tuple[str, ...]], ...] = (
    (S_RUN, ()),
    (S_ROWS_ALL, ()),
    (S_ROWS_NEW, ()),
    (S_VERSION, ()),
    (U_BUMP, ("r",)),
    (U_BUMP_RETURNING, ("r",)),
    (D_PIN, ()),
    (S_COLLECTED, ()),
    (S_USED_ONE, ()),
    (S_REPORTS, ()),
    (S_EVENTS, ()),
    (I_PIN, ("run_id", "member", "checkpoint")),
    (I_REPORTS, ("run_id", "member", "step", "time", "score", "metrics")),
    (I_EVENTS, ("run_id", "kind", "member", "step", "data", "time")),
    (I_COLLECTED_SQLITE, ("run_id", "checkpoint")),
    # claims (a lease, and a crash counted), renewals, commits (a view, a release, both)
    (U_MEMBER, ("token", "expires", "holder", "version", *_WHERE_MEMBER)),
    (U_MEMBER, ("token", "expires", "holder", "version", *_MEMBER_COLUMNS, *_WHERE_MEMBER)),
    (U_MEMBER, ("expires", "version", *_WHERE_MEMBER)),
    (U_MEMBER, (*_MEMBER_COLUMNS, "version", *_WHERE_MEMBER)),
    (U_MEMBER, (*_MEMBER_COLUMNS, "holder", "expires", "version", *_WHERE_MEMBER)),
    (U_MEMBER, ("holder", "expires", "version", *_WHERE_MEMBER)),
)

_BEGIN = {"write": "BEGIN IMMEDIATE", "read": "BEGIN", "auto": None}
_abandoned: list[object] = []  # connections inherited through fork: a child never closes them


class SQLiteStore(SQLStore, scheme="sqlite"):
    """A :class:`~genepool.store.SQLStore` on a SQLite file: writes serialized (see the
    module's docstring)."""

    _I_COLLECTED: ClassVar[Statement] = I_COLLECTED_SQLITE
    #: One write under SQLite's write lock.
    fuses_commit_and_claim = True
    #: One write at a time: a row's seq is visible once every smaller one is.
    history_in_order = True

    _conn: Connection | None
    _raw: sqlite3.Connection | None  # SQLite without SQLAlchemy

    def _start(self, url: str, *, clock: Clock | None, echo: bool) -> None:
        super()._start(url, clock=clock, echo=echo)
        self._writers = WriterQueue(None)
        self._conn = None
        self._raw = None
        self._connect_args: ConnectArgs = ((), {})
        self._compiled: dict[Any, Compiled] = {}

    # -- opening -------------------------------------------------------------------------
    def _open_engine(self, sa_url: URL) -> Engine:
        """Before the first connection (which would switch the file to WAL): refuse a file
        that is not genepool's, and for reading one that does not exist. Connects with
        the file opened ``mode=ro`` to read, and with a writer queue to write."""
        from genepool.store import _sqlschema as schema

        database = sa_url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            check_file(database, read_only=self._read_only, shown=repr(self))
            if self._read_only:
                sa_url = sa_url.set(
                    database=read_only_uri(database).split("?", 1)[0],
                    query={"mode": "ro", "uri": "true"},
                )
            else:
                self._writers = WriterQueue(os.path.abspath(database) + ".genepool-lock")
        return schema.sqlite_engine(sa_url, self._echo, read_only=self._read_only)

    def _setup(self) -> str:
        from genepool.store import _sqlschema as schema

        with self._lock:
            conn = self._connection()
            with conn.begin():
                return schema.setup(conn, repr(self), redact_url(self.url))

    def _opened(self) -> None:
        from genepool.store import _sqlschema as schema

        self._connect_args = schema.sqlite_connect(self._require_engine())

    # -- plumbing ------------------------------------------------------------------------
    def __reduce__(self) -> tuple[Any, ...]:
        """A SQLite store travels with its statements compiled, so that the process it goes
        to never imports SQLAlchemy (a third of a second of a worker's start)."""
        if self._read_only or (self._engine is None and not self._compiled):
            return (_reopen, (self.url, self._clock, self._echo, self._read_only))
        for stmt, columns in WORKER_STATEMENTS:
            self._compile(stmt, dict.fromkeys(columns))
        compiled = dict(self._compiled)
        connect = (self._connect_args, self._writers.path)
        args = (self.url, self._clock, self._echo, connect, self._returning, compiled)
        return (_reopen_attached, args)

    def _close_connections(self) -> None:
        conn, self._conn = self._conn, None
        raw, self._raw = self._raw, None
        if os.getpid() == self._pid:
            for c in (conn, raw):
                if c is None:
                    continue
                try:
                    c.close()
                except db_errors():  # pragma: no cover - already broken
                    log.debug("closing the connection raised", exc_info=True)
        self._writers.close()

    def _after_fork(self) -> None:
        for c in (self._conn, self._raw):
            if c is not None:
                _abandoned.append(c)
        self._conn = self._raw = None
        self._writers.close()
        super()._after_fork()

    def _connection(self) -> Connection:
        """This process's one connection, through SQLAlchemy (the caller holds the lock)."""
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._conn = self._require_engine().connect()
        return conn

    def _dbapi(self) -> Any:
        """This process's one sqlite3 connection (the caller holds the lock)."""
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

    def _compile(self, stmt: Statement, params: Mapping[str, Any]) -> Compiled:
        """The statement's SQL (for these parameter names, if it is an INSERT or UPDATE),
        compiled once."""
        key = (stmt.name, frozenset(params)) if stmt.dml else stmt.name
        found = self._compiled.get(key)
        if found is None:
            dialect = None if self._engine is None else self._engine.dialect
            columns = tuple(params) if stmt.dml else None
            found = self._compiled[key] = compile_sqlite(stmt, columns=columns, dialect=dialect)
        return found

    @contextmanager
    def _begin(self, kind: TxKind) -> Iterator[Tx]:
        """A transaction on the one sqlite3 connection, the store's lock held throughout;
        a write waits its turn in the writer queue, then begins ``IMMEDIATE``."""
        with self._lock:
            raw = self._dbapi()
            begin = _BEGIN[kind]
            with self._writers.turn() if kind == "write" else nullcontext():
                if begin is not None:
                    raw.execute(begin)
                yield SQLiteTx(raw, self._compile)

    def _serialized(self, tx: Tx, run: str) -> tuple[RunCache, int]:
        """In a write transaction: the run's cache, brought up to date, and the run's
        version this write makes (bumped, which every later writer waits for)."""
        st = self._state(tx, run)
        version = self._bump(tx, st)
        self._catch_up(tx, st, version - 1)
        return st, version

    def _current(self, tx: Tx, run: str) -> RunCache:
        """In a write transaction that changes no member row (reports and events alone):
        the run's cache, brought up to date, with no version bumped (nothing cached
        changes, and the run's row is left unwritten)."""
        st = self._state(tx, run)
        self._catch_up(tx, st, int(tx.scalar(S_VERSION, {"r": st.id})))
        return st

    @staticmethod
    def _catch_up(tx: Tx, st: RunCache, version: int) -> None:
        """Read into the cache every member row written since it was last brought up to
        date, up to ``version`` (committed, as is every version before it)."""
        if st.version < version:
            st.apply(tx.all(S_ROWS_NEW, {"r": st.id, "v": st.version}))
            st.version = max(st.version, version)

    @staticmethod
    def _leased(st: RunCache, lease: Lease) -> CachedRow:
        """The member's cached row, if ``lease`` names one of the run's members."""
        if not 0 <= lease.member < len(st.rows):
            raise StorageError(f"the lease names member {lease.member}, not one of the run's")
        return st.rows[lease.member]

    @staticmethod
    def _standing(row: CachedRow) -> Standing:
        """The member of a cached (up-to-date) row, as a commit finds it."""
        view = row.view
        checkpoint = None if view.checkpoint is None else view.checkpoint.id
        token = None if row.holder is None else row.token
        return Standing(token=token, status=view.status, checkpoint=checkpoint, view=view)

    # -- leases --------------------------------------------------------------------------
    def claim(
        self, run: str, worker: WorkerInfo, *, lease_seconds: float, max_ahead: int | None = None
    ) -> Lease | None:
        return self._claim(run, worker, lease_seconds=lease_seconds, max_ahead=max_ahead)

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
        last = Commit(
            lease=lease, member=member, reports=reports, events=events, pin=pin, release=True
        )
        return self._claim(
            lease.run, worker, lease_seconds=lease_seconds, max_ahead=max_ahead, last=last
        )

    def _claim(
        self,
        run: str,
        worker: WorkerInfo,
        *,
        lease_seconds: float,
        max_ahead: int | None,
        last: Commit | None = None,
    ) -> Lease | None:
        """Under the database's write lock, the up-to-date cache decides (after ``last``,
        the caller's previous lease and the round's last write, is committed)."""
        last_rows = self._rows(last)
        with self._tx("write") as tx:
            st, version = self._serialized(tx, run)
            now = self._now()
            rows = st.rows
            members = st.population()
            freed = -1  # the member whose lease ``last`` ended in this write
            cache = None
            if last is not None:
                try:  # checks the lease (and the pin) before it writes anything
                    standing = self._standing(self._leased(st, last.lease))
                    cache = write_commit(
                        tx,
                        st,
                        version=version,
                        commit=last,
                        standing=standing,
                        lock=self._lock,
                        rows=last_rows,
                    )
                except StaleLeaseError:
                    if last.writes:
                        raise
                else:  # nothing to write with a lost lease: only claim
                    freed = last.lease.member
                    if last.member is not None:  # the claim sees the member as just written
                        members = members.with_members([last.member])

            def held(member: int) -> bool:
                r = rows[member]
                return member != freed and holds(holder=r.holder, expires=r.expires, now=now)

            best = pick_claim(members, held, max_ahead)
            if best is None:
                if cache is None:
                    tx.rollback()
                    return None
                tx.commit()
                cache()
                return None
            row = rows[best.id]
            token, expires, holder = row.token + 1, now + lease_seconds, holder_json(worker)
            params: dict[str, Any] = {
                "token": token,
                "expires": expires,
                "holder": holder,
                "version": version,
            }
            # never released: its holder died or hung (with its driver: no crash)
            view: MemberView | None = None
            if counts_a_crash(None if best.id == freed else row.holder):
                view = with_crash(best)
                text = view_json(view)
                params.update(member_columns(view, text))
            tx.run(U_MEMBER, {**params, "b_run": st.id, "b_id": best.id})
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

    def renew(self, lease: Lease, *, lease_seconds: float) -> Lease:
        with self._tx("write") as tx:
            st, version = self._serialized(tx, lease.run)
            row = self._leased(st, lease)
            check_lease(lease, current=None if row.holder is None else row.token)
            expires = self._now() + lease_seconds
            where = {"b_run": st.id, "b_id": lease.member}
            tx.run(U_MEMBER, {"expires": expires, "version": version, **where})
            tx.commit()
            own = st.own(lease.member, version)
            if own is not None:
                own.expires = expires
        return replace(lease, expires=expires)

    # -- writes --------------------------------------------------------------------------
    def _commit(self, commit: Commit) -> Population:
        lease = commit.lease
        rows = self._rows(commit)
        with self._tx("write") as tx:
            version: int | None
            if commit.member is None and commit.pin is None and not commit.release:
                st, version = self._current(tx, lease.run), None  # reports, events
            else:
                st, version = self._serialized(tx, lease.run)
            standing = self._standing(self._leased(st, lease))
            cache = write_commit(
                tx,
                st,
                version=version,
                commit=commit,
                standing=standing,
                lock=self._lock,
                rows=rows,
            )
            tx.commit()
            cache()
            return st.population()  # the cache is up to date with this write

    def _used(self, tx: Tx, st: RunCache, candidates: Sequence[str]) -> set[str]:
        # a statement per candidate costs microseconds here
        used: set[str] = set()
        for c in candidates:
            if tx.first(S_USED_ONE, {"r": st.id, "c": c}) is not None:
                used.add(c)
        return used


def _echo_sql(statement: str) -> None:
    """With ``echo``: log a statement run on SQLite's DBAPI connection where SQLAlchemy
    logs its own (``echo=True`` shows that logger)."""
    logger = logging.getLogger("sqlalchemy.engine.Engine")
    # as SQLAlchemy's echo does: its own flag decides, not the logger's level
    logger.handle(
        logger.makeRecord(logger.name, logging.INFO, __file__, 0, "%s", (statement,), None)
    )


def _reopen(url: str, clock: Clock | None, echo: bool, read_only: bool = False) -> SQLStore:
    return SQLiteStore(url, clock=clock, echo=echo, read_only=read_only)


def _reopen_attached(
    url: str,
    clock: Clock | None,
    echo: bool,
    connect: tuple[ConnectArgs, str | None],
    returning: bool,
    compiled: Mapping[Any, Compiled],
) -> SQLiteStore:
    """The store as a process handed it by another opens it (see
    :meth:`SQLiteStore.__reduce__`): a SQLite file the other process opened (and whose
    schema it checked), with the statements compiled, on a sqlite3 connection of its own,
    without SQLAlchemy. ``connect``: ``sqlite3.connect``'s arguments, and the writer
    queue's file."""
    store = SQLiteStore.__new__(SQLiteStore)
    store._start(url, clock=clock, echo=echo)
    store._connect_args, queue = connect
    store._writers = WriterQueue(queue)
    store._returning = returning
    store._compiled.update(compiled)
    return store
