"""A real local Ray cluster for the tests: a head node and one worker node, one CPU each.

Started once per test session (the ``ray_cluster`` fixture in ``tests/conftest.py``),
connected to by address (never ``"auto"``: other Ray instances may run on this machine),
with Ray's node health checks shortened so that a removed node is declared dead quickly.
Without Ray the tests that need it are skipped, except under ``CI``, where they fail.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

#: Ray's node health checks, shortened (but not so short that a busy machine fails them).
SYSTEM_CONFIG = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 5,
}
#: A custom resource every node has, for the tests of custom resources.
SLOTS = {"slot": 4.0}


def import_ray_or_skip() -> Any:
    """The ``ray`` module; skips the test without it (fails it when ``CI`` is set)."""
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("Ray tests cannot run on CI: ray is not installed (genepool[ray])")
        pytest.skip("Ray tests skipped: ray is not installed (pip install 'genepool[ray]')")
    return ray


class LocalCluster:
    """The test cluster: ``head`` (the driver connects to it) and one worker node."""

    def __init__(self) -> None:
        ray = import_ray_or_skip()
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "resources": SLOTS,
                "include_dashboard": False,
                "_system_config": SYSTEM_CONFIG,
            },
        )
        self.worker = self.add_worker_node()
        ray.init(address=self.cluster.address, log_to_driver=False)

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    @property
    def head_id(self) -> str:
        return str(self.cluster.head_node.node_id)

    @property
    def worker_id(self) -> str:
        return str(self.worker.node_id)

    def add_worker_node(self) -> Any:
        self.worker = self.cluster.add_node(num_cpus=1, resources=SLOTS)
        return self.worker

    def replace_worker_node(self) -> None:
        """Kill the worker node (every process on it), wait until Ray has declared it dead,
        and start another in its place."""
        import ray

        gone = self.worker_id
        self.cluster.remove_node(self.worker, allow_graceful=False)
        deadline = time.monotonic() + 120
        while any(n["NodeID"] == gone and n.get("Alive") for n in ray.nodes()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray never declared node {gone} dead")
            time.sleep(0.1)
        self.add_worker_node()

    def alive(self) -> int:
        import ray

        return sum(1 for n in ray.nodes() if n.get("Alive"))

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()


class FileClock:
    """A clock read from a file: lets a Ray actor (the store server) see the time a test
    sets with a :class:`~genepool.ManualClock` in the test process."""

    def __init__(self, path: str | os.PathLike[str], start: float = 0.0) -> None:
        self.path = str(path)
        self.set(start)

    def set(self, now: float) -> None:
        tmp = self.path + ".tmp"
        Path(tmp).write_text(repr(float(now)), encoding="utf-8")
        os.replace(tmp, self.path)

    def now(self) -> float:
        return float(Path(self.path).read_text(encoding="utf-8"))
