"""Checkpoint retention: each member keeps ``gp.run(keep=)`` previous checkpoints beyond
its current one (default 1), which collection never deletes, and no more: a run's
checkpoints on disk stay within ``members x (keep + 1)`` plus live pins.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from genepool._collect import Collector
from genepool.checkpoints import LocalCheckpoints
from genepool.checkpoints._codec import decode
from tests.executors import _trainables as M
from tests.test_resume import checkpoint_dirs

POPULATION = 4


def run(tmp_path: Path, **options: Any) -> gp.Result:
    settings: dict[str, Any] = {
        "metric": "score",
        "population": POPULATION,
        "ready": gp.Every(4),
        "budget": gp.Budget(steps=24),
        "seed": 0,
        "storage": f"sqlite:///{tmp_path / 'pbt.db'}",
        "initial": [{"lr": 0.02}, {"lr": 0.05}, {"lr": 0.2}, {"lr": 0.45}],
    }
    settings.update(options)
    return gp.run(M.Climber, M.space(str(tmp_path / "log.txt")), **settings)


def kept(result: gp.Result) -> tuple[set[str], set[str]]:
    """The members' current checkpoints, and the previous ones they keep."""
    current = {m.checkpoint.id for m in result.population if m.checkpoint is not None}
    previous = {p.id for m in result.population for p in m.previous}
    return current, previous


def on_disk(tmp_path: Path) -> set[str]:
    found, leftovers = checkpoint_dirs(tmp_path / "pbt.db.checkpoints")
    assert leftovers == []
    return found


def test_keep_defaults_to_one_previous_checkpoint_per_member(tmp_path: Path):
    result = run(tmp_path, exploit=None)
    assert [[p.step for p in m.previous] for m in result.population] == [[20]] * POPULATION
    current, previous = kept(result)
    assert on_disk(tmp_path) == current | previous
    store = LocalCheckpoints(tmp_path / "pbt.db.checkpoints", read_only=True)
    for m in result.population:  # the previous one is whole: a member could go on from it
        assert decode(store.get(m.previous[0].id))["state"]["steps"] == 20


def test_keep_zero_keeps_only_the_current_checkpoints(tmp_path: Path):
    result = run(tmp_path, keep=0)
    assert [e for e in result.events if e.kind == "exploit"], "the run should exploit"
    assert all(m.previous == () for m in result.population)
    current, _ = kept(result)
    assert on_disk(tmp_path) == current


def test_keep_two_keeps_two_previous_checkpoints(tmp_path: Path):
    result = run(tmp_path, keep=2, exploit=None)
    assert [[p.step for p in m.previous] for m in result.population] == [[20, 16]] * POPULATION
    current, previous = kept(result)
    assert len(previous) == 2 * POPULATION
    assert on_disk(tmp_path) == current | previous


@pytest.mark.parametrize("keep", [0, 1, 2])
def test_disk_stays_bounded_on_a_long_run_with_many_exploits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: int
):
    counts: list[int] = []
    collect = Collector.collect

    def counting(self: Collector) -> None:
        collect(self)
        found, _ = checkpoint_dirs(tmp_path / "pbt.db.checkpoints")  # spares come and go
        counts.append(len(found))  # right after each collection

    monkeypatch.setattr(Collector, "collect", counting)
    result = run(
        tmp_path,
        keep=keep,
        population=6,
        initial=None,
        ready=gp.Every(1),
        exploit=gp.Truncation(0.25),
        budget=gp.Budget(steps=90),
    )
    assert result.stop_reason == "budget"
    exploits = sum(e.kind == "exploit" for e in result.events)
    assert exploits >= 50, exploits
    assert len(counts) >= 20
    # a current and `keep` previous ones each; a pin is on a member's current or previous one
    assert max(counts) <= 6 * (keep + 1)
    current, previous = kept(result)
    assert on_disk(tmp_path) == current | previous


@pytest.mark.parametrize("bad", [-1, 1.5, "1", True, None])
def test_keep_must_be_an_int_of_zero_or_more(tmp_path: Path, bad: object):
    with pytest.raises(gp.InvalidArgumentError, match=r"'keep'.*keep=1") as err:
        run(tmp_path, keep=bad)
    assert repr(bad) in str(err.value)
    assert not os.path.exists(tmp_path / "pbt.db")


@pytest.mark.parametrize("keep", [0, 2])
def test_keep_is_a_config_setting_of_the_command_line(tmp_path: Path, capsys, keep: int):
    from tests.test_cli import TOML, config_file, run_cli, trainable_file

    config = config_file(tmp_path, TOML.replace("seed = 0", f"seed = 0\nkeep = {keep}"))
    code, _, err = run_cli(
        capsys, "run", f"{trainable_file(tmp_path)}:train", "--config", str(config)
    )
    assert code == 0, err
    with gp.Result.open(f"sqlite:///{tmp_path / 'pbt.db'}") as result:
        assert [len(m.previous) for m in result.population] == [keep] * 4
