"""TensorBoard logs, read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from genepool.analysis import TensorBoardLog, to_tensorboard
from genepool.analysis._tensorboard import run_folder

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _load_toy() -> Any:
    path = Path(__file__).resolve().parents[2] / "examples" / "toy.py"
    spec = importlib.util.spec_from_file_location("genepool_example_toy_tensorboard", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


toy = _load_toy()


def read(folder: Path) -> Any:
    acc = event_accumulator.EventAccumulator(
        str(folder), size_guidance={"scalars": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    acc = read(folder)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def texts(folder: Path, tag: str) -> list[tuple[int, str]]:
    acc = read(folder)
    name = f"{tag}/text_summary"
    if name not in acc.Tags()["tensors"]:
        return []
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(name)]


def approx(pairs: list[tuple[int, float]]) -> Any:
    """Equal steps and values as float32 (TensorBoard stores scalars in 32 bits)."""
    return [(s, pytest.approx(v, rel=1e-6, abs=1e-7)) for s, v in pairs]


@pytest.fixture(scope="module")
def toy_run() -> gp.Result:
    result: gp.Result = toy.run_variant("pbt", 0)
    return result


def test_every_member_has_its_own_reports_and_the_hyperparameters_that_trained_them(
    toy_run, tmp_path
):
    logdir = to_tensorboard(toy_run, tmp_path / "tb")
    frame = toy_run.history_frame()
    for member in toy_run.members:
        got = scalars(logdir / run_folder(member.id))
        rows = frame[frame["member"] == member.id]
        steps = [int(s) for s in rows["step"]]
        assert len(steps) == toy.STEPS
        for tag, column in [("Q", "Q"), ("theta0", "theta0"), ("hparams/h0", "hp.h0")]:
            assert got[tag] == approx(list(zip(steps, rows[column], strict=True))), tag
        assert set(got) == {"Q", "theta0", "theta1", "hparams/h0", "hparams/h1"}


def test_a_lineage_reads_as_one_curve_across_exploits(toy_run, tmp_path):
    logdir = to_tensorboard(toy_run, tmp_path / "tb")
    best = toy_run.best.id
    got = scalars(logdir / "lineage" / run_folder(best))
    line = toy_run.ancestry_scores(best)
    assert [s for s, _ in got["Q"]] == list(range(1, toy.STEPS + 1))
    assert got["Q"] == approx([(step, score) for step, score, _ in line])
    assert got["lineage/member"] == approx([(step, float(who)) for step, _, who in line])
    assert len({who for _, _, who in line}) == 2, "the line passes through both members"
    schedule = toy_run.schedule(best)
    for name in ("h0", "h1"):
        expected = [(s, schedule.at(s - 1)[name]) for s in range(1, toy.STEPS + 1)]
        assert got[f"hparams/{name}"] == approx(expected)
    (note,) = texts(logdir / "lineage" / run_folder(best), "lineage")
    assert note[1].startswith("the best member; its line: member ")
    other = 1 - best
    (note,) = texts(logdir / "lineage" / run_folder(other), "lineage")
    assert note[1].startswith("a member;")


def test_exploits_and_stops_are_written_as_text(toy_run, tmp_path):
    logdir = to_tensorboard(toy_run, tmp_path / "tb")
    written = [t for m in toy_run.members for t in texts(logdir / run_folder(m.id), "events")]
    exploits = [e for e in toy_run.events if e.kind == "exploit"]
    assert exploits
    assert sum("exploited member" in text for _, text in written) == len(exploits)
    assert sum(text.startswith("stopped: budget") for _, text in written) == 2


def test_writing_again_replaces_what_was_written(toy_run, tmp_path):
    to_tensorboard(toy_run, tmp_path / "tb")
    logdir = to_tensorboard(toy_run, tmp_path / "tb")
    reports = [r for r in toy_run.reports if r.member == 0]
    assert len(scalars(logdir / run_folder(0))["Q"]) == len(reports)
    assert len(scalars(logdir / "lineage" / run_folder(0))["Q"]) == toy.STEPS
    other = logdir / run_folder(0) / "notes.txt"
    other.write_text("kept")
    to_tensorboard(toy_run, logdir)
    assert other.read_text() == "kept", "only genepool's own event files are replaced"


# -- appending while a run goes -----------------------------------------------------------


def test_a_log_appends_while_the_run_goes_and_holds_every_report_once(tmp_path):
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    log = TensorBoardLog(tmp_path / "tb")
    updates: list[int] = []

    def train(member: gp.Member) -> None:
        state = member.restore()
        x = 0.0 if state is None else float(state)
        while member.running:
            x += float(member.hparams["lr"]) * (1.0 - x)
            member.report(score=x, kind=member.hparams["kind"], state=x)
            if member.id == 2 and member.step in (3, 6, 11):
                # the store of the run going on, read as `genepool tensorboard --follow` does
                updates.append(log.update(gp.Result.open(storage)))

    result = gp.run(
        train,
        gp.Space(lr=gp.Float(0.05, 0.5), kind=gp.Choice(["a", "b"])),
        metric="score",
        population=3,
        ready=gp.Every(4),
        budget=gp.Budget(steps=12),
        seed=1,
        storage=storage,
    )
    updates.append(log.update(result))
    log.write_lineages(result)
    log.close()

    assert len(updates) >= 3
    assert updates[0] > 0, "the first update, mid-run, wrote what the store held then"
    assert sum(updates) == len(result.reports), "each report written once, none lost"
    for member in result.members:
        got = scalars(tmp_path / "tb" / run_folder(member.id))
        mine = [r for r in result.reports if r.member == member.id]
        assert got["score"] == approx([(r.step, r.metrics["score"]) for r in mine])
        assert "kind" not in got, "text metrics are no scalars"
        assert "hparams/kind" not in got
        assert "hparams/lr" in got
        lineage = scalars(tmp_path / "tb" / "lineage" / run_folder(member.id))
        assert [s for s, _ in lineage["score"]] == list(range(1, 13))


def test_without_tensorboardx_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(gp.MissingDependencyError, match=r"genepool\[tensorboard\]"):
        TensorBoardLog(tmp_path)


def test_only_numbers_become_scalars(tmp_path):
    class Mixed(gp.Trainable):
        def setup(self, hparams: Mapping[str, Any]) -> None:
            self.n = 0

        def step(self) -> dict[str, Any]:
            self.n += 1
            return {"score": self.n, "flag": True, "name": "x", "items": [1, 2]}

        def save(self) -> int:
            return self.n

        def load(self, state: int) -> None:
            self.n = state

    result = gp.run(
        Mixed,
        gp.Space(opt=gp.Choice(["sgd", "adam"]), width=gp.Int(1, 4)),
        metric="score",
        population=2,
        ready=gp.Every(2),
        budget=gp.Budget(steps=4),
        seed=0,
    )
    got = scalars(to_tensorboard(result, tmp_path) / run_folder(0))
    assert set(got) == {"score", "flag", "hparams/width"}
    assert got["flag"] == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0)]
