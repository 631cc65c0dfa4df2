"""Statement compilation: every SQL statement the SQL store runs, each declared once.

A statement is a function that builds its SQLAlchemy Core construct from the schema
(:mod:`genepool.store._sqlschema`); :func:`statement` makes it a :class:`Statement`, a
handle that names the statement without importing SQLAlchemy. The construct is built when
first asked for (:attr:`Statement.core`). The prefix of a name says what it is:
``S_`` a query, ``I_`` an INSERT, ``U_`` an UPDATE, ``D_`` a DELETE.

On PostgreSQL the construct runs through SQLAlchemy. On SQLite it is compiled once by
SQLAlchemy's dialect (:func:`compile_sqlite`) and the SQL runs on the sqlite3 connection
itself: SQLAlchemy's per-call work (15-20 microseconds a statement) would otherwise cost
more than SQLite's own. A SQLite store handed to a worker travels with the SQL the worker
runs compiled (see :meth:`genepool.store._sqlite.SQLiteStore.__reduce__`): the worker never
imports SQLAlchemy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from genepool.member import ACTIVE

__all__ = [
    "Compiled",
    "Statement",
    "compile_sqlite",
    "statement",
]

#: A statement compiled for SQLite: its SQL, its parameters' names in order, and the
#: values of those it fixes itself.
Compiled = tuple[str, tuple[str, ...], dict[str, Any]]

#: What builds a statement: a function of SQLAlchemy (``sa``) and the schema's module.
Build = Callable[[ModuleType, ModuleType], Any]


class Statement:
    """A statement of the SQL store, by name; its Core construct is built on first use.

    ``dml`` (an INSERT or UPDATE): its SQL depends on the parameters given (the columns
    it sets), so it is compiled once per set of parameter names.
    """

    __slots__ = ("_build", "_core", "dml", "name")

    def __init__(self, build: Build) -> None:
        self.name: str = build.__name__
        self.dml: bool = self.name.startswith(("I_", "U_"))
        self._build = build
        self._core: Any = None

    @property
    def core(self) -> Any:
        """The SQLAlchemy Core construct (imports SQLAlchemy, the first time)."""
        if self._core is None:
            import sqlalchemy as sa

            from genepool.store import _sqlschema

            self._core = self._build(sa, _sqlschema)
        return self._core

    def __repr__(self) -> str:
        return f"Statement({self.name!r})"


def statement(build: Build) -> Statement:
    """Declare a statement: ``build(sa, schema)`` makes its Core construct."""
    return Statement(build)


def compile_sqlite(stmt: Statement, *, columns: Sequence[str] | None, dialect: Any) -> Compiled:
    """A statement's SQL for SQLite, the order of its parameters and their fixed values.

    Args:
        stmt: The statement.
        columns: For an INSERT or UPDATE, the parameter names given (the columns it sets).
        dialect: The connected engine's dialect; ``None``: SQLite's, never connected.
    """
    import sqlalchemy as sa

    if dialect is None:
        dialect = _sqlite_dialect()
    core = stmt.core
    if columns is not None and isinstance(core, (sa.Insert, sa.Update)):
        cols = [k for k in columns if k in core.table.c]
        compiled = core.compile(dialect=dialect, column_keys=cols)
    else:
        compiled = core.compile(dialect=dialect)
    order = tuple(getattr(compiled, "positiontup", None) or ())
    # the values the statement fixes itself; a parameter the caller must give is left out
    # (its placeholder, a SQLAlchemy symbol, must not travel to a process without it)
    fixed = {k: v for k, v in compiled.params.items() if type(v) in _PLAIN}
    return str(compiled), order, fixed


_PLAIN = (int, float, str, bytes, bool, type(None))


@functools.cache
def _sqlite_dialect() -> Any:
    """SQLite's dialect as an engine for sqlite3 has it (never connected)."""
    import sqlalchemy as sa

    return sa.create_engine("sqlite://", poolclass=sa.pool.NullPool).dialect


# -- runs --------------------------------------------------------------------------------


@statement
def S_IDENTITY(sa: ModuleType, db: ModuleType) -> Any:
    """The database's identity."""
    return db.IDENTITY


@statement
def S_RUN(sa: ModuleType, db: ModuleType) -> Any:
    """A run's id and config, by its name."""
    runs = db.runs_table.c
    return sa.select(runs.id, runs.config).where(runs.name == sa.bindparam("name"))


@statement
def S_RUN_NAMES(sa: ModuleType, db: ModuleType) -> Any:
    """Every run's name, oldest first."""
    runs = db.runs_table.c
    return sa.select(runs.name).order_by(runs.id)


@statement
def I_RUN(sa: ModuleType, db: ModuleType) -> Any:
    """A new run."""
    return sa.insert(db.runs_table)


@statement
def S_VERSION(sa: ModuleType, db: ModuleType) -> Any:
    """A run's version: one more at each write that changes a member."""
    runs = db.runs_table.c
    return sa.select(runs.version).where(runs.id == sa.bindparam("r"))


@statement
def U_BUMP(sa: ModuleType, db: ModuleType) -> Any:
    """One more to the run's version (which locks its row until the transaction ends)."""
    runs = db.runs_table
    return sa.update(runs).where(runs.c.id == sa.bindparam("r")).values(version=runs.c.version + 1)


@statement
def U_BUMP_RETURNING(sa: ModuleType, db: ModuleType) -> Any:
    """:data:`U_BUMP`, returning the new version."""
    return U_BUMP.core.returning(db.runs_table.c.version)


@statement
def S_LOCK_RUN(sa: ModuleType, db: ModuleType) -> Any:
    """Lock the run's row (PostgreSQL: what writes of views and pins serialize on)."""
    runs = db.runs_table.c
    return sa.select(runs.id).where(runs.id == sa.bindparam("r")).with_for_update()


# -- members -----------------------------------------------------------------------------


def _one_member(sa: ModuleType, db: ModuleType) -> tuple[Any, ...]:
    """Where a statement finds one member's row: by its run (``b_run``) and id (``b_id``)."""
    m = db.members_table.c
    return (m.run_id == sa.bindparam("b_run"), m.id == sa.bindparam("b_id"))


def _row_columns(db: ModuleType) -> tuple[Any, ...]:
    """The columns the snapshot cache reads of a member row."""
    m = db.members_table.c
    return (m.id, m.version, m.view, m.token, m.expires, m.holder)


@statement
def S_ROWS_ALL(sa: ModuleType, db: ModuleType) -> Any:
    """Every member row of a run, by id."""
    m = db.members_table.c
    return sa.select(*_row_columns(db)).where(m.run_id == sa.bindparam("r")).order_by(m.id)


@statement
def S_ROWS_NEW(sa: ModuleType, db: ModuleType) -> Any:
    """The member rows of a run written after version ``v``."""
    m = db.members_table.c
    return sa.select(*_row_columns(db)).where(
        m.run_id == sa.bindparam("r"), m.version > sa.bindparam("v")
    )


@statement
def I_MEMBERS(sa: ModuleType, db: ModuleType) -> Any:
    """New member rows."""
    return sa.insert(db.members_table)


@statement
def U_MEMBER(sa: ModuleType, db: ModuleType) -> Any:
    """A member's row; the SET clause comes from the execution's parameters."""
    return sa.update(db.members_table).where(*_one_member(sa, db))


@statement
def S_LEASE(sa: ModuleType, db: ModuleType) -> Any:
    """A member's lease: its token and holder."""
    m = db.members_table.c
    return sa.select(m.token, m.holder).where(*_one_member(sa, db))


@statement
def S_HELD(sa: ModuleType, db: ModuleType) -> Any:
    """The members of a run with a lease holder, and their leases' expiries."""
    m = db.members_table.c
    return sa.select(m.id, m.expires, m.holder).where(
        m.run_id == sa.bindparam("r"), m.holder.is_not(None)
    )


# -- PostgreSQL's claims, commits and renewals ---------------------------------------------


def _db_now(sa: ModuleType) -> Any:
    """The database's clock (PostgreSQL), in seconds since the epoch."""
    return sa.cast(sa.extract("epoch", sa.func.clock_timestamp()), sa.Double)


@statement
def S_CLAIM_ROWS(sa: ModuleType, db: ModuleType) -> Any:
    """The active members of a run, with what a claim reads, and the database's clock."""
    m = db.members_table.c
    now = _db_now(sa).label("now")
    columns = (m.id, m.ready_count, m.step, m.pending, m.token, m.expires, m.holder, now)
    return sa.select(*columns).where(m.run_id == sa.bindparam("r"), m.status == ACTIVE)


@statement
def S_CLAIM_LOCK(sa: ModuleType, db: ModuleType) -> Any:
    """A member's row, locked ``FOR UPDATE SKIP LOCKED``: no row when another holds it."""
    m = db.members_table.c
    columns = (m.status, m.ready_count, m.step, m.pending, m.token, m.expires, m.holder, m.view)
    return sa.select(*columns).where(*_one_member(sa, db)).with_for_update(skip_locked=True)


@statement
def S_COMMIT_LOCK(sa: ModuleType, db: ModuleType) -> Any:
    """A member's lease, status and checkpoint, its row locked ``FOR UPDATE``."""
    m = db.members_table.c
    return (
        sa.select(m.token, m.holder, m.status, m.checkpoint)
        .where(*_one_member(sa, db))
        .with_for_update()
    )


def _renew(sa: ModuleType, db: ModuleType, expires: Any) -> Any:
    """Set the expiry of a lease that is still the member's, returning it."""
    m = db.members_table
    return (
        sa.update(m)
        .where(*_one_member(sa, db), m.c.token == sa.bindparam("b_token"), m.c.holder.is_not(None))
        .values(expires=expires)
        .returning(m.c.expires)
    )


@statement
def U_RENEW_DB_CLOCK(sa: ModuleType, db: ModuleType) -> Any:
    """Renew a lease for ``secs`` seconds of the database's clock."""
    return _renew(sa, db, _db_now(sa) + sa.bindparam("secs", type_=sa.Double))


@statement
def U_RENEW_GIVEN(sa: ModuleType, db: ModuleType) -> Any:
    """Renew a lease until ``exp`` (an injected clock's time)."""
    return _renew(sa, db, sa.bindparam("exp", type_=sa.Double))


# -- reports and events ------------------------------------------------------------------


@statement
def I_REPORTS(sa: ModuleType, db: ModuleType) -> Any:
    """New reports."""
    return sa.insert(db.reports_table)


@statement
def I_EVENTS(sa: ModuleType, db: ModuleType) -> Any:
    """New events."""
    return sa.insert(db.events_table)


@statement
def S_REPORTS(sa: ModuleType, db: ModuleType) -> Any:
    """A run's reports after seq ``after`` in the order they were written, each with its
    seq (which names it in an error, and is its position)."""
    r = db.reports_table.c
    columns = (r.seq, r.member, r.step, r.time, r.score, r.metrics)
    after = (r.run_id == sa.bindparam("r")) & (r.seq > sa.bindparam("after"))
    return sa.select(*columns).where(after).order_by(r.seq)


@statement
def S_EVENTS(sa: ModuleType, db: ModuleType) -> Any:
    """A run's events after seq ``after`` in the order they were written, each with its
    seq (its position)."""
    e = db.events_table.c
    columns = (e.seq, e.kind, e.member, e.step, e.data, e.time)
    after = (e.run_id == sa.bindparam("r")) & (e.seq > sa.bindparam("after"))
    return sa.select(*columns).where(after).order_by(e.seq)


# -- pins and collected checkpoints --------------------------------------------------------


@statement
def I_PIN(sa: ModuleType, db: ModuleType) -> Any:
    """A member's pin on a checkpoint."""
    return sa.insert(db.pins_table)


@statement
def D_PIN(sa: ModuleType, db: ModuleType) -> Any:
    """End a member's pin."""
    p = db.pins_table
    return sa.delete(p).where(p.c.run_id == sa.bindparam("r"), p.c.member == sa.bindparam("m"))


@statement
def S_COLLECTED(sa: ModuleType, db: ModuleType) -> Any:
    """A checkpoint, if it was collected."""
    c = db.collected_table.c
    return sa.select(c.checkpoint).where(
        c.run_id == sa.bindparam("r"), c.checkpoint == sa.bindparam("c")
    )


@statement
def S_USED(sa: ModuleType, db: ModuleType) -> Any:
    """Which of the checkpoints ``c`` (a list) a member holds or pins."""
    m, p = db.members_table.c, db.pins_table.c
    return sa.union(
        sa.select(m.checkpoint).where(
            m.run_id == sa.bindparam("r"), m.checkpoint.in_(sa.bindparam("c", expanding=True))
        ),
        sa.select(p.checkpoint).where(
            p.run_id == sa.bindparam("r"), p.checkpoint.in_(sa.bindparam("c", expanding=True))
        ),
    )


@statement
def S_USED_ONE(sa: ModuleType, db: ModuleType) -> Any:
    """A row if a member holds or pins the checkpoint ``c``."""
    m, p = db.members_table.c, db.pins_table.c
    return sa.union_all(
        sa.select(m.id).where(m.run_id == sa.bindparam("r"), m.checkpoint == sa.bindparam("c")),
        sa.select(p.member).where(p.run_id == sa.bindparam("r"), p.checkpoint == sa.bindparam("c")),
    ).limit(1)


@statement
def I_COLLECTED_SQLITE(sa: ModuleType, db: ModuleType) -> Any:
    """Collected checkpoints, each once (SQLite's ``INSERT ... ON CONFLICT DO NOTHING``)."""
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(db.collected_table).on_conflict_do_nothing()


@statement
def I_COLLECTED_POSTGRESQL(sa: ModuleType, db: ModuleType) -> Any:
    """Collected checkpoints, each once (PostgreSQL's ``ON CONFLICT DO NOTHING``)."""
    from sqlalchemy.dialects import postgresql  # a SQLite process need not load it

    return postgresql.insert(db.collected_table).on_conflict_do_nothing()
