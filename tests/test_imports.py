"""What importing genepool loads: a worker process imports only the worker's side."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import genepool as gp

DRIVER_SIDE = (
    "genepool._run",
    "genepool._replay",
    "genepool.result",
    "genepool.analysis",
    "genepool.checkpoints.fsspec",
    "genepool.executors.ray",
    "sqlalchemy",
)


def loaded_after(code: str) -> list[str]:
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps([m for m in {DRIVER_SIDE!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    found: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


def test_a_worker_process_imports_no_driver_module():
    code = (
        "import cloudpickle\n"
        "import genepool.executors._child\n"
        "from genepool.executors.processes import worker_main\n"
        "import genepool.store.sql\n"
    )
    assert loaded_after(code) == []


def test_the_driver_side_is_loaded_on_first_use():
    assert "genepool._run" in loaded_after("import genepool as gp\ngp.run")
    for name in ("run", "load_best", "replay", "ReplayResult", "Result", "MemberResult"):
        assert callable(getattr(gp, name)) or isinstance(getattr(gp, name), type)
    assert gp.RayExecutor.__module__ == "genepool.executors.ray"
    assert gp.FsspecCheckpoints.__module__ == "genepool.checkpoints.fsspec"
    assert {"run", "replay", "RayExecutor"} <= set(dir(gp))
    assert set(gp.__all__) <= set(dir(gp))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        gp.nothing  # noqa: B018
