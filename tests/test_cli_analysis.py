"""The command line that reads a run back: export, replay, report, tensorboard, and status
while the run is still going."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from genepool.analysis import Schedule
from genepool.analysis._tensorboard import run_folder
from tests.test_cli import TOML, config_file, run_cli, table_rows, trainable_file

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "examples" / "toy.py"


pytestmark = pytest.mark.usefixtures("clean_imports")


@pytest.fixture
def finished(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """A run made with ``genepool run`` (4 members, 12 steps, SQLite): its script, store
    and what the command printed."""
    script = trainable_file(tmp_path)
    config = config_file(tmp_path, TOML)
    code, out, err = run_cli(capsys, "run", f"{script}:train", "--config", str(config))
    assert code == 0, err
    return {
        "script": script,
        "storage": f"sqlite:///{tmp_path / 'pbt.db'}",
        "printed": json.loads(out.strip().splitlines()[-1]),
    }


def last_json(out: str) -> Any:
    return json.loads(out.strip().splitlines()[-1])


# -- export and replay -------------------------------------------------------------------


def test_export_then_replay_reproduces_the_best_members_score(finished, tmp_path, capsys):
    storage, printed = finished["storage"], finished["printed"]
    path = tmp_path / "schedule.json"
    code, out, err = run_cli(capsys, "export", "--storage", storage, "-o", str(path))
    assert code == 0, err
    assert str(path) in out
    schedule = Schedule.load(path)
    assert schedule.member == printed["best_member"]
    assert schedule.final_step == 12
    assert schedule.metric == "score"
    assert schedule.score == pytest.approx(printed["best_score"])
    assert schedule == gp.Result.open(storage).schedule()

    code, out, err = run_cli(
        capsys, "replay", f"{finished['script']}:train", "--schedule", str(path), "--json"
    )
    assert code == 0, err
    replayed = last_json(out)
    assert replayed["score"] == pytest.approx(printed["best_score"], rel=1e-12)
    assert replayed["expected"] == pytest.approx(printed["best_score"], rel=1e-12)
    assert replayed["step"] == 12
    assert len(replayed["scores"]) == 12
    assert replayed["seed"] == 0
    assert replayed["member"] == printed["best_member"]
    assert replayed["hparams"] == pytest.approx(schedule.at(12))

    code, out, err = run_cli(
        capsys, "replay", f"{finished['script']}:train", "--schedule", str(path), "--steps", "5"
    )
    assert code == 0, err
    assert out.startswith("score = ")
    assert "after 5 steps (seed 0)" in out
    assert f"member {printed['best_member']} reached" in out


def test_export_prints_json_and_takes_any_member(finished, capsys):
    storage = finished["storage"]
    result = gp.Result.open(storage)
    code, out, err = run_cli(capsys, "export", "--storage", storage, "--member", "2")
    assert code == 0, err
    assert Schedule.from_json(out) == result.schedule(2)
    code, out, err = run_cli(capsys, "export", "--storage", storage, "--member", "9")
    assert code == 2
    assert "'member'" in err


def test_the_toys_schedule_replayed_from_the_command_line(tmp_path, capsys):
    toy_module = _load(TOY)
    result = toy_module.run_variant("pbt", 0)
    path = tmp_path / "toy.json"
    result.schedule().save(path)
    code, out, err = run_cli(capsys, "replay", f"{TOY}:Toy", "--schedule", str(path), "--json")
    assert code == 0, err
    replayed = last_json(out)
    assert replayed["score"] == pytest.approx(result.best.score, rel=1e-12, abs=1e-15)
    assert replayed["metric"] == "Q"
    assert replayed["scores"] == pytest.approx(
        [s for _, s, _ in result.ancestry_scores()], rel=1e-12, abs=1e-15
    )


def _load(path: Path) -> Any:
    from genepool.cli import load_trainable

    _, module = load_trainable(f"{path}:Toy")
    return module


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        pytest.param(("export", "--storage", "sqlite:///{tmp}/typo.db"), "--storage", id="no-db"),
        pytest.param(
            ("replay", "{script}:train", "--schedule", "{tmp}/none.json"),
            "--schedule",
            id="no-schedule-file",
        ),
        pytest.param(
            ("replay", "{script}:train", "--schedule", "{tmp}/foreign.json"),
            "not a genepool schedule",
            id="foreign-schedule",
        ),
        pytest.param(
            ("replay", "{script}:nope", "--schedule", "{tmp}/schedule.json"),
            "genepool replay",
            id="unknown-trainable",
        ),
        pytest.param(
            ("replay", "{script}:train", "--schedule", "{tmp}/schedule.json", "--steps", "-2"),
            "'steps'",
            id="negative-steps",
        ),
        pytest.param(
            ("report", "--storage", "sqlite:///{tmp}/typo.db"), "--storage", id="report-no-db"
        ),
        pytest.param(
            ("tensorboard", "--storage", "sqlite:///{tmp}/typo.db", "--logdir", "{tmp}/tb"),
            "--storage",
            id="tensorboard-no-db",
        ),
    ],
)
def test_a_bad_command_exits_with_code_2_naming_the_problem(tmp_path, capsys, argv, named):
    script = trainable_file(tmp_path)
    (tmp_path / "foreign.json").write_text('{"lr": 0.1}')
    Schedule.from_dict(
        {"format": "genepool.schedule", "version": 1, "final_step": 4, "metric": "score",
         "changes": [{"step": 0, "hparams": {"lr": 0.1}, "member": 0, "generation": 0,
                      "cause": "start"}]}
    ).save(tmp_path / "schedule.json")  # fmt: skip
    args = [a.format(tmp=tmp_path, script=script) for a in argv]
    code, out, err = run_cli(capsys, *args)
    assert code == 2, (out, err)
    assert err.startswith("genepool: error:"), err
    assert named in err, err
    assert not (tmp_path / "typo.db").exists()


def test_a_store_with_several_runs_needs_the_run_named(tmp_path, capsys):
    script = trainable_file(tmp_path)
    config = config_file(tmp_path, TOML)
    for name in ("first", "second"):
        argv = ["--name", name, "--population", "2"]
        code, _, err = run_cli(capsys, "run", f"{script}:train", "--config", str(config), *argv)
        assert code == 0, err
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    code, _, err = run_cli(capsys, "export", "--storage", storage)
    assert code == 2
    assert "--run" in err
    assert "'first'" in err
    code, out, err = run_cli(capsys, "export", "--storage", storage, "--run", "second")
    assert code == 0, err
    assert Schedule.from_json(out).run == "second"


# -- report ------------------------------------------------------------------------------


def test_report_writes_one_html_file(finished, tmp_path, capsys):
    output = tmp_path / "out" / "report.html"
    code, out, err = run_cli(capsys, "report", "--storage", finished["storage"], "-o", str(output))
    assert code == 0, err
    assert f"written to {output}" in out
    html = output.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html")
    assert "<svg" in html
    assert "Lineage" in html
    assert "genepool report: run" in html
    assert 'src="http' not in html, "self-contained: nothing fetched"


def test_report_png_figures(finished, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    figures = tmp_path / "figures"
    argv = ["report", "--storage", finished["storage"], "-o", str(tmp_path / "r.html")]
    code, out, err = run_cli(capsys, *argv, "--png", str(figures))
    assert code == 0, err
    pngs = sorted(figures.glob("*.png"))
    assert pngs
    assert f"{len(pngs)} figures written to {figures}" in out
    assert {"scores.png", "lineage.png"} <= {p.name for p in pngs}
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- tensorboard ---------------------------------------------------------------------------


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def approx(pairs: list[tuple[int, float]]) -> Any:
    """Equal steps and values as float32 (TensorBoard stores scalars in 32 bits)."""
    return [(s, pytest.approx(v, rel=1e-6)) for s, v in pairs]


def assert_logged(logdir: Path, result: gp.Result) -> None:
    """Every member's reports once each, and every member's lineage as one curve."""
    for member in result.members:
        got = scalars(logdir / run_folder(member.id))
        mine = [(r.step, r.metrics["score"]) for r in result.reports if r.member == member.id]
        assert got["score"] == approx(mine)
        lineage = scalars(logdir / "lineage" / run_folder(member.id))
        line = result.ancestry_scores(member.id)
        assert lineage["score"] == approx([(s, v) for s, v, _ in line])
        assert [s for s, _ in lineage["hparams/lr"]] == list(range(1, 13))


@pytest.mark.parametrize("follow", [False, True], ids=["once", "follow-an-ended-run"])
def test_tensorboard_writes_members_and_lineages(finished, tmp_path, capsys, follow):
    pytest.importorskip("tensorboardX")
    logdir = tmp_path / "tb"
    argv = ["tensorboard", "--storage", finished["storage"], "--logdir", str(logdir)]
    code, out, err = run_cli(capsys, *argv, *(["--follow", "--every", "0.01"] if follow else []))
    assert code == 0, err
    assert "48 reports of 4 members" in out
    assert_logged(logdir, gp.Result.open(finished["storage"]))


def test_tensorboard_without_tensorboardx_names_the_extra(finished, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    argv = ["tensorboard", "--storage", finished["storage"], "--logdir", str(tmp_path / "tb")]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert "genepool[tensorboard]" in err


# -- while the run is going -----------------------------------------------------------------


def cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genepool.cli", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_status_export_report_and_tensorboard_read_a_run_that_is_still_going(tmp_path, monkeypatch):
    """Called from inside the trainable, mid-run: the store is that of an unfinished run."""
    pytest.importorskip("tensorboardX")
    monkeypatch.setenv("COLUMNS", "160")
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    seen: dict[str, Any] = {}
    follower: list[subprocess.Popen[str]] = []

    def train(member: gp.Member) -> None:
        state = member.restore()
        x = 0.0 if state is None else float(state)
        while member.running:
            x += float(member.hparams["lr"]) * (1.0 - x)
            member.report(score=x, state=x)
            if member.id == 0 and member.step == 6 and "status" not in seen:
                # another process reads the store of the run going on in this one
                seen["status"] = cli("status", "--storage", storage, cwd=tmp_path)
                seen["export"] = cli("export", "--storage", storage, cwd=tmp_path)
                mid = str(tmp_path / "mid.html")
                seen["report"] = cli("report", "--storage", storage, "-o", mid, cwd=tmp_path)
                seen["population"] = gp.Result.open(storage).population
                # and one follows it to the end, appending as it goes
                follower.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "genepool.cli", "tensorboard", "--storage",
                         storage, "--logdir", str(tmp_path / "tb"), "--follow",
                         "--every", "0.05"],
                        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                    )
                )  # fmt: skip

    result = gp.run(
        train,
        gp.Space(lr=gp.Float(0.05, 0.5)),
        metric="score",
        population=4,
        ready=gp.Every(4),
        budget=gp.Budget(steps=12),
        seed=3,
        storage=storage,
    )
    (proc,) = follower
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]

    assert all(m.status == "active" for m in seen["population"]), "the run was going"
    status = seen["status"]
    assert status.returncode == 0, status.stderr[-3000:]
    rows = table_rows(status.stdout)
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3]
    assert all(r[1].startswith("active") for r in rows)
    assert {int(r[2]) for r in rows} == {4}, "every member had made its first checkpoint"

    export = seen["export"]
    assert export.returncode == 0, export.stderr[-3000:]
    mid_run = Schedule.from_json(export.stdout)
    assert mid_run.final_step == 4
    assert mid_run.member == seen["population"].best().id

    report = seen["report"]
    assert report.returncode == 0, report.stderr[-3000:]
    assert "<svg" in (tmp_path / "mid.html").read_text(encoding="utf-8")

    assert f"{len(result.reports)} reports of 4 members" in out
    assert_logged(tmp_path / "tb", result)


def test_following_a_run_that_stopped_short_ends_on_ctrl_c_with_the_lineages(
    tmp_path, capsys, monkeypatch
):
    pytest.importorskip("tensorboardX")
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"

    def train(member: gp.Member) -> None:
        x = member.restore() or 0.0
        while member.running:
            x += float(member.hparams["lr"])
            member.report(score=x, state=x)
            if member.id == 1 and member.step == 6:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the run stops, members active

    result = gp.run(
        train,
        gp.Space(lr=gp.Float(0.05, 0.5)),
        metric="score",
        population=3,
        ready=gp.Every(4),
        budget=gp.Budget(steps=12),
        seed=0,
        storage=storage,
    )
    assert result.stop_reason == "interrupted"
    polls: list[float] = []
    real_sleep = time.sleep

    def ctrl_c(seconds: float) -> None:
        if threading.current_thread() is not threading.main_thread():
            real_sleep(seconds)  # another test's leftover thread: not the command's wait
            return
        polls.append(seconds)
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", ctrl_c)
    logdir = tmp_path / "tb"
    argv = ["tensorboard", "--storage", storage, "--logdir", str(logdir), "--follow"]
    code, out, err = run_cli(capsys, *argv, "--every", "2")
    assert code == 0, err
    assert polls == [2.0], "it waited for more, as the run had not ended"
    assert "stopped following" in err
    assert f"run 'run' written to {logdir}" in out
    for member in result.members:
        line = result.ancestry_scores(member.id)
        got = scalars(logdir / "lineage" / run_folder(member.id))["score"]
        assert got == approx([(s, v) for s, v, _ in line])
