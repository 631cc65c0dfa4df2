"""The population's datastore (see :class:`Store` for the contract).

:class:`SQLStore`, :func:`open_store` and the store server (:class:`RemoteStore`,
:class:`StoreServer`) are imported on first use, so that importing genepool does not import
SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from genepool.store._base import History, Lease, Store, WorkerInfo
from genepool.store.memory import MemoryStore

if TYPE_CHECKING:
    from genepool.store.server import RemoteStore, StoreServer
    from genepool.store.sql import SQLStore, open_store

__all__ = [
    "History",
    "Lease",
    "MemoryStore",
    "RemoteStore",
    "SQLStore",
    "Store",
    "StoreServer",
    "WorkerInfo",
    "open_store",
]

_LAZY = {"SQLStore", "open_store"}
_LAZY_SERVER = {"RemoteStore", "StoreServer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from genepool.store import sql

        return getattr(sql, name)
    if name in _LAZY_SERVER:
        from genepool.store import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
