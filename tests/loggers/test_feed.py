"""The feed: what every logger is sent, from gp.run (serial, two workers), ask/tell and an
export; a logger that fails is dropped with a warning and the run goes on."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

import genepool as gp
from genepool.loggers import Batch, LineagePoint, LogFeed, RunInfo
from tests.loggers._toy import SPACE, check_has_exploits, expected_lineage, own_scores, run_toy


class Keep:
    """A logger that keeps what it is sent."""

    def __init__(self) -> None:
        self.runs: list[RunInfo] = []
        self.batches: list[Batch] = []
        self.lineages: dict[int, list[LineagePoint]] = {}
        self.finished = 0

    def start(self, run: RunInfo) -> None:
        self.runs.append(run)

    def log(self, batch: Batch) -> None:
        self.batches.append(batch)

    def finish(self, lineages: Mapping[int, Sequence[LineagePoint]]) -> None:
        self.lineages = {m: list(points) for m, points in lineages.items()}
        self.finished += 1


class Fails:
    """A logger that raises in ``when`` (and counts its calls)."""

    def __init__(self, when: str) -> None:
        self.when = when
        self.calls: list[str] = []

    def _call(self, what: str) -> None:
        self.calls.append(what)
        if what == self.when:
            raise RuntimeError(f"{what} failed, see postgresql://user:hunter2@db/x")

    def start(self, run: RunInfo) -> None:
        self._call("start")

    def log(self, batch: Batch) -> None:
        self._call("log")

    def finish(self, lineages: Mapping[int, Sequence[LineagePoint]]) -> None:
        self._call("finish")


def check_kept(keep: Keep, result: gp.Result) -> None:
    """What ``keep`` was sent is the run: every report once, every event, the lineages."""
    assert len(keep.runs) == 1
    assert keep.finished == 1
    run = keep.runs[0]
    assert (run.name, run.metric, run.mode, run.seed) == (result.name, "score", "max", 3)
    points = [p for b in keep.batches for p in b.points]
    for m in result.population:  # the initial hparams: what trained its first step
        first = next(p for p in points if p.member == m.id)
        assert first.step == 1
        assert dict(run.members[m.id]) == dict(first.hparams)
    assert len(points) == len(result.reports)
    for m in result.population:
        mine = [(p.step, p.metrics["score"]) for p in points if p.member == m.id]
        assert mine == own_scores(result, m.id)
        assert all("note" not in p.metrics for p in points)  # text is not drawn
    events = [e for b in keep.batches for e in b.events]
    assert [(e.member, e.kind, e.step) for e in events] == [
        (e.member, e.kind, e.step) for e in result.events
    ]
    exploits = [e for e in events if e.kind == "exploit"]
    assert exploits
    assert all(e.donor is not None and e.hparams for e in exploits)
    for m in result.population:
        drawn = [(p.step, p.score, p.member) for p in keep.lineages[m.id]]
        assert drawn == expected_lineage(result, m.id)


def test_a_serial_run_sends_every_point_event_and_lineage(tmp_path: Path) -> None:
    keep = Keep()
    result = run_toy(tmp_path, [keep])
    check_has_exploits(result)
    check_kept(keep, result)
    # the hyperparameters of each point are those that trained its step
    points = [p for b in keep.batches for p in b.points if p.member == 0]
    line = result.lineage(0)
    if len(line.ancestors) == 1:  # never exploited: its own schedule throughout
        schedule = result.schedule(0)
        assert [dict(p.hparams) for p in points] == [schedule.at(p.step - 1) for p in points]


def test_two_workers_send_the_same(tmp_path: Path) -> None:
    keep = Keep()
    result = run_toy(tmp_path, [keep], workers=2)
    check_kept(keep, result)
    result.close()


def test_a_logger_that_raises_is_dropped_and_the_run_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loggers = [Fails("start"), Fails("log"), Fails("finish")]
    keep = Keep()
    with caplog.at_level(logging.WARNING, logger="genepool.loggers"):
        result = run_toy(tmp_path, [*loggers, keep])
    assert result.stop_reason == "budget"
    assert result.best.step == 12
    check_kept(keep, result)  # the others never stopped the one that works
    assert loggers[0].calls == ["start"]
    assert loggers[1].calls == ["start", "log"]
    assert loggers[2].calls[-1] == "finish"
    assert loggers[2].calls.count("finish") == 1
    warned = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warned) == 3
    assert all("hunter2" not in w and "***" in w for w in warned)  # no password shown
    assert all("Fails" in w for w in warned)


def test_a_logger_that_cannot_import_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Missing:
        def start(self, run: RunInfo) -> None:
            import genepool_no_such_module  # type: ignore[import-not-found]  # noqa: F401

        def log(self, batch: Batch) -> None:
            raise AssertionError("never called after a failed start")

        def finish(self, lineages: Mapping[int, Sequence[LineagePoint]]) -> None:
            raise AssertionError("never called after a failed start")

    with caplog.at_level(logging.WARNING, logger="genepool.loggers"):
        result = run_toy(tmp_path, [Missing()])
    assert result.best.step == 12
    assert any("ModuleNotFoundError" in r.getMessage() for r in caplog.records)


def test_ask_tell_sends_the_run_when_closed(tmp_path: Path) -> None:
    keep = Keep()
    with gp.AskTell(
        SPACE,
        metric="score",
        population=4,
        ready=gp.Every(2),
        budget=gp.Budget(steps=12),
        exploit=gp.Truncation(0.25),
        seed=3,
        loggers=[keep],
    ) as pbt:
        while (claim := pbt.ask()) is not None:
            with claim:
                x = claim.checkpoint.load() if claim.checkpoint else 0.0
                while not claim.ready:
                    x += claim.hparams["lr"]
                    claim.report(score=x)
                pbt.tell(claim, state=x)
        result = pbt.result()
    check_has_exploits(result)
    check_kept(keep, result)


def test_export_logs_afterwards_sends_the_same(tmp_path: Path) -> None:
    live = Keep()
    result = run_toy(tmp_path, [live], workers=2)
    result.close()
    later = Keep()
    with gp.Result.open(f"sqlite:///{tmp_path}/pbt.db", "toy") as opened:
        assert gp.export_logs(opened, [later]) == len(opened.reports)
        check_kept(later, opened)
    assert [p for b in later.batches for p in b.points] == [
        p for b in live.batches for p in b.points
    ]
    assert later.lineages == live.lineages


@pytest.mark.parametrize(
    ("loggers", "name"),
    [("mlflow", "loggers"), ([object()], "loggers[0]"), ([Keep(), 3], "loggers[1]")],
)
def test_loggers_that_are_not_loggers_are_refused(loggers: object, name: str) -> None:
    with pytest.raises(gp.InvalidArgumentError, match=re.escape(f"'{name}' parameter of run")):
        gp.run(
            lambda member: None,
            SPACE,
            metric="score",
            population=2,
            ready=gp.Every(2),
            budget=gp.Budget(steps=2),
            loggers=loggers,  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    ("module", "make", "extra"),
    [
        ("mlflow.tracking", lambda: gp.MLflowLogger(), "mlflow"),
        ("wandb", lambda: gp.WandbLogger(), "wandb"),
    ],
)
def test_without_its_library_a_logger_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, make: object, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(gp.MissingDependencyError, match=re.escape(f"genepool[{extra}]")):
        make()  # type: ignore[operator]


def test_a_failed_first_read_is_tried_again(tmp_path: Path) -> None:
    result = run_toy(tmp_path, [])

    class Flaky:
        """The run's store, whose first read of the run's settings fails."""

        def __init__(self) -> None:
            self.fails = 1

        def __getattr__(self, name: str) -> object:
            return getattr(result._store, name)

        def run_config(self, name: str) -> object:
            if self.fails:
                self.fails -= 1
                raise gp.StorageError("the disk went away for a moment")
            return result._store.run_config(name)

    keep = Keep()
    feed = LogFeed([keep], Flaky(), result.name)  # type: ignore[arg-type]
    with pytest.raises(gp.StorageError):
        feed.start()
    assert feed.poll() == 0  # nothing is sent to a logger that has not started
    assert keep.runs == []
    feed.finish()  # starts it now, sends every point, the lineages
    check_kept(keep, result)


def test_the_end_reads_the_run_once(tmp_path: Path) -> None:
    """Finishing sends what is left and the lineages from one read (the run waits for
    it): what was read before is kept, not read again."""
    result = run_toy(tmp_path, [])

    reads: list[tuple[int, int]] = []

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(result._store, name)

        def history(self, name: str) -> object:
            raise AssertionError("the feed reads on (history_after), not all again")

        def history_after(self, name: str, *, reports_after: int, events_after: int) -> object:
            reads.append((reports_after, events_after))
            return result._store.history_after(
                name, reports_after=reports_after, events_after=events_after
            )

    keep = Keep()
    feed = LogFeed([keep], Counting(), result.name)  # type: ignore[arg-type]
    feed.start()
    feed.poll()
    assert reads == [(-1, -1)]
    whole = result._store.history_after(result.name)
    feed.finish()  # reads on from where the poll ended: nothing new
    assert reads == [(-1, -1), (whole.reports_end, whole.events_end)]
    check_kept(keep, result)


def test_a_store_read_whole_each_time_sends_each_point_once(tmp_path: Path) -> None:
    """A store whose positions may be seen out of order (PostgreSQL) is read whole at
    each poll; what each member wrote beyond what was read of it is sent, once."""
    result = run_toy(tmp_path, [])

    class Whole:
        history_in_order = False

        def __getattr__(self, name: str) -> object:
            return getattr(result._store, name)

    keep = Keep()
    feed = LogFeed([keep], Whole(), result.name)  # type: ignore[arg-type]
    feed.start()
    assert feed.poll() == len(result.reports)
    assert feed.poll() == 0
    feed.finish()
    check_kept(keep, result)
