"""The population's datastore (see :class:`Store` for the contract)."""

from genepool.store._base import History, Lease, Store, WorkerInfo
from genepool.store.memory import MemoryStore

__all__ = ["History", "Lease", "MemoryStore", "Store", "WorkerInfo"]
