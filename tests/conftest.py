"""Shared test set-up: hypothesis profiles (CI: no deadline, fixed randomness)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests._ray_cluster import LocalCluster

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalCluster]:
    """A local Ray cluster of two nodes (tests/_ray_cluster.py), shared by the session."""
    cluster = LocalCluster()
    yield cluster
    cluster.shutdown()


@pytest.fixture
def clean_imports(tmp_path: Path) -> Iterator[None]:
    """Undo what importing a trainable from a file in ``tmp_path`` leaves behind
    (``genepool run file.py:name`` imports it and puts its folder on sys.path)."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        if str(getattr(sys.modules[name], "__file__", "")).startswith(str(tmp_path)):
            del sys.modules[name]
