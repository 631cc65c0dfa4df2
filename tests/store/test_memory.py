"""The store contract on :class:`~genepool.store.MemoryStore`."""

from __future__ import annotations

import pytest

import genepool as gp
from genepool.store import MemoryStore, Store
from tests.store.test_contract import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self, clock: gp.ManualClock) -> Store:
        return MemoryStore(clock=clock)
