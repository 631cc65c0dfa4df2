"""Replay: one fresh member trained with a schedule PBT found reproduces that member."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import genepool as gp
from genepool.analysis import Change, Schedule


def _load_toy() -> Any:
    path = Path(__file__).resolve().parents[2] / "examples" / "toy.py"
    spec = importlib.util.spec_from_file_location("genepool_example_toy_replay", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


toy = _load_toy()


def exploits(schedule: Schedule) -> int:
    return sum(1 for c in schedule.changes if c.cause == "exploit")


def line_scores(result: gp.Result, member: int | None = None) -> list[float]:
    return [score for _, score, _ in result.ancestry_scores(member)]


# -- the must-show: the toy -------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_replaying_the_toys_best_schedule_reproduces_its_final_score(seed, tmp_path):
    result = toy.run_variant("pbt", seed)
    schedule = result.schedule()
    assert exploits(schedule) >= 3, "a line without exploits would test nothing"
    path = tmp_path / "schedule.json"
    schedule.save(path)

    replayed = gp.replay(toy.Toy, path)  # through the exported file, as a user would

    assert replayed.step == toy.STEPS
    assert replayed.score is not None
    assert result.best.score is not None
    assert replayed.score == pytest.approx(result.best.score, rel=1e-12, abs=1e-15)
    assert replayed.expected == pytest.approx(result.best.score, rel=1e-12)
    assert list(replayed.scores) == pytest.approx(line_scores(result), rel=1e-12, abs=1e-15)
    assert replayed.metric == "Q"
    assert replayed.seed == seed
    assert replayed.hparams == schedule.at(toy.STEPS)
    assert np.array_equal(replayed.state["theta"], result.load()["theta"])


def test_the_schedule_not_a_fixed_setting_makes_the_toys_score():
    result = toy.run_variant("pbt", 0)
    schedule = result.schedule()
    fixed = Schedule(changes=[schedule.changes[0]], final_step=schedule.final_step, metric="Q")
    replayed, constant = gp.replay(toy.Toy, schedule), gp.replay(toy.Toy, fixed)
    assert replayed.score is not None
    assert constant.score is not None
    assert replayed.score > constant.score + 0.2  # h = (1, 0) alone stays far below 1.2


def test_replaying_any_members_line_reproduces_that_member():
    result = toy.run_variant("pbt", 3)
    for member in result.members:
        replayed = gp.replay(toy.Toy, result.schedule(member.id))
        assert replayed.score == pytest.approx(member.score, rel=1e-12, abs=1e-15)


# -- random streams, member ids and both APIs -------------------------------------------

SPACE = gp.Space(lr=gp.Float(0.01, 0.5, log=True), noise=gp.Float(0.01, 0.2))


class Noisy(gp.Trainable):
    """Draws from its member stream every step; its member id shifts its score."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x = float(self.member.rng.uniform(0.0, 0.1))  # a random initial state
        self.apply_hparams(hparams)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.lr, self.noise = float(hparams["lr"]), float(hparams["noise"])

    def hparams_in_effect(self) -> Mapping[str, Any]:
        return {"lr": self.lr, "noise": self.noise}

    def step(self) -> dict[str, float]:
        self.x += self.lr * (1.0 - self.x) + self.noise * float(self.member.rng.standard_normal())
        return {"score": self.x + 1e-3 * self.member.id, "who": float(self.member.id)}

    def save(self) -> dict[str, float]:
        return {"x": self.x}

    def load(self, state: Mapping[str, float]) -> None:
        self.x = float(state["x"])


class Rebuilt(Noisy):
    """No ``apply_hparams``: the library builds it again (``setup`` then ``load``)."""

    apply_hparams = gp.Trainable.apply_hparams

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x = float(self.member.rng.uniform(0.0, 0.1))
        self.lr, self.noise = float(hparams["lr"]), float(hparams["noise"])


def noisy_function(member: gp.Member) -> None:
    state = member.restore()
    x = float(member.rng.uniform(0.0, 0.1)) if state is None else float(state["x"])
    lr, noise = float(member.hparams["lr"]), float(member.hparams["noise"])
    while member.running:
        x += lr * (1.0 - x) + noise * float(member.rng.standard_normal())
        member.report(score=x + 1e-3 * member.id, state={"x": x})


TRAINABLES = [
    pytest.param(Noisy, id="class"),
    pytest.param(Rebuilt, id="class-rebuilt"),
    pytest.param(noisy_function, id="function"),
]


def run(trainable: Any, seed: int = 0, **options: Any) -> gp.Result:
    settings: dict[str, Any] = {
        "metric": "score",
        "population": 6,
        "ready": gp.Every(4),
        "budget": gp.Budget(steps=40),
        "exploit": gp.Truncation(0.34),
        "explore": gp.Perturb(resample=0.25),
        "seed": seed,
    }
    settings.update(options)
    return gp.run(trainable, SPACE, **settings)


@pytest.mark.parametrize("trainable", TRAINABLES)
@pytest.mark.parametrize("synchronous", [False, True], ids=["async", "sync"])
def test_a_replay_retraces_the_random_streams_of_the_line(trainable, synchronous):
    result = run(trainable, seed=5, synchronous=synchronous)
    schedule = result.schedule()
    assert exploits(schedule) >= 2
    replayed = gp.replay(trainable, schedule)
    assert replayed.step == 40
    assert replayed.score == pytest.approx(result.best.score, rel=1e-12, abs=1e-15)
    assert list(replayed.scores) == pytest.approx(line_scores(result), rel=1e-12, abs=1e-15)


def test_the_trainable_sees_the_member_id_of_each_stretch_of_the_line():
    result = run(Noisy, seed=5)
    replayed = gp.replay(Noisy, result.schedule())
    owners = [who for _, _, who in result.ancestry_scores()]
    assert [int(m["who"]) for m in replayed.metrics] == owners
    assert len(set(owners)) >= 2


def test_without_retracing_or_with_another_seed_the_draws_differ():
    result = run(Noisy, seed=5)
    schedule = result.schedule()
    retraced = gp.replay(Noisy, schedule)
    one_stream = gp.replay(Noisy, schedule, retrace=False)
    other_seed = gp.replay(Noisy, schedule, seed=6)
    assert retraced.score == pytest.approx(result.best.score, rel=1e-12)
    assert one_stream.score != pytest.approx(retraced.score, rel=1e-9)
    assert other_seed.score != pytest.approx(retraced.score, rel=1e-9)
    assert other_seed.seed == 6
    # the same hyperparameters were in effect all along, whatever the draws
    assert one_stream.hparams == other_seed.hparams == retraced.hparams


@pytest.mark.parametrize("trainable", TRAINABLES)
def test_explores_without_exploits_are_replayed_in_place(trainable):
    result = run(trainable, seed=2, exploit=None, explore=gp.Perturb(resample=0.5))
    schedule = result.schedule()
    assert [c.cause for c in schedule.changes][:2] == ["start", "explore"]
    assert exploits(schedule) == 0
    replayed = gp.replay(trainable, schedule)
    assert replayed.score == pytest.approx(result.best.score, rel=1e-12, abs=1e-15)


# -- hand-made schedules: changes on time, verified ---------------------------------------


def hand_schedule(**overrides: Any) -> Schedule:
    settings: dict[str, Any] = {
        "changes": [
            Change(0, {"lr": 1.0}, 0, 0, "start"),
            Change(3, {"lr": 10.0}, 2, 1, "exploit"),
            Change(5, {"lr": 100.0}, 2, 1, "explore"),
        ],
        "final_step": 6,
        "metric": "total",
        "seed": 0,
    }
    settings.update(overrides)
    return Schedule(**settings)


class Adder(gp.Trainable):
    """Adds lr at every step: the total names which value trained which step."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.total = 0.0
        self.apply_hparams(hparams)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.lr = float(hparams["lr"])

    def hparams_in_effect(self) -> Mapping[str, Any]:
        return {"lr": self.lr}

    def step(self) -> dict[str, float]:
        self.total += self.lr
        return {"total": self.total}

    def save(self) -> dict[str, float]:
        return {"total": self.total}

    def load(self, state: Mapping[str, float]) -> None:
        self.total = float(state["total"])


def test_each_change_trains_the_steps_after_it():
    replayed = gp.replay(Adder, hand_schedule())
    assert replayed.scores == (1.0, 2.0, 3.0, 13.0, 23.0, 123.0)
    assert replayed.score == 123.0
    assert replayed.hparams == {"lr": 100.0}
    assert replayed.state == {"total": 123.0}


def test_steps_past_the_schedule_keep_its_last_values_and_fewer_steps_stop_early():
    assert gp.replay(Adder, hand_schedule(), steps=8).scores[-3:] == (123.0, 223.0, 323.0)
    short = gp.replay(Adder, hand_schedule(), steps=4)
    assert short.scores == (1.0, 2.0, 3.0, 13.0)
    assert short.hparams == {"lr": 10.0}
    assert gp.replay(Adder, hand_schedule(), steps=0).score is None


def test_a_function_is_restarted_from_its_state_at_every_change():
    starts: list[tuple[int, float, float | None]] = []

    def adder(member: gp.Member) -> None:
        state = member.restore()
        total = 0.0 if state is None else float(state)
        starts.append((member.id, float(member.hparams["lr"]), state))
        while member.running:
            total += float(member.hparams["lr"])
            member.report(total=total, state=total)

    replayed = gp.replay(adder, hand_schedule())
    assert replayed.scores == (1.0, 2.0, 3.0, 13.0, 23.0, 123.0)
    assert starts == [(0, 1.0, None), (2, 10.0, 3.0), (2, 100.0, 23.0)]
    assert replayed.state == 123.0


def test_a_function_that_returns_ends_the_replay_where_it_stopped():
    def three_steps(member: gp.Member) -> None:
        for i in range(3):
            member.report(total=float(i), state=i)

    replayed = gp.replay(three_steps, hand_schedule(changes=[Change(0, {}, 0, 0, "start")]))
    assert replayed.step == 3
    assert replayed.scores == (0.0, 1.0, 2.0)


class Stubborn(Adder):
    """Ignores new hyperparameters, but says what it uses: the check must catch it."""

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        if not hasattr(self, "lr"):
            self.lr = float(hparams["lr"])


def test_hyperparameters_that_did_not_take_are_caught_as_the_worker_catches_them():
    with pytest.raises(gp.HyperparameterNotAppliedError, match=r"step 3.*lr"):
        gp.replay(Stubborn, hand_schedule())


def test_user_errors_propagate():
    class Broken(Adder):
        def step(self) -> dict[str, float]:
            if self.total >= 2:
                raise ZeroDivisionError("boom")
            return super().step()

    with pytest.raises(ZeroDivisionError, match="boom"):
        gp.replay(Broken, hand_schedule())


# -- bad arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        pytest.param({"steps": -1}, "'steps'", id="negative-steps"),
        pytest.param({"steps": 2.5}, "'steps'", id="float-steps"),
        pytest.param({"seed": "0"}, "'seed'", id="text-seed"),
    ],
)
def test_bad_arguments_are_refused_naming_them(kwargs, named):
    with pytest.raises(gp.InvalidArgumentError, match=named):
        gp.replay(Adder, hand_schedule(), **kwargs)


def test_a_schedule_is_required():
    with pytest.raises(gp.InvalidArgumentError, match="'schedule'"):
        gp.replay(Adder, {"lr": 1.0})  # type: ignore[arg-type]


def test_a_trainable_is_required():
    with pytest.raises(gp.InvalidArgumentError, match="'trainable'"):
        gp.replay(42, hand_schedule())  # type: ignore[arg-type]


def test_a_schedule_without_a_metric_needs_one_named():
    schedule = hand_schedule(metric=None)
    with pytest.raises(gp.InvalidArgumentError, match="'metric'"):
        gp.replay(Adder, schedule)
    assert gp.replay(Adder, schedule, metric="total").score == 123.0


def test_a_metric_the_trainable_does_not_report_is_named():
    with pytest.raises(gp.TrainableError, match="'accuracy'"):
        gp.replay(Adder, hand_schedule(), metric="accuracy")
