"""The population's datastore (see :class:`Store` for the contract).

:class:`SQLStore` and the store server (:class:`RemoteStore`,
:class:`StoreServer`) are imported on first use, so that importing genepool does not import
SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from genepool._lazy import lazy_attributes
from genepool.store._base import History, HistoryAfter, Lease, Store, WorkerInfo
from genepool.store._open import check_url, open_store
from genepool.store.memory import MemoryStore

if TYPE_CHECKING:
    from genepool.store.server import RemoteStore, StoreServer
    from genepool.store.sql import SQLStore

__all__ = [
    "History",
    "HistoryAfter",
    "Lease",
    "MemoryStore",
    "RemoteStore",
    "SQLStore",
    "Store",
    "StoreServer",
    "WorkerInfo",
    "check_url",
    "open_store",
]

_LAZY = {
    "SQLStore": "genepool.store.sql",
    "RemoteStore": "genepool.store.server",
    "StoreServer": "genepool.store.server",
}
__getattr__ = lazy_attributes(__name__, globals(), _LAZY, keep=False)
