"""``genepool run --logger`` (or ``loggers`` in the config file) and ``genepool
export-logs``: the runs they write read back and checked as the Python API's are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import genepool as gp
from tests.loggers import test_mlflow, test_wandb
from tests.test_cli import TOML, config_file, run_cli, trainable_file

pytest.importorskip("mlflow")
pytest.importorskip("wandb")
pytestmark = pytest.mark.usefixtures("clean_imports")


def test_run_with_loggers_then_export_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], file_store: str, offline: Path
) -> None:
    script = trainable_file(tmp_path)
    config = config_file(tmp_path, 'loggers = ["wandb:pbt"]\n' + TOML)
    code, out, err = run_cli(capsys, "run", f"{script}:train", "--config", str(config), "--quiet")
    assert code == 0, err
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    with gp.Result.open(storage) as result:
        assert any(e.kind == "exploit" for e in result.events)
        test_wandb.check_written(offline, result)  # the config file's logger
        argv = ["export-logs", "--storage", storage, "--logger", f"mlflow:{file_store}"]
        code, out, err = run_cli(capsys, *argv, "--log-rate", "all")
        assert code == 0, err
        printed = json.loads(out.strip().splitlines()[-1])
        assert printed["reports"] == len(result.reports)
        assert printed["failed"] == []
        test_mlflow.check_written(file_store, "run", result, rate=None)  # every point


def test_the_flag_wins_over_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], file_store: str, offline: Path
) -> None:
    script = trainable_file(tmp_path)
    config = config_file(tmp_path, 'loggers = ["wandb:pbt"]\n' + TOML)
    argv = ["run", f"{script}:train", "--config", str(config), "--quiet"]
    code, _, err = run_cli(capsys, *argv, "--logger", f"mlflow:{file_store}")
    assert code == 0, err
    assert not list(offline.glob("wandb/offline-run-*"))
    with gp.Result.open(f"sqlite:///{tmp_path / 'pbt.db'}") as result:
        test_mlflow.check_written(file_store, "run", result)


@pytest.mark.parametrize("where", ["flag", "file"])
def test_a_logger_name_that_names_none_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    script = trainable_file(tmp_path)
    extra = 'loggers = ["tensorboard:x"]\n' if where == "file" else ""
    config = config_file(tmp_path, extra + TOML)
    argv = ["run", f"{script}:train", "--config", str(config), "--check"]
    code, _, err = run_cli(capsys, *argv, *(["--logger", "tensorboard:x"] * (where == "flag")))
    assert code == 2
    named = "'--logger[0]'" if where == "flag" else "'loggers[0]'"
    assert named in err
    assert "'tensorboard:x'" in err
    assert "mlflow[:TRACKING_URI] or wandb[:PROJECT]" in err
    assert not (tmp_path / "pbt.db").exists()


def test_export_logs_exits_1_when_a_logger_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    script = trainable_file(tmp_path)
    config = config_file(tmp_path, TOML)
    code, _, err = run_cli(capsys, "run", f"{script}:train", "--config", str(config), "--quiet")
    assert code == 0, err
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    argv = ["export-logs", "--storage", storage, "--logger", "mlflow:http://u:hunter2@127.0.0.1:9"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 1
    printed = json.loads(out.strip().splitlines()[-1])
    assert len(printed["failed"]) == 1
    assert "hunter2" not in out + err


def test_a_log_rate_that_is_no_rate_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = trainable_file(tmp_path)
    config = config_file(tmp_path, TOML)
    argv = ["run", f"{script}:train", "--config", str(config), "--check", "--logger", "mlflow"]
    code, _, err = run_cli(capsys, *argv, "--log-rate", "0")
    assert code == 2
    assert "'rate' parameter of MLflowLogger" in err
    with pytest.raises(SystemExit) as exited:  # argparse's own refusal
        run_cli(capsys, *argv, "--log-rate", "fast")
    assert exited.value.code == 2
    assert "'fast' is not a number of points a second" in capsys.readouterr().err
    assert not (tmp_path / "pbt.db").exists()
