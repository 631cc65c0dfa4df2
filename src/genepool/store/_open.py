"""The one place a store is opened from a URL: :func:`open_store`, and :func:`check_url`,
which says whether a URL can be opened without connecting to anything.

``gp.run``, :meth:`genepool.Result.open`, :func:`genepool.load_best` and every ``genepool``
command open their store here, so that a URL gets the same answer wherever it is given.
"""

from __future__ import annotations

import urllib.parse

from genepool._errors import invalid
from genepool._redact import redact_url
from genepool.clock import Clock
from genepool.store._base import Store
from genepool.store.memory import MemoryStore

__all__ = ["URL_MUST", "check_url", "open_store"]

URL_MUST = "'memory', a 'sqlite:///path' or a 'postgresql://user@host/database' URL"


def check_url(
    url: object, *, read_only: bool = False, owner: str = "open_store", name: str = "url"
) -> None:
    """Refuse a store URL that cannot be opened as asked, before anything is created.

    A ``'sqlite:///'`` URL needs a file path (``'sqlite:///'`` alone or ``:memory:`` would
    be a database private to one connection, which no other worker and no later run sees:
    use ``'memory'`` for that); a URL that opens its database read-only (``?mode=ro``) is
    refused to a run, which writes. Nothing is connected to: a database that does not exist
    is the opener's to report (read back) or create (a run).

    Raises:
        InvalidArgumentError: The URL is not a store's, or cannot be opened as asked.
    """
    if not isinstance(url, str):
        raise invalid(owner, name, f"{URL_MUST}, or a Store", type(url).__name__)
    if url == "memory":
        return
    from genepool.store import _sqlschema

    shown = repr(redact_url(url))
    parsed = _sqlschema.sa_url(url, owner, name, URL_MUST)
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        raise invalid(
            owner,
            name,
            "a SQLite URL with a file path",
            shown,
            "Fix: 'sqlite:///pbt.db' (a file, which other workers and a resumed run see), "
            "or 'memory' for a store in this process only.",
        )
    if not read_only and _opens_read_only(database, dict(parsed.query)):
        raise invalid(
            owner,
            name,
            "a database it can write to",
            f"{shown}, which opens it read-only (mode=ro)",
            "Fix: drop mode=ro from the URL (a run writes its members to the store); "
            "reading a run back (gp.Result.open) never writes anyway.",
        )


def _opens_read_only(database: str, query: dict[str, object]) -> bool:
    """Whether a SQLite URL asks for its file read-only: ``?mode=ro`` in the URL's query,
    or in the ``file:`` URI it names."""
    modes = [query.get("mode")]
    if database.startswith("file:"):
        modes += urllib.parse.parse_qs(urllib.parse.urlsplit(database).query).get("mode", [])
    return "ro" in modes or ["ro"] in modes


def open_store(
    url_or_store: Store | str,
    *,
    clock: Clock | None = None,
    read_only: bool = False,
    owner: str = "open_store",
    name: str = "url_or_store",
) -> Store:
    """A store from a URL: ``"memory"``, ``"sqlite:///path"`` or ``"postgresql://..."``.

    A :class:`~genepool.store.Store` is returned as it is. ``read_only``: to read a run
    back; nothing is written, and a SQLite file that does not exist is a
    :class:`~genepool.StorageError` (never created). Otherwise a missing SQLite file is
    created, with its schema.

    Args:
        url_or_store: The store, or where it lives.
        clock: Times leases (see :class:`~genepool.store.SQLStore`).
        read_only: Open a database to read it only.
        owner: Who asked, for the error messages (``"run"``).
        name: The argument that gave the URL, for the error messages (``"storage"``).

    Raises:
        InvalidArgumentError: The URL is not a store's (see :func:`check_url`).
        StorageError: The database cannot be opened (see :class:`~genepool.store.SQLStore`).

    Example:
        >>> open_store("memory")  # doctest: +ELLIPSIS
        MemoryStore(identity='...')
    """
    if isinstance(url_or_store, Store):
        return url_or_store
    check_url(url_or_store, read_only=read_only, owner=owner, name=name)
    if url_or_store == "memory":
        return MemoryStore(clock=clock)
    from genepool.store.sql import SQLStore

    return SQLStore(url_or_store, clock=clock, read_only=read_only)
