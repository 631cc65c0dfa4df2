"""What the two SQL stores share: :class:`SQLStore`, the base of
:class:`~genepool.store._sqlite.SQLiteStore` and
:class:`~genepool.store._postgresql.PostgreSQLStore` (see :mod:`genepool.store.sql`).

``SQLStore(url)`` makes the store of the URL's database (each registers itself by its
URL scheme). Shared here: opening the database (creating, upgrading or refusing its
schema; read-only, only checking it), transactions and their errors, the runs, the
snapshots (through the snapshot cache), collection, revival and the history read back.
What each database does its own way, its claims, commits and renewals above all, are the
abstract methods of :class:`SQLStore`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, cast

from genepool._errors import StorageError, invalid
from genepool._redact import redact_url
from genepool.clock import Clock
from genepool.member import Event, MemberView, Population, Report
from genepool.store._base import History, HistoryAfter, Store, revive_ids, revived
from genepool.store._codec import Corrupt, encode_map, json_object, loads, view_json
from genepool.store._leases import Lease, WorkerInfo
from genepool.store._snapshots import CachedRow, RunCache, load_rows
from genepool.store._sqlcommit import Commit, Rows, commit_rows
from genepool.store._sqlrows import (
    RUNS_TABLE,
    event_row,
    events_from,
    held_row,
    member_columns,
    metric_of,
    new_member_row,
    reports_from,
    run_row,
)
from genepool.store._statements import (
    I_EVENTS,
    I_MEMBERS,
    I_RUN,
    S_EVENTS,
    S_HELD,
    S_IDENTITY,
    S_REPORTS,
    S_ROWS_ALL,
    S_ROWS_NEW,
    S_RUN,
    S_RUN_NAMES,
    S_VERSION,
    U_BUMP,
    U_BUMP_RETURNING,
    U_MEMBER,
    Statement,
)
from genepool.store._transactions import Tx, database_error, db_errors, integrity_errors

if TYPE_CHECKING:
    from sqlalchemy import URL
    from sqlalchemy.engine import Engine

__all__ = ["SQLStore", "TxKind"]

log = logging.getLogger("genepool.store")

#: A transaction: ``write`` (SQLite: ``BEGIN IMMEDIATE``), ``read`` (one consistent
#: snapshot) or ``auto`` (a single read statement).
TxKind = Literal["write", "read", "auto"]


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

    #: ``INSERT ... ON CONFLICT DO NOTHING`` into the collected checkpoints, per database.
    _I_COLLECTED: ClassVar[Statement]
    #: The store of each database, by its URL's scheme (each subclass registers itself).
    _by_scheme: ClassVar[dict[str, type[SQLStore]]] = {}

    _engine: Engine | None

    def __init_subclass__(cls, *, scheme: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        SQLStore._by_scheme[scheme] = cls

    def __new__(cls, url: object = None, **kwargs: Any) -> Self:
        """``SQLStore(url)`` is the store of the URL's database: by its scheme, SQLite's,
        or else PostgreSQL's (whose ``__init__`` refuses a URL that is neither)."""
        chosen: type[SQLStore] = cls
        if cls is SQLStore and isinstance(url, str):
            scheme = url.partition(":")[0].partition("+")[0]
            chosen = SQLStore._by_scheme.get(scheme) or SQLStore._by_scheme["postgresql"]
        return cast("Self", super().__new__(chosen))

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
        self._start(url, clock=clock, echo=echo)
        self._read_only = read_only
        self._engine = self._open_engine(sa_url)
        self._returning = bool(self._engine.dialect.update_returning)
        try:
            self._open_schema()
        except BaseException:
            self.close()
            raise
        self._opened()
        log.debug("opened %r", self)

    def _start(self, url: str, *, clock: Clock | None, echo: bool) -> None:
        """The state every store starts with, before it connects."""
        self.url = url
        self._clock = clock
        self._echo = echo
        self._read_only = False
        self._identity: str | None = None
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._engine = None
        self._returning = False
        self._runs: dict[str, RunCache] = {}

    # -- what each database does its own way -----------------------------------------
    # SQLiteStore and PostgreSQLStore define these (SQLStore(url) is always one of them).
    # They are not abstract methods so that SQLStore(url) type-checks as a concrete class.
    def claim(
        self, run: str, worker: WorkerInfo, *, lease_seconds: float, max_ahead: int | None = None
    ) -> Lease | None:
        raise self._own("claim")

    def renew(self, lease: Lease, *, lease_seconds: float) -> Lease:
        raise self._own("renew")

    def _commit(self, commit: Commit) -> Population:
        """:meth:`commit`: write ``commit`` in one transaction; a fresh snapshot."""
        raise self._own("_commit")

    def _rows(self, commit: Commit | None) -> Rows | None:
        """``commit``'s rows, made before its transaction begins, where this process
        knows its run already (``None``: its transaction makes them)."""
        st = None if commit is None else self._runs.get(commit.lease.run)
        if commit is None or st is None:
            return None
        return commit_rows(commit, run_id=st.id, metric=st.metric)

    def _open_engine(self, sa_url: URL) -> Engine:
        """The engine for the database, its file checked first (SQLite)."""
        raise self._own("_open_engine")

    def _setup(self) -> str:
        """Create, upgrade or refuse the schema (see :func:`._sqlschema.setup`); the
        database's identity."""
        raise self._own("_setup")

    def _opened(self) -> None:
        """Keep what a store handed to another process needs, once the database is open."""

    def _begin(self, kind: TxKind) -> AbstractContextManager[Tx]:
        """A transaction begun on this process's connection."""
        raise self._own("_begin")

    def _used(self, tx: Tx, st: RunCache, candidates: Sequence[str]) -> set[str]:
        """Which of the (unique) checkpoints a member holds or pins now, in ``collect``'s
        write transaction."""
        raise self._own("_used")

    def _clock_margin(self) -> float:
        """How long a lease is taken as held after it ran out by this process's clock."""
        return 0.0

    def _own(self, method: str) -> NotImplementedError:
        return NotImplementedError(
            f"{type(self).__name__}.{method}: each database's store has its own"
        )

    # -- opening -------------------------------------------------------------------------
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
            else:
                self._identity = self._setup()
        except db_errors() as err:
            raise database_error(f"{self!r}: cannot open the database", err) from err

    @property
    def identity(self) -> str:
        """The database's random id, kept in its ``genepool_meta`` table (made when genepool
        first opened it to write)."""
        found = self._identity
        if found is None:
            if not self._read_only:  # a store handed to this process: read it once
                with self._tx("auto") as tx:
                    found = tx.scalar(S_IDENTITY, {})
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

    def close(self) -> None:
        """Close this process's connections (the store reopens them if it is used again)."""
        with self._lock:
            self._close_connections()
            if self._engine is not None:
                self._engine.dispose()

    def _close_connections(self) -> None:
        """Close the connections this store holds beside its engine's pool."""

    def _after_fork(self) -> None:
        """In a forked child: drop (never close) the parent's connections."""
        if self._engine is not None:
            self._engine.dispose(close=False)
        self._lock = threading.RLock()
        self._pid = os.getpid()

    def _require_engine(self) -> Engine:
        if self._engine is None:  # pragma: no cover - only SQLite stores go without
            raise StorageError(f"{self!r} has no SQLAlchemy engine")
        return self._engine

    def _now(self) -> float:
        return self._clock.now() if self._clock is not None else time.time()

    @contextmanager
    def _tx(self, kind: TxKind) -> Iterator[Tx]:
        """A transaction (see :data:`TxKind`), committed at the end unless the body
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
            with self._begin(kind) as tx:
                try:
                    yield tx
                except BaseException:
                    if tx.active:
                        tx.rollback()
                    raise
                if tx.active:
                    tx.commit()
        except db_errors() as err:
            raise database_error(f"{self!r}: the database failed", err) from err
        except Corrupt as err:
            raise self._corrupt(err) from None

    def _corrupt(self, err: Corrupt) -> StorageError:
        """The error for a row genepool never wrote: where it is, and what to do."""
        where = f"the row {err.row} of {err.table}" if err.table else "a row"
        return StorageError(
            f"{self!r}: {where} is corrupt: {err.reason}. genepool never writes such a row: "
            "it was changed outside genepool, or the database file is damaged. Fix: restore "
            "the database from a backup, or correct or delete that row with the database's "
            "own client (sqlite3, psql)."
        )

    def _state(self, tx: Tx, run: str) -> RunCache:
        """The run's cache, read in full the first time this process meets the run."""
        st = self._runs.get(run)
        if st is not None:
            return st
        found = tx.first(S_RUN, {"name": run})
        if found is None:
            raise KeyError(f"no run named {run!r} in this store")
        run_id, config_text = found
        try:
            config = json_object(config_text, "config")
        except Corrupt as err:
            raise err.at(RUNS_TABLE, f"id={run_id} (run {run!r})") from None
        rows, version = load_rows(tx.all(S_ROWS_ALL, {"r": run_id}), run=run, run_id=run_id)
        mode = config.get("mode", "max")
        st = RunCache(run_id, config, mode, metric_of(config), version, rows, name=run)
        with self._lock:
            return self._runs.setdefault(run, st)

    def _bump(self, tx: Tx, st: RunCache) -> int:
        """Add one to the run's version (which locks its row until the transaction ends)."""
        if self._returning:
            return int(tx.scalar(U_BUMP_RETURNING, {"r": st.id}))
        tx.run(U_BUMP, {"r": st.id})
        return int(tx.scalar(S_VERSION, {"r": st.id}))

    # -- runs ----------------------------------------------------------------------------
    def create_run(
        self, run: str, *, config: Mapping[str, Any], members: Sequence[MemberView]
    ) -> bool:
        rows = sorted(members, key=lambda m: m.id)
        config_json = encode_map(config)
        texts = [view_json(m) for m in rows]
        with self._tx("write") as tx:
            if tx.first(S_RUN, {"name": run}) is not None:
                tx.rollback()
                return False
            if [m.id for m in rows] != list(range(len(rows))):
                raise StorageError("member ids must be 0 .. population - 1")
            new_run = run_row(run, config=config_json, created=self._now())
            try:
                run_id = tx.run(I_RUN, new_run)
                if rows:
                    pairs = zip(rows, texts, strict=True)
                    tx.many(I_MEMBERS, [new_member_row(m, t, run_id=run_id) for m, t in pairs])
            except integrity_errors():  # another process was first
                tx.rollback()
                return False
            tx.commit()
            decoded = loads(new_run["config"])
            cached = [
                CachedRow(1, m, t, 0, None, None, None) for m, t in zip(rows, texts, strict=True)
            ]
            mode = decoded.get("mode", "max")
            st = RunCache(run_id, decoded, mode, metric_of(decoded), 1, cached, name=run)
            with self._lock:
                self._runs[run] = st
        log.debug("created run %r with %d members in %r", run, len(rows), self)
        return True

    def runs(self) -> list[str]:
        with self._tx("auto") as tx:
            return [row[0] for row in tx.all(S_RUN_NAMES, {})]

    def run_config(self, run: str) -> Mapping[str, Any]:
        st = self._runs.get(run)
        if st is None:
            with self._tx("auto") as tx:
                st = self._state(tx, run)
        return dict(st.config)

    def population(self, run: str) -> Population:
        with self._tx("auto") as tx:
            return self._population(tx, self._state(tx, run))

    def _population(self, tx: Tx, st: RunCache) -> Population:
        """The run's population: the members' rows changed since the cache's are read."""
        rows = tx.all(S_ROWS_NEW, {"r": st.id, "v": st.version})
        with self._lock:
            if rows:
                st.apply(rows)
            return st.population()

    def held(self, run: str) -> frozenset[int]:
        with self._tx("auto") as tx:
            rows = tx.all(S_HELD, {"r": self._state(tx, run).id})
        now = self._now() - self._clock_margin()
        return frozenset(int(i) for i, expires, holder in rows if held_row(holder, expires, now))

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
        return self._commit(
            Commit(
                lease=lease, member=member, reports=reports, events=events, pin=pin, release=release
            )
        )

    def collect(self, run: str, candidates: Sequence[str]) -> list[str]:
        with self._tx("write") as tx:
            st = self._state(tx, run)
            if not candidates:
                tx.rollback()
                return []
            unique = list(dict.fromkeys(candidates))
            used = self._used(tx, st, unique)
            used.update(self._kept(tx, st))
            out = [c for c in candidates if c not in used]
            fresh = [{"run_id": st.id, "checkpoint": c} for c in unique if c not in used]
            if fresh:
                tx.many(self._I_COLLECTED, fresh)
            return out

    def _kept(self, tx: Tx, st: RunCache) -> set[str]:
        """The checkpoints members keep as their previous ones (``MemberView.previous``),
        read in ``collect``'s write transaction: every view written before it is in the
        cache once it is brought up to the run's version."""
        rows = tx.all(S_ROWS_NEW, {"r": st.id, "v": st.version})
        with self._lock:
            if rows:
                st.apply(rows)
            return {p.id for r in st.rows for p in r.view.previous}

    def revive(self, run: str, members: Sequence[int] | None = None) -> list[int]:
        with self._tx("write") as tx:
            st = self._state(tx, run)
            version = self._bump(tx, st)  # holds the run's lock: one revive at a time
            rows, _ = load_rows(tx.all(S_ROWS_ALL, {"r": st.id}), run=run, run_id=st.id)
            ids = revive_ids(Population(tuple(r.view for r in rows), st.mode), members)
            if not ids:
                tx.rollback()
                return []
            now = self._now()
            events: list[dict[str, Any]] = []
            for i in ids:
                view, event = revived(rows[i].view, now)
                params = member_columns(view, view_json(view))
                params.update(holder=None, expires=None, version=version)
                tx.run(U_MEMBER, {**params, "b_run": st.id, "b_id": i})
                events.append(event_row(event, run_id=st.id))
            tx.many(I_EVENTS, events)
        # the cache reads these rows at its next refresh (they are newer than it)
        return ids

    # -- the history ---------------------------------------------------------------------
    def history(self, run: str) -> History:
        found = self.history_after(run)
        return History(found.reports, found.events)

    def history_after(
        self, run: str, *, reports_after: int = -1, events_after: int = -1
    ) -> HistoryAfter:
        """One read transaction: the population, then the rows after the seqs given (a
        row genepool never wrote raises there: see :meth:`_tx`)."""
        with self._tx("read") as tx:
            st = self._state(tx, run)
            population = self._population(tx, st)
            report_rows = tx.all(S_REPORTS, {"r": st.id, "after": reports_after})
            event_rows = tx.all(S_EVENTS, {"r": st.id, "after": events_after})
            reports = reports_from(report_rows, run=run, metric=st.metric)
            events = events_from(event_rows, run=run)
        reports_end = report_rows[-1][0] if report_rows else reports_after
        events_end = event_rows[-1][0] if event_rows else events_after
        return HistoryAfter(population, reports, events, reports_end, events_end)

    def events(self, run: str) -> tuple[Event, ...]:
        with self._tx("read") as tx:  # a row genepool never wrote raises there
            rows = tx.all(S_EVENTS, {"r": self._state(tx, run).id, "after": -1})
            return events_from(rows, run=run)
