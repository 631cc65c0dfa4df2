"""examples/mlflow_pbt.py and examples/wandb_pbt.py run, and what they wrote reads back
with each member's lineage curve as the run has it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from genepool.loggers import RATE
from tests.loggers import test_wandb
from tests.loggers._toy import expected_lineage

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _example(name: str) -> object:
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


def test_the_mlflow_example(tmp_path: Path, file_store: str) -> None:
    pytest.importorskip("mlflow")
    example = _example("mlflow_pbt")
    result, line = example.main(file_store)  # type: ignore[attr-defined]
    assert any(e.kind == "exploit" for e in result.events)
    sent = expected_lineage(result, result.best.id, RATE)  # the logger's default rate
    assert line == [(s, v) for s, v, _ in sent]


def test_the_wandb_example(tmp_path: Path, offline: Path) -> None:
    pytest.importorskip("wandb")
    example = _example("wandb_pbt")
    result = example.main(offline)  # type: ignore[attr-defined]
    assert any(e.kind == "exploit" for e in result.events)
    test_wandb.check_written(offline, result)
