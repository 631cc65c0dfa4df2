"""A durable store in a SQL database through SQLAlchemy Core: SQLite or PostgreSQL.

SQLite (a file) is the embedded default: every process of one machine opens the same file.
PostgreSQL serves workers on several machines. Both keep the contract of
:class:`~genepool.store.Store`, and behave as :class:`~genepool.store.MemoryStore` does.
``SQLStore(url)`` opens the store of the URL's database.

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

Where each part lives, one thing per module:

========================================  ==============================================
:mod:`genepool.store._sqlstore`           what both stores share (:class:`SQLStore`)
:mod:`genepool.store._sqlite`             SQLite's claims, commits and renewals: serialized
:mod:`genepool.store._postgresql`         PostgreSQL's: ``SKIP LOCKED``
:mod:`genepool.store._sqlcommit`          a commit's writes
:mod:`genepool.store._snapshots`          the snapshot cache
:mod:`genepool.store._statements`         the statements, declared once, and their compilation
:mod:`genepool.store._sqlschema`          the schema, URLs, engines, schema versions
:mod:`genepool.store._codec`              the exact JSON codec
:mod:`genepool.store._sqlrows`            what each table's rows hold
:mod:`genepool.store._transactions`       transactions, and the database's errors
:mod:`genepool.store._sqlite_file`        the SQLite file: network filesystems, writer queue
========================================  ==============================================

The rules every backend keeps are beside the contract: :mod:`genepool.store._claims`,
:mod:`genepool.store._commits`, :mod:`genepool.store._leases`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from genepool._lazy import lazy_attributes

# each registers itself with SQLStore, which makes the one a URL names
from genepool.store._postgresql import CLOCK_MARGIN_SECONDS, PostgreSQLStore
from genepool.store._sqlite import SQLiteStore
from genepool.store._sqlite_file import NETWORK_FILESYSTEMS, sqlite_connect_args, sqlite_pragmas
from genepool.store._sqlstore import SQLStore, TxKind
from genepool.store._statements import Compiled

if TYPE_CHECKING:
    from genepool.store._sqlschema import SCHEMA_VERSION, URL_MUST

__all__ = [
    "CLOCK_MARGIN_SECONDS",
    "NETWORK_FILESYSTEMS",
    "SCHEMA_VERSION",
    "URL_MUST",
    "Compiled",
    "PostgreSQLStore",
    "SQLStore",
    "SQLiteStore",
    "TxKind",
    "sqlite_connect_args",
    "sqlite_pragmas",
]

# with the schema, which imports SQLAlchemy (a SQLite worker never does): read when asked
__getattr__ = lazy_attributes(
    __name__,
    globals(),
    {"SCHEMA_VERSION": "genepool.store._sqlschema", "URL_MUST": "genepool.store._sqlschema"},
)
