"""MemoryCheckpoints: the checkpoint contract (``contract.py``), and its ids."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from genepool.checkpoints import CheckpointStore, MemoryCheckpoints
from tests.checkpoints.contract import CheckpointContract


class TestMemoryCheckpoints(CheckpointContract):
    durable = False  # a new store is a new, empty memory

    @pytest.fixture
    def make_store(self) -> Callable[[], CheckpointStore]:
        return MemoryCheckpoints


def test_memory_checkpoints_ids_are_sequential():
    store = MemoryCheckpoints()
    assert [store.put("run", 0, 3, b"x") for _ in range(3)] == [
        "run/m0/s3-0",
        "run/m0/s3-1",
        "run/m0/s3-2",
    ]
