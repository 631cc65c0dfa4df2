"""The SQL store's schema in SQLAlchemy Core, and opening a database: its URL, its engine,
and creating, upgrading or refusing its schema (see :mod:`genepool.store.sql`).

Apart so that a process handed a SQLite store by its driver, with the statements compiled
already (:mod:`genepool.store._statements`), never imports SQLAlchemy (a third of a second
of a worker's start).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError

from genepool._errors import StorageError, invalid
from genepool._redact import redact_url
from genepool.store._sqlite_file import sqlite_connect_args, sqlite_pragmas

__all__ = [
    "SCHEMA_VERSION",
    "URL_MUST",
    "check_readable",
    "postgresql_engine",
    "sa_url",
    "setup",
    "setup_postgresql",
    "sqlite_connect",
    "sqlite_engine",
    "stored_identity",
]

log = logging.getLogger("genepool.store")

#: The version of the database layout this genepool writes. An older database is upgraded
#: when opened; a newer one is refused.
SCHEMA_VERSION = 2

#: What a SQL store's URL must be (in the error for one that is not).
URL_MUST = "a 'sqlite:///path' or 'postgresql://user@host/database' URL"

_SCHEMA_LOCK = 0x67656E65706F6F6C  # "genepool": PostgreSQL advisory lock while setting up

# -- schema ------------------------------------------------------------------------------

_metadata = MetaData()
_Seq = BigInteger().with_variant(Integer, "sqlite")  # SQLite: a rowid alias, monotonic

schema_version_table = Table(
    "genepool_schema_version",
    _metadata,
    Column("version", Integer, nullable=False),
)
#: Facts about the database itself: ``identity``, its random id (``Store.identity``).
meta_table = Table(
    "genepool_meta",
    _metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
runs_table = Table(
    "genepool_runs",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("config", Text, nullable=False),
    Column("config_hash", String(64), nullable=False),
    Column("created", Double, nullable=False),
    Column("version", BigInteger, nullable=False),
)
members_table = Table(
    "genepool_members",
    _metadata,
    Column("run_id", Integer, ForeignKey("genepool_runs.id"), primary_key=True),
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
    Column("view", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("ready_count", Integer, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("pending", Boolean, nullable=False),
    Column("checkpoint", String(255), nullable=True),
    Column("token", BigInteger, nullable=False),
    Column("expires", Double, nullable=True),
    Column("holder", Text, nullable=True),
    Index("ix_genepool_members_version", "run_id", "version"),
    Index("ix_genepool_members_checkpoint", "run_id", "checkpoint"),
)
reports_table = Table(
    "genepool_reports",
    _metadata,
    Column("seq", _Seq, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("genepool_runs.id"), nullable=False),
    Column("member", Integer, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("time", Double, nullable=False),
    Column("score", Double, nullable=True),
    Column("metrics", Text, nullable=False),
    Index("ix_genepool_reports_run", "run_id", "seq"),
)
events_table = Table(
    "genepool_events",
    _metadata,
    Column("seq", _Seq, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("genepool_runs.id"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("member", Integer, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("data", Text, nullable=False),
    Column("time", Double, nullable=False),
    Index("ix_genepool_events_run", "run_id", "seq"),
)
pins_table = Table(
    "genepool_pins",
    _metadata,
    Column("run_id", Integer, ForeignKey("genepool_runs.id"), primary_key=True),
    Column("member", Integer, primary_key=True, autoincrement=False),
    Column("checkpoint", String(255), nullable=False),
    Index("ix_genepool_pins_checkpoint", "run_id", "checkpoint"),
)
collected_table = Table(
    "genepool_collected",
    _metadata,
    Column("run_id", Integer, ForeignKey("genepool_runs.id"), primary_key=True),
    Column("checkpoint", String(255), primary_key=True),
)


def _upgrade_0_to_1(conn: Connection) -> None:
    """Version 0: the layout before it had a version. Add whatever is missing."""
    _metadata.create_all(conn, checkfirst=True)


def _upgrade_1_to_2(conn: Connection) -> None:
    """Version 2 keeps the database's identity in ``genepool_meta`` (made by :func:`setup`
    once the table is there)."""
    meta_table.create(conn, checkfirst=True)


#: ``_UPGRADES[v]`` brings a database from version ``v`` to ``v + 1``, in the transaction
#: that opens it.
_UPGRADES: dict[int, Callable[[Connection], None]] = {0: _upgrade_0_to_1, 1: _upgrade_1_to_2}

#: The database's identity (a query).
IDENTITY = select(meta_table.c.value).where(meta_table.c.key == "identity")


# -- URLs and engines --------------------------------------------------------------------


def sa_url(url: str, owner: str = "SQLStore", name: str = "url", must: str = URL_MUST) -> sa.URL:
    """The SQLAlchemy URL for a user's URL: ``postgresql://`` means psycopg 3.

    A URL SQLAlchemy cannot read (a port that is not a number, a driver it does not
    know) is an :class:`~genepool.InvalidArgumentError` that shows it with its password
    hidden.
    """
    shown = repr(redact_url(url))
    try:
        u = sa.make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise invalid(owner, name, must, shown) from None
    backend = u.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
        u = u.set(drivername="postgresql")
    if backend == "postgresql" and u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    if backend not in ("sqlite", "postgresql"):
        raise invalid(owner, name, must, shown)
    try:
        u.get_dialect()  # 'postgresql+nosuchdriver://'
    except ArgumentError as err:
        raise invalid(owner, name, must, f"{shown} ({err})") from None
    return u


def sqlite_engine(url: sa.URL, echo: bool, *, read_only: bool = False) -> Engine:
    """An engine for a SQLite file (no pool: the store holds its one connection).
    ``read_only``: ``url`` opens the file ``mode=ro``, and nothing is set that the file
    keeps (its journal mode)."""
    engine = sa.create_engine(
        url,
        echo=echo,
        poolclass=sa.pool.NullPool,  # one connection per store and process, held open
        connect_args=sqlite_connect_args(),
    )
    in_memory = url.database in (None, "", ":memory:")

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        sqlite_pragmas(dbapi_connection, url, in_memory=in_memory, read_only=read_only)

    if not read_only:

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # queue for the write lock up front

    return engine


def postgresql_engine(url: sa.URL, echo: bool, *, read_only: bool = False) -> Engine:
    """An engine for a PostgreSQL database (a pool: threads may share it); with
    ``read_only`` its transactions are read-only (the server refuses any write)."""
    engine = sa.create_engine(url, echo=echo, pool_size=5, max_overflow=10)
    if read_only:
        return engine.execution_options(postgresql_readonly=True)
    return engine


def sqlite_connect(engine: Engine) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments of ``sqlite3.connect`` that ``engine`` connects with: a process
    handed them opens the same database without SQLAlchemy."""
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    return tuple(cargs), dict(cparams)


# -- opening: create, upgrade or refuse --------------------------------------------------


def setup_postgresql(engine: Engine, where: str, url: str) -> str:
    """:func:`setup` under an advisory lock: stores opened at once set up one at a time."""
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
        return setup(conn, where, url)


def setup(conn: Connection, where: str, url: str) -> str:
    """Create the tables in an empty database, upgrade an older one, refuse a newer;
    ``where`` names the store in logs, ``url`` the database in errors. Returns the
    database's identity, made (a random id) the first time."""
    found = stored_version(conn)
    if found is None:
        _metadata.create_all(conn)
        conn.execute(sa.insert(schema_version_table), {"version": SCHEMA_VERSION})
        log.info("created the genepool schema (version %d) in %s", SCHEMA_VERSION, where)
    elif found > SCHEMA_VERSION:
        raise _newer(url, found)
    elif found < SCHEMA_VERSION:
        for version in range(found, SCHEMA_VERSION):
            _UPGRADES[version](conn)
        conn.execute(sa.delete(schema_version_table))
        conn.execute(sa.insert(schema_version_table), {"version": SCHEMA_VERSION})
        log.info(
            "upgraded the genepool schema of %s from version %d to %d",
            where,
            found,
            SCHEMA_VERSION,
        )
    identity = stored_identity(conn)
    if identity is None:
        identity = uuid.uuid4().hex
        conn.execute(sa.insert(meta_table), {"key": "identity", "value": identity})
    return identity


def stored_identity(conn: Connection) -> str | None:
    """The database's identity; ``None`` before it has one (a schema older than version
    2, not yet upgraded)."""
    if not sa.inspect(conn).has_table(meta_table.name):
        return None
    found = conn.execute(IDENTITY).scalar()
    return None if found is None else str(found)


def check_readable(conn: Connection, where: str) -> int:
    """The schema version of a database opened read-only, which nothing changes: an
    older one is read as it is (it is upgraded when a run opens it to write); one with no
    genepool schema, or a newer one, is refused. ``where`` names the store in errors."""
    found = stored_version(conn)
    if found is None:
        raise StorageError(
            f"{where}: the database holds no genepool runs (it has no genepool schema), "
            "and was opened only to read, so nothing was created in it. Fix: check the URL "
            "(for PostgreSQL, also the schema its search_path names)."
        )
    if found > SCHEMA_VERSION:
        raise _newer(where, found)
    return found


def _newer(url: str, found: int) -> StorageError:
    return StorageError(
        f"the database {url} has genepool schema version {found}, "
        f"newer than version {SCHEMA_VERSION}, the newest this genepool knows: "
        "upgrade genepool to open it"
    )


def stored_version(conn: Connection) -> int | None:
    """The schema version in the database: ``None`` for an empty database, 0 for one
    from before versions were stored."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(schema_version_table.name):
        return 0 if inspector.has_table(runs_table.name) else None
    found = conn.execute(select(sa.func.max(schema_version_table.c.version))).scalar()
    return 0 if found is None else int(found)
