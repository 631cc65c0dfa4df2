"""Transactions: one interface over the two ways the SQL store talks to its database, and
what the database's errors mean.

:class:`Tx` runs the store's statements (:mod:`genepool.store._statements`) with named
parameters: :class:`AlchemyTx` through SQLAlchemy (PostgreSQL), :class:`SQLiteTx` straight
on the sqlite3 connection with the statements' compiled SQL (SQLite, where SQLAlchemy's
per-call work would cost more than SQLite's own). :func:`database_error` turns a
database's error into a :class:`~genepool.StorageFaultError` (to wait out) or a
:class:`~genepool.StorageError` (the URL or its rights are wrong).
"""

from __future__ import annotations

import sqlite3
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from genepool._errors import StorageError, StorageFaultError
from genepool._redact import redact_url
from genepool.store._statements import Compiled, Statement

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = [
    "AlchemyTx",
    "SQLiteTx",
    "Tx",
    "database_error",
    "db_errors",
    "integrity_errors",
]


class Tx(ABC):
    """An open transaction that runs the module's Core statements with named parameters."""

    @abstractmethod
    def all(self, stmt: Statement, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """Every row of a query."""

    @abstractmethod
    def run(self, stmt: Statement, params: Mapping[str, Any]) -> int:
        """Execute a statement; the id of the row it inserted (when it inserted one)."""

    @abstractmethod
    def many(self, stmt: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
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

    def first(self, stmt: Statement, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """The first row of a query, ``None`` if there is none."""
        rows = self.all(stmt, params)
        return rows[0] if rows else None

    def scalar(self, stmt: Statement, params: Mapping[str, Any]) -> Any:
        """The first column of the first row (``None`` if there is no row)."""
        row = self.first(stmt, params)
        return None if row is None else row[0]


class AlchemyTx(Tx):
    """A transaction on a SQLAlchemy connection (PostgreSQL)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def all(self, stmt: Statement, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        return self.conn.execute(stmt.core, dict(params)).all()

    def run(self, stmt: Statement, params: Mapping[str, Any]) -> int:
        core = stmt.core
        result = self.conn.execute(core, dict(params))
        if core.is_insert and result.inserted_primary_key:
            return int(result.inserted_primary_key[0])
        return 0

    def many(self, stmt: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        self.conn.execute(stmt.core, [dict(r) for r in rows])

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    @property
    def active(self) -> bool:
        return self.conn.in_transaction()


class SQLiteTx(Tx):
    """A transaction run straight on the sqlite3 connection.

    The statements are the same Core statements, compiled once by SQLAlchemy's SQLite
    dialect; executing them on the DBAPI connection skips SQLAlchemy's per-call work
    (15-20 microseconds a statement, several times SQLite's own).
    """

    def __init__(self, raw: Any, compiled: Callable[[Statement, Mapping[str, Any]], Compiled]):
        self.raw = raw
        self._compiled = compiled

    def _args(self, stmt: Statement, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        sql, order, fixed = self._compiled(stmt, params)
        return sql, [params[k] if k in params else fixed[k] for k in order]

    def all(self, stmt: Statement, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        sql, args = self._args(stmt, params)
        rows: list[Sequence[Any]] = self.raw.execute(sql, args).fetchall()
        return rows

    def run(self, stmt: Statement, params: Mapping[str, Any]) -> int:
        sql, args = self._args(stmt, params)
        return int(self.raw.execute(sql, args).lastrowid or 0)

    def many(self, stmt: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        sql, order, fixed = self._compiled(stmt, rows[0])
        self.raw.executemany(sql, [[r[k] if k in r else fixed[k] for k in order] for r in rows])

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        self.raw.rollback()  # a no-op when SQLite already ended the transaction

    @property
    def active(self) -> bool:
        return bool(self.raw.in_transaction)


def db_errors() -> tuple[type[BaseException], ...]:
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


def database_error(what: str, err: BaseException) -> StorageError:
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


def integrity_errors() -> tuple[type[BaseException], ...]:
    exc = sys.modules.get("sqlalchemy.exc")
    if exc is None:
        return (sqlite3.IntegrityError,)
    return (sqlite3.IntegrityError, exc.IntegrityError)
