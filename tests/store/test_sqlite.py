"""The store contract on a SQLite file (:class:`~genepool.store.SQLStore`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import genepool as gp
from genepool.store import Store
from tests.store.test_contract import StoreContract, sql_store, sqlite_url


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store(self, clock: gp.ManualClock, request: pytest.FixtureRequest) -> Iterator[Store]:
        yield from sql_store(sqlite_url(request), clock)
