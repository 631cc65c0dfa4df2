"""A vectorised population too large for its device's memory is refused up front, with
the estimate; the estimate counts what a member holds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import genepool as gp
from genepool import vectorised as gpv
from genepool._errors import InvalidArgumentError
from genepool.vectorised import _memory
from genepool.vectorised._inputs import Steps, probe
from genepool.vectorised._memory import SavedTensors, check_fits, member_bytes

from .test_population import SGD_SPACE, data, evaluate, loss, mlp, settings

EVAL = settings()["eval_data"]


def test_saved_tensors_counts_each_storage_once_and_leaves_the_excluded_out() -> None:
    w = torch.randn(50, 50, requires_grad=True)
    x = torch.randn(8, 50)
    with SavedTensors(exclude=[w]) as saved:
        h = x @ w  # saves x (for w's gradient) and w (excluded)
        y = h.exp()  # saves its result
        (y * 2).sum()
    assert saved.bytes == x.nbytes + y.nbytes


def test_a_members_share_counts_its_tensors_and_activations() -> None:
    steps = Steps(loss=loss, data=data, evaluate=evaluate, eval_data=EVAL, metric="val")
    probed = probe(mlp, None, steps, SGD_SPACE, "sgd", {})
    params = sum(p.nbytes for p in mlp().parameters())
    batch = 8 * 5 * 8 + 8 * 1 * 8  # 8 rows of x (5 float64) and y (1 float64)
    assert probed.member_bytes > 3 * params + params + batch  # and the activations
    assert probed.member_bytes < 20 * (params + batch)
    assert probed.device == torch.device("cpu")


def test_the_share_grows_with_the_batch() -> None:
    shares = [
        member_bytes(
            params={"w": torch.zeros(10)},
            buffers={},
            optimizer_state={},
            activations=a,
            batch=torch.zeros(b),
        )
        for a, b in ((0, 0), (100, 0), (100, 10))
    ]
    assert shares == [120, 320, 360]


def test_a_population_too_large_is_refused_before_the_run_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = 10_000_000
    monkeypatch.setattr(_memory, "available_bytes", lambda device: free)
    db = tmp_path / "pbt.db"
    with pytest.raises(InvalidArgumentError) as caught:
        gpv.run(**settings(population=1_000_000, storage=f"sqlite:///{db}"))
    message = str(caught.value)
    assert "population=1,000,000" in message
    assert "per member" in message
    assert "9.5 MiB is free" in message
    assert "Fix: a population of at most" in message
    assert not db.exists()
    fits = int(re.search(r"at most ([\d,]+)", message).group(1).replace(",", ""))  # type: ignore[union-attr]
    check_fits(fits, _share(), torch.device("cpu"))  # the fix given fits
    with pytest.raises(InvalidArgumentError):
        check_fits(fits + 1, _share(), torch.device("cpu"))


def _share() -> int:
    steps = Steps(loss=loss, data=data, evaluate=evaluate, eval_data=EVAL, metric="val")
    return probe(mlp, None, steps, SGD_SPACE, "sgd", {}).member_bytes


def test_a_population_given_by_its_initial_configs_is_checked_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_memory, "available_bytes", lambda device: 1000)
    initial = [{"lr": 0.1, "momentum": 0.5}] * 3
    db = tmp_path / "pbt.db"
    space = gp.Space(lr=gp.Float(0.01, 0.3), momentum=gp.Float(0.1, 0.9))
    args = settings(storage=f"sqlite:///{db}", population=None, initial=initial, space=space)
    with pytest.raises(InvalidArgumentError, match="population=3,"):
        gpv.run(**args)
    assert not db.exists()


def test_an_unknown_device_memory_is_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_memory, "available_bytes", lambda device: None)
    check_fits(10**12, 10**12, torch.device("cpu"))
