"""Schedule: lookup by step, JSON round trip, refusal of foreign files; on a real run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from genepool.analysis import Change, Schedule, ScheduleError

SCHEDULE = Schedule(
    changes=[
        Change(0, {"lr": 0.1, "opt": "sgd"}, 0, 0, "start"),
        Change(8, {"lr": 0.05, "opt": "adam"}, 3, 1, "exploit"),
        Change(12, {"lr": 0.06, "opt": "adam"}, 3, 1, "explore"),
    ],
    final_step=20,
    run="r",
    member=3,
    metric="acc",
    score=0.9,
    seed=7,
)


def test_at_is_the_value_that_trains_the_next_step() -> None:
    assert SCHEDULE.at(0)["lr"] == 0.1
    assert SCHEDULE.at(7)["lr"] == 0.1
    assert SCHEDULE.at(8)["lr"] == 0.05
    assert SCHEDULE.at(12)["lr"] == 0.06
    assert SCHEDULE.at(500)["opt"] == "adam"
    rows = SCHEDULE.per_step()
    assert len(rows) == 20
    assert rows[7] == {"step": 8, "lr": 0.1, "opt": "sgd"}
    assert rows[8]["lr"] == 0.05
    assert SCHEDULE.names == ["lr", "opt"]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_at_refuses_a_bad_step(bad: Any) -> None:
    with pytest.raises(gp.InvalidArgumentError, match="step"):
        SCHEDULE.at(bad)


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    SCHEDULE.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "genepool.schedule"
    assert data["version"] == 1
    back = Schedule.load(path)
    assert back == SCHEDULE
    assert back.at(9) == SCHEDULE.at(9)


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(gp.InvalidArgumentError, match="step 0"):
        Schedule(changes=[Change(1, {}, 0, 0, "start")], final_step=3)
    with pytest.raises(gp.InvalidArgumentError, match="sorted"):
        Schedule(
            changes=[
                Change(0, {}, 0, 0, "start"),
                Change(5, {}, 0, 0, "x"),
                Change(2, {}, 0, 0, "x"),
            ],
            final_step=9,
        )
    with pytest.raises(ScheduleError, match="not a genepool schedule"):
        Schedule.from_json('{"hello": 1}')
    with pytest.raises(ScheduleError, match="newer"):
        Schedule.from_dict({**SCHEDULE.to_dict(), "version": 99})
    with pytest.raises(ScheduleError, match="malformed"):
        Schedule.from_dict({**SCHEDULE.to_dict(), "changes": [{"step": 0}]})
    with pytest.raises(ScheduleError, match="JSON"):
        Schedule.from_json("{")
    assert issubclass(ScheduleError, ValueError)
    assert issubclass(ScheduleError, gp.GenepoolError)


class Climb(gp.Trainable):
    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x = 0.0
        self.apply_hparams(hparams)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.lr = hparams["lr"]

    def step(self) -> dict[str, float]:
        self.x += self.lr * (1.0 - self.x)
        return {"score": self.x}

    def save(self) -> dict[str, Any]:
        return {"x": self.x}

    def load(self, state: Mapping[str, Any]) -> None:
        self.x = state["x"]


@pytest.fixture(scope="module")
def result() -> gp.Result:
    return gp.run(
        Climb,
        gp.Space(lr=gp.Float(0.001, 0.2, log=True)),
        metric="score",
        population=6,
        ready=gp.Every(4),
        budget=gp.Budget(steps=40),
        seed=4,  # a run whose best member exploited along its line
    )


def test_a_real_runs_schedule_replays_to_its_final_score(result: gp.Result) -> None:
    schedule = result.schedule()
    assert schedule.member == result.best.id
    assert schedule.final_step == 40
    assert any(c.cause == "exploit" for c in schedule), "the run should have exploited"
    # Climb is deterministic: training with the schedule's values retraces the line
    x = 0.0
    for s in range(40):
        x += schedule.at(s)["lr"] * (1.0 - x)
    assert x == pytest.approx(result.best.score, rel=1e-12)
    scores = result.ancestry_scores()
    assert [s for s, _, _ in scores] == list(range(1, 41))
    assert scores[-1][1] == pytest.approx(result.best.score, rel=1e-12)


def test_history_frame_has_the_hparams_that_trained_each_report(result: gp.Result) -> None:
    frame = result.history_frame()
    assert {"member", "step", "time", "score", "hp.lr"} <= set(frame.columns)
    assert len(frame) == len(result.reports)
    # along the best line, the frame's lr agrees with the schedule at every step
    schedule = result.schedule()
    line = result.lineage()
    for step in (1, 10, 20, 33, 40):
        owner = line.owner(step)
        rows = frame[(frame.member == owner) & (frame.step == step)]
        assert schedule.at(step - 1)["lr"] in set(rows["hp.lr"])
    events = result.events_frame()
    assert set(events["kind"]) >= {"exploit", "stop"}
