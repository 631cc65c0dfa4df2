"""WandbLogger offline: a run written as W&B offline run files, read back from them (no
network), each member's curves and lineage checked against the run's own."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import genepool as gp
from genepool.loggers import RATE
from tests.loggers._toy import check_has_exploits, expected_lineage, own_scores, run_toy
from tests.loggers._wandb_files import OfflineRun, offline_runs, read_run

pytest.importorskip("wandb")


def finished_runs(folder: Path, timeout: float = 20.0) -> dict[str, OfflineRun]:
    """The offline runs under ``folder`` once each has its exit record: W&B's service
    writes the files on its own thread, so the last records may land a moment after
    ``finish()`` returned."""
    deadline = time.monotonic() + timeout
    while True:
        runs = offline_runs(folder)
        if all(run.exited for run in runs.values()) or time.monotonic() > deadline:
            return runs
        time.sleep(0.1)


def check_written(folder: Path, result: gp.Result, rate: float | None = RATE) -> None:
    """The run as W&B's files hold it: as a logger with ``rate`` sends it."""
    runs = finished_runs(folder)
    names = {f"{result.name}/member_{m.id:03d}": m.id for m in result.population}
    assert sorted(runs) == sorted(names)
    for name, member in names.items():
        run: OfflineRun = runs[name]
        assert run.exited
        assert run.group == result.name
        assert run.config["genepool/member"] == member
        assert run.axes[result.metric] == "step"  # its own steps, which go back at exploits
        assert run.axes["hparams/*"] == "step"
        assert run.axes["lineage/*"] == "lineage/step"
        rows = run.rows
        own = [(r["step"], r[result.metric]) for r in rows if result.metric in r]
        assert own == own_scores(result, member, rate)
        for hp in result.population[member].hparams:  # initial = what trained step 1
            first = next(r for r in rows if f"hparams/{hp}" in r)
            assert run.config[hp] == pytest.approx(first[f"hparams/{hp}"])
        events = [e for e in result.events if e.member == member]
        logged = [(r["step"], r["event/kind"]) for r in rows if "event/kind" in r]
        assert logged == [(e.step, e.kind) for e in events]
        exploits = [r["event/exploit"] for r in rows if "event/exploit" in r]
        assert exploits == [e.data["donor"] for e in events if e.kind == "exploit"]
        line = [
            (r["lineage/step"], float(r[f"lineage/{result.metric}"]), r["lineage/member"])
            for r in rows
            if "lineage/step" in r
        ]
        assert line == expected_lineage(result, member, rate)
        assert run.summary["lineage"].startswith(
            f"member {result.lineage(member).ancestors[0]} (steps 1-"
        )


def test_an_offline_run(tmp_path: Path, offline: Path) -> None:
    logger = gp.WandbLogger(project="pbt", mode="offline", dir=offline)
    result = run_toy(tmp_path, [logger])
    check_has_exploits(result)
    check_written(offline, result)
    # the installed packages are listed once, by the first member's run (all are made in
    # the same process: each would list the same)
    listed = [
        read_run(next(folder.glob("run-*.wandb"))).name
        for folder in offline.glob("wandb/offline-run-*")
        if (folder / "files" / "requirements.txt").exists()
    ]
    assert listed == [f"{result.name}/member_000"]
    # listed as the logger was made (not in the run), as W&B lists them: name==version
    (first,) = list(offline.glob("wandb/offline-run-*/files/requirements.txt"))
    import wandb

    lines = first.read_text().splitlines()
    assert f"wandb=={wandb.__version__}" in lines
    assert lines == sorted(set(lines))


def test_two_workers_then_an_export(tmp_path: Path, offline: Path) -> None:
    result = run_toy(tmp_path, [gp.WandbLogger(project="pbt", dir=offline)], workers=2)
    check_written(offline, result)
    result.close()
    later = tmp_path / "later"
    with gp.Result.open(f"sqlite:///{tmp_path}/pbt.db", "toy") as opened:
        gp.export_logs(opened, [gp.WandbLogger(project="pbt", mode="offline", dir=later)])
        check_written(later, opened)


def test_a_disabled_logger_writes_nothing_and_the_run_goes_on(
    tmp_path: Path, offline: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logger = gp.WandbLogger(project="pbt", mode="disabled", dir=offline)
    with caplog.at_level("WARNING", logger="genepool.loggers"):
        result = run_toy(tmp_path, [logger])
    assert result.best.step == 12
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]
    assert not list(offline.glob("wandb/*run-*"))


def test_a_wrong_mode_is_refused() -> None:
    with pytest.raises(gp.InvalidArgumentError, match="'mode' parameter of WandbLogger"):
        gp.WandbLogger(mode="offlien")


def test_lineage_points_bounds_each_lineage_curve(tmp_path: Path, offline: Path) -> None:
    logger = gp.WandbLogger(project="pbt", mode="offline", dir=offline, lineage_points=3, rate=None)
    result = run_toy(tmp_path, [logger])
    runs = finished_runs(offline)
    for m in result.population:
        rows = runs[f"{result.name}/member_{m.id:03d}"].rows
        line = [
            (r["lineage/step"], float(r[f"lineage/{result.metric}"]))
            for r in rows
            if "lineage/step" in r
        ]
        expected = [(s, v) for s, v, _ in expected_lineage(result, m.id)]
        assert line == [expected[0], expected[6], expected[11]]  # 3 points, 5.5 apart
        own = [(r["step"], r[result.metric]) for r in rows if result.metric in r]
        assert own == own_scores(result, m.id)  # its own points: all of them


def test_a_wandb_without_the_lighter_settings_gets_its_defaults() -> None:
    from genepool.loggers._wandb import _first_run_settings, _same_process_settings

    class OldSettings:
        def __init__(self, **settings: object) -> None:
            raise ValueError(f"unknown settings {sorted(settings)}")

    class OldWandb:
        Settings = OldSettings

    assert _same_process_settings(OldWandb()) is None
    assert _first_run_settings(OldWandb()) is None
    import wandb

    made = _same_process_settings(wandb)
    assert made.x_save_requirements is False
    assert made.x_disable_stats is True
    assert made.x_disable_machine_info is True
    assert made.disable_git is True
    assert _first_run_settings(wandb).x_save_requirements is False
