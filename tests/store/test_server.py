"""The store contract through the store server (:class:`~genepool.store.RemoteStore`): a
Ray actor on the session's test cluster, on a new SQLite file (skipped without Ray)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import genepool as gp
from genepool.store import Store
from tests.store.test_contract import StoreContract, sqlite_url


@pytest.mark.ray
class TestStoreServer(StoreContract):
    @pytest.fixture
    def store(self, clock: gp.ManualClock, request: pytest.FixtureRequest) -> Iterator[Store]:
        """The server reads the test's manual clock through a file (``FileClock``), which
        ``clock.advance`` moves."""
        request.getfixturevalue("ray_cluster")
        from genepool.store.server import RemoteStore
        from tests._ray_cluster import FileClock

        shared = FileClock(request.getfixturevalue("tmp_path") / "clock", clock.now())

        def advance(seconds: float) -> None:
            gp.ManualClock.advance(clock, seconds)
            shared.set(clock.now())

        request.getfixturevalue("monkeypatch").setattr(clock, "advance", advance)
        store = RemoteStore.start(sqlite_url(request), clock=shared)
        yield store
        store.shutdown()
