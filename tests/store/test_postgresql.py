"""The store contract on PostgreSQL (:class:`~genepool.store.SQLStore`): a fresh schema per
test, skipped when no server answers (failed when ``CI`` is set)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import genepool as gp
from genepool.store import Store
from tests.store.test_contract import StoreContract, postgres_url, sql_store


class TestPostgreSQLStore(StoreContract):
    @pytest.fixture
    def store(self, clock: gp.ManualClock, request: pytest.FixtureRequest) -> Iterator[Store]:
        yield from sql_store(postgres_url(request), clock)
