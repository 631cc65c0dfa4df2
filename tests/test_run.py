"""Integration tests of ``genepool.run``: the serial executor with the in-memory store."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import genepool as gp
from genepool.member import Event, Report

SPACE = gp.Space(lr=gp.Float(0.01, 1.0, log=True))
STEPS = 24
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# -- trainables --------------------------------------------------------------------------


class Climb(gp.Trainable):
    """Climbs ``x`` by ``lr`` each step; reports what it really used and one random draw."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x = 0.0
        self.lr = float(hparams["lr"])

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.lr = float(hparams["lr"])

    def hparams_in_effect(self) -> Mapping[str, Any]:
        return {"lr": self.lr}

    def step(self) -> dict[str, float]:
        self.x += self.lr
        draw = float(self.member.rng.random())
        seen = float(self.member.hparams["lr"])  # what code reading member.hparams trains with
        return {"score": self.x, "x": self.x, "lr_used": self.lr, "lr_seen": seen, "draw": draw}

    def save(self) -> dict[str, float]:
        return {"x": self.x}

    def load(self, state: Mapping[str, Any]) -> None:
        self.x = float(state["x"])


class ClimbRebuilt(Climb):
    """The same without ``apply_hparams``: the library must rebuild it on every change."""

    apply_hparams = gp.Trainable.apply_hparams
    builds = 0

    def setup(self, hparams: Mapping[str, Any]) -> None:
        type(self).builds += 1
        super().setup(hparams)


def climb(member: gp.Member) -> None:
    """The function API version of :class:`Climb`."""
    state = member.restore()
    x = 0.0 if state is None else float(state["x"])
    lr = float(member.hparams["lr"])

    def snapshot() -> dict[str, float]:
        return {"x": x}

    while member.running:
        x += lr
        seen = float(member.hparams["lr"])
        draw = float(member.rng.random())
        member.report(score=x, x=x, lr_used=lr, lr_seen=seen, draw=draw, state=snapshot)


APIS = [pytest.param(Climb, id="class"), pytest.param(climb, id="function")]


def run(trainable: Any = Climb, **kwargs: Any) -> gp.Result:
    options: dict[str, Any] = {
        "metric": "score",
        "population": 4,
        "ready": gp.Every(4),
        "budget": gp.Budget(steps=STEPS),
        "seed": 0,
        "clock": gp.ManualClock(tick=1.0),  # every reading is a new time: history is ordered
    }
    options.update(kwargs)
    space = options.pop("space", SPACE)
    return gp.run(trainable, space, **options)


def reports_of(result: gp.Result, member: int) -> list[Report]:
    return [r for r in result.reports if r.member == member]


def events_of(result: gp.Result, kind: str, member: int | None = None) -> list[Event]:
    return [e for e in result.events if e.kind == kind and member in (None, e.member)]


def timeline(result: gp.Result, member: int) -> list[Report | Event]:
    """A member's reports and events in the order they happened (times are unique)."""
    items: list[Report | Event] = [*reports_of(result, member)]
    items += [e for e in result.events if e.member == member]
    times = [i.time for i in items]
    assert len(set(times)) == len(times)
    return sorted(items, key=lambda i: i.time)


def check_hparams_in_effect(result: gp.Result, initial: list[dict[str, Any]]) -> int:
    """Every report used the hyperparameters the member had then, and ``member.hparams``
    said the same at that step; the result agrees at the end. The number of changes."""
    changes = 0
    for member, config in enumerate(initial):
        current = dict(config)
        for item in timeline(result, member):
            if isinstance(item, Event):
                if item.kind in ("exploit", "explore"):
                    current = dict(item.data["new_hparams"])
                    changes += 1
            else:
                assert item.metrics["lr_used"] == pytest.approx(current["lr"], rel=1e-12), item
                assert item.metrics["lr_seen"] == pytest.approx(current["lr"], rel=1e-12), item
        assert result.members[member].hparams["lr"] == pytest.approx(current["lr"], rel=1e-12)
    return changes


INITIAL = [{"lr": 0.02}, {"lr": 0.05}, {"lr": 0.2}, {"lr": 0.5}]

# -- both APIs complete a run ------------------------------------------------------------


@pytest.mark.parametrize("trainable", APIS)
def test_run_completes(trainable):
    result = run(trainable)
    assert result.stop_reason == "budget"
    assert result.seed == 0
    assert len(result.members) == 4
    for m in result.members:
        assert m.status == "finished"
        assert m.step == STEPS
        assert m.checkpoint is not None
        assert m.score is not None
    # the best member is the best final checkpoint; load() gives its state
    best = result.best
    assert best.score == max(m.score for m in result.members if m.score is not None)
    state = result.load()
    assert state == result.load(best.id)
    assert state["x"] == pytest.approx(best.score)
    for m in result.members:
        assert result.load(m.id)["x"] == pytest.approx(m.score)
    # one report per step trained: a recipient re-trains the steps between donor and itself
    for m in result.members:
        rewound = sum(
            e.data["old_step"] - e.data["donor_step"] for e in events_of(result, "exploit", m.id)
        )
        assert len(reports_of(result, m.id)) == m.step + rewound
    records = result.records()
    assert len(records) == len(result.reports)
    assert {"member", "step", "time", "score", "x", "lr_used", "draw"} <= set(records[0])
    assert [(r["member"], r["step"]) for r in records] == [
        (r.member, r.step) for r in result.reports
    ]
    # the events: exploits, and one stop per member
    events = result.event_records()
    assert len(events) == len(result.events)
    assert {e["kind"] for e in events} <= {"exploit", "stop"}
    stops = [e for e in events if e["kind"] == "stop"]
    assert sorted(e["member"] for e in stops) == [0, 1, 2, 3]
    assert all(e["reason"] == "budget" for e in stops)
    assert any(e["kind"] == "exploit" for e in events)
    frame = result.to_frame()
    assert len(frame) == len(records)
    assert {"member", "step", "time", "score"} <= set(frame.columns)
    assert frame.groupby("member")["step"].max().tolist() == [STEPS] * 4
    assert "best_score" in repr(result)


def test_run_without_exploit_trains_each_member_exactly_the_budget():
    result = run(climb, exploit=None, explore=None, initial=INITIAL)
    assert len(result.records()) == 4 * STEPS
    for member in range(4):
        assert [r.step for r in reports_of(result, member)] == list(range(1, STEPS + 1))
    assert result.best.id == 3
    assert result.best.score == pytest.approx(STEPS * 0.5)


# -- hyperparameters in effect -----------------------------------------------------------


@pytest.mark.parametrize("trainable", [*APIS, pytest.param(ClimbRebuilt, id="rebuilt")])
def test_new_hparams_are_in_effect_after_an_exploit(trainable):
    result = run(trainable, initial=INITIAL)
    exploits = events_of(result, "exploit")
    assert exploits
    assert check_hparams_in_effect(result, INITIAL) == len(exploits)
    assert any(e.data["new_hparams"] != e.data["old_hparams"] for e in exploits)


@pytest.mark.parametrize("trainable", [*APIS, pytest.param(ClimbRebuilt, id="rebuilt")])
def test_new_hparams_are_in_effect_after_an_explore_without_exploit(trainable):
    result = run(trainable, initial=INITIAL, exploit=None, explore=gp.Perturb())
    explores = events_of(result, "explore")
    assert len(explores) == 4 * (STEPS // 4 - 1)  # every ready but the last
    assert check_hparams_in_effect(result, INITIAL) == len(explores)
    # without an exploit a member keeps its own weights: x only grows, one report per step
    for member in range(4):
        rows = reports_of(result, member)
        assert [r.step for r in rows] == list(range(1, STEPS + 1))
        xs = [r.metrics["x"] for r in rows]
        assert xs == sorted(xs)


def test_class_without_apply_hparams_is_rebuilt():
    ClimbRebuilt.builds = 0
    result = run(ClimbRebuilt, initial=INITIAL)
    exploits = events_of(result, "exploit")
    assert exploits
    # one build per member, and one per change of hyperparameters
    assert ClimbRebuilt.builds == 4 + len(exploits)
    check_exploits_continue_from_donor(result)


class Forgetful(gp.Trainable):
    """Applies ``lr`` but forgets ``momentum`` in apply_hparams, and says what it uses."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x = 0.0
        self.lr = hparams["lr"]
        self.momentum = hparams["momentum"]

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.lr = hparams["lr"]

    def hparams_in_effect(self) -> Mapping[str, Any]:
        return {"lr": self.lr, "momentum": self.momentum}

    def step(self) -> dict[str, float]:
        self.x += self.lr * self.momentum
        return {"score": self.x}

    def save(self) -> dict[str, float]:
        return {"x": self.x}

    def load(self, state: Mapping[str, Any]) -> None:
        self.x = state["x"]


def test_hparams_not_applied_raises():
    space = gp.Space(lr=gp.Float(0.01, 1.0, log=True), momentum=gp.Float(0.1, 0.9))
    with pytest.raises(gp.HyperparameterNotAppliedError, match="momentum"):
        run(Forgetful, space=space)


# -- exploit semantics -------------------------------------------------------------------


def check_exploits_continue_from_donor(result: gp.Result) -> int:
    """Every recipient continues from its donor's checkpoint; the draws compared."""
    compared = 0
    generation = dict.fromkeys(range(len(result.members)), 0)
    parent: dict[int, int | None] = dict.fromkeys(range(len(result.members)))
    for event in events_of(result, "exploit"):
        recipient, donor = event.member, event.data["donor"]
        donor_step = event.data["donor_step"]
        assert donor != recipient
        assert event.step == donor_step
        generation[recipient] += 1
        parent[recipient] = donor
        assert event.data["generation"] == generation[recipient]
        after = [r for r in reports_of(result, recipient) if r.time > event.time]
        if not after:
            continue
        first = after[0]
        # the step becomes the donor checkpoint's step
        assert first.step == donor_step + 1
        # it continues from the donor's state, with its new hyperparameters
        taken = [
            r for r in reports_of(result, donor) if r.step == donor_step and r.time < event.time
        ][-1]
        new_lr = event.data["new_hparams"]["lr"]
        assert first.metrics["x"] == pytest.approx(taken.metrics["x"] + new_lr)
        assert event.data["donor_score"] == pytest.approx(taken.metrics["x"])
        # and with its own random stream: not the donor's draws after the same checkpoint
        donor_next = [r for r in reports_of(result, donor) if r.time > taken.time]
        mine, theirs = [], []
        for k, (a, b) in enumerate(zip(after, donor_next, strict=False)):
            if a.step != donor_step + 1 + k or b.step != donor_step + 1 + k:
                break
            mine.append(a.metrics["draw"])
            theirs.append(b.metrics["draw"])
        if mine:
            compared += 1
            assert mine != theirs
            assert not set(mine) & set(theirs)
    for m in result.members:
        assert m.generation == generation[m.id]
        assert m.parent == parent[m.id]
    return compared


@pytest.mark.parametrize("trainable", APIS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exploit_copies_donor_checkpoint(trainable, seed):
    result = run(trainable, seed=seed, population=5, budget=gp.Budget(steps=32))
    assert events_of(result, "exploit")
    assert check_exploits_continue_from_donor(result) > 0


def test_exploit_can_move_a_member_back_in_steps():
    # an asynchronous exploit copies whatever checkpoint the donor has: maybe an older one
    results = [run(climb, seed=s, population=5, budget=gp.Budget(steps=32)) for s in range(3)]
    exploits = [e for r in results for e in events_of(r, "exploit")]
    assert any(e.data["donor_step"] < e.data["old_step"] for e in exploits)
    for r in results:
        check_exploits_continue_from_donor(r)


class CountingCheckpoints(gp.MemoryCheckpoints):
    """Remembers which (member, step) each checkpoint written was of."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[tuple[int, int]] = []

    def put(self, run: str, member: int, step: int, blob: bytes, **kw: Any) -> str:
        self.written.append((member, step))
        return super().put(run, member, step, blob, **kw)


class RefusingStore(gp.MemoryStore):
    """Refuses the first ``refuse`` pins, as a store does when the donor's checkpoint was
    collected in the meantime, and notes (member, step) of each exploit it refused."""

    def __init__(self, refuse: int, *, fuses: bool = False) -> None:
        super().__init__()
        self.refuse = refuse
        # as a store that fuses commit_and_claim: the worker leaves an exploit's write
        # (and its pin) to its next claim
        self.fuses_commit_and_claim = fuses
        self.refused: list[tuple[int, int]] = []

    def commit(self, lease, **kw):
        if kw.get("pin") is not None and self.refuse > 0:
            self.refuse -= 1
            (exploit,) = [e for e in kw["events"] if e.kind == "exploit"]
            self.refused.append((lease.member, exploit.data["old_step"]))
            raise gp.CollectedPinError(f"checkpoint {kw['pin']} was collected and cannot be pinned")
        return super().commit(lease, **kw)


@pytest.mark.parametrize("fuses", [False, True], ids=["two-writes", "fused"])
def test_a_round_that_ends_in_an_exploit_writes_no_checkpoint_of_its_own(fuses):
    checkpoints = CountingCheckpoints()
    result = run(
        Climb,
        population=5,
        budget=gp.Budget(steps=32),
        checkpoints=checkpoints,
        storage=RefusingStore(refuse=0, fuses=fuses),
        clock=gp.ManualClock(tick=0.001),  # a round's reports go with its last write
        # each (member, step) one round: no copy of a donor behind, which would train
        # the same steps again (compared at the same point of training, one may be)
        aligned=False,
    )
    exploits = events_of(result, "exploit")
    assert exploits
    for e in exploits:  # its weights were replaced at once: no checkpoint was written
        assert (e.member, e.data["old_step"]) not in checkpoints.written
        # ... but the round's reports were, in the exploit's write
        assert e.data["old_step"] in [r.step for r in reports_of(result, e.member)]
    check_exploits_continue_from_donor(result)
    # every other ready round wrote one checkpoint
    rounds = 5 * 32 // 4 + sum((e.data["old_step"] - e.data["donor_step"]) // 4 for e in exploits)
    assert len(checkpoints.written) == len(set(checkpoints.written)) == rounds - len(exploits)


@pytest.mark.parametrize("fuses", [False, True], ids=["two-writes", "fused"])
def test_an_exploit_whose_donor_checkpoint_went_keeps_the_members_own_weights(fuses):
    checkpoints, store = CountingCheckpoints(), RefusingStore(refuse=2, fuses=fuses)
    result = run(
        Climb,
        population=5,
        budget=gp.Budget(steps=32),
        checkpoints=checkpoints,
        storage=store,
        clock=gp.ManualClock(tick=0.001),  # a round's reports go with its last write
    )
    assert len(store.refused) == 2
    assert result.stop_reason == "budget"
    assert all(m.step == 32 for m in result.members)
    exploited = {(e.member, e.data["old_step"]) for e in events_of(result, "exploit")}
    for member, step in store.refused:
        assert (member, step) not in exploited
        # the round was checkpointed after all, and the member went on from its weights
        assert (member, step) in checkpoints.written
        reports = reports_of(result, member)
        at = [i for i, r in enumerate(reports) if r.step == step]
        assert len(at) == 1  # reported once: not lost, not written twice
        this, after = reports[at[0]], reports[at[0] + 1]
        assert after.step == step + 1
        assert after.metrics["x"] == pytest.approx(this.metrics["x"] + after.metrics["lr_used"])


# -- reproducibility ---------------------------------------------------------------------


def fingerprint(result: gp.Result) -> tuple[list[Any], list[Any]]:
    events = [(e.kind, e.member, e.step, dict(e.data)) for e in result.events]
    reports = [(r.member, r.step, dict(r.metrics)) for r in result.reports]
    return events, reports


@pytest.mark.parametrize("trainable", APIS)
def test_same_seed_same_run(trainable):
    a = run(trainable, seed=7, clock=None)
    b = run(trainable, seed=7, clock=None)
    assert events_of(a, "exploit")
    assert fingerprint(a) == fingerprint(b)
    assert a.best == b.best
    c = run(trainable, seed=8, clock=None)
    assert fingerprint(c) != fingerprint(a)
    assert [m.hparams for m in c.members] != [m.hparams for m in a.members]


def test_same_seed_same_lineage_with_fixed_initial_configs():
    a = run(Climb, seed=1, initial=INITIAL)
    b = run(Climb, seed=1, initial=INITIAL)
    c = run(Climb, seed=2, initial=INITIAL)
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(c)  # the draws and the explore differ


# -- stopping criteria -------------------------------------------------------------------


def test_stops_at_the_step_budget():
    result = run(Climb, budget=gp.Budget(steps=10), ready=gp.Every(4))
    assert result.stop_reason == "budget"
    for m in result.members:
        assert m.status == "finished"
        assert m.step == 10  # the budget ends a round early: no step past it
        assert max(r.step for r in reports_of(result, m.id)) == 10
    assert [e.data["reason"] for e in events_of(result, "stop")] == ["budget"] * 4


def test_stops_at_the_wall_time_limit():
    clock = gp.ManualClock(tick=0.25)
    result = run(Climb, budget=gp.Budget(seconds=20.0), clock=clock)
    assert result.stop_reason == "time"
    assert clock.now() < 100.0  # it stopped soon after the limit
    assert 0 < len(result.reports) < 100
    for m in result.members:
        assert m.status == "active"  # resumable: the time is the call's
        # its latest state was checkpointed when the run stopped
        assert m.step == max(r.step for r in reports_of(result, m.id))
    assert events_of(result, "stop") == []


def test_a_resumed_run_gets_the_time_again_until_its_budget():
    # Budget.seconds limits one call: the members checkpoint and stay active, and the
    # same call again trains on, for the time again, until the step budget
    from genepool.store import MemoryStore

    store, checkpoints = MemoryStore(), gp.MemoryCheckpoints()
    budget = gp.Budget(steps=STEPS, seconds=10.0)
    steps: list[int] = []
    for _ in range(30):
        clock = gp.ManualClock(tick=0.25)
        result = run(Climb, budget=budget, clock=clock, storage=store, checkpoints=checkpoints)
        steps.append(sum(m.step for m in result.members))
        if result.stop_reason != "time":
            break
        # none ended for the time: each is active, or trained its budget
        assert all(m.status == "active" or m.step == STEPS for m in result.members)
        assert {e.data["reason"] for e in events_of(result, "stop")} <= {"budget"}
    assert result.stop_reason == "budget"
    assert len(steps) >= 3  # it took several calls, each training on from the last
    assert steps == sorted(set(steps))
    assert all(m.status == "finished" and m.step == STEPS for m in result.members)
    assert {e.data["reason"] for e in events_of(result, "stop")} == {"budget"}


def test_stops_at_the_target():
    result = run(Climb, budget=gp.Budget(steps=1000, target=3.0), initial=INITIAL)
    assert result.stop_reason == "target"
    assert result.best.score is not None
    assert result.best.score >= 3.0
    assert max(r.step for r in result.reports) < 100
    assert all(m.status == "finished" for m in result.members)
    assert {e.data["reason"] for e in events_of(result, "stop")} == {"target"}


def test_target_in_min_mode():
    def descend(member: gp.Member) -> None:
        state = member.restore()
        loss = 10.0 if state is None else state
        while member.running:
            loss *= 1.0 - member.hparams["lr"]
            member.report(loss=loss, state=loss)

    result = run(
        descend,
        metric="loss",
        mode="min",
        budget=gp.Budget(steps=1000, target=0.5),
        space=gp.Space(lr=gp.Float(0.05, 0.5)),
    )
    assert result.stop_reason == "target"
    assert result.best.score is not None
    assert result.best.score <= 0.5


def test_stops_on_a_plateau():
    class Capped(Climb):
        def step(self) -> dict[str, float]:
            metrics = super().step()
            return {**metrics, "score": min(metrics["x"], 1.0)}

    result = run(Capped, budget=gp.Budget(steps=10_000, plateau=3), initial=INITIAL)
    assert result.stop_reason == "plateau"
    assert max(r.step for r in result.reports) < 200
    assert result.best.score == pytest.approx(1.0)
    assert {e.data["reason"] for e in events_of(result, "stop")} == {"plateau"}


def test_no_plateau_while_improving():
    result = run(Climb, budget=gp.Budget(steps=STEPS, plateau=2), initial=INITIAL)
    assert result.stop_reason == "budget"


def interrupting(at_member: int, at_step: int) -> tuple[type[gp.Trainable], list[int]]:
    sent: list[int] = []

    class Interrupting(Climb):
        def step(self) -> dict[str, float]:
            metrics = super().step()
            if self.member.id == at_member and self.member.step + 1 == at_step and not sent:
                sent.append(self.member.step + 1)
                os.kill(os.getpid(), signal.SIGINT)
            return metrics

    return Interrupting, sent


def test_ctrl_c_checkpoints_every_member_and_returns():
    handler = signal.getsignal(signal.SIGINT)
    trainable, sent = interrupting(at_member=1, at_step=6)
    result = run(trainable, exploit=None, explore=None, initial=INITIAL)
    assert sent == [6]
    assert result.stop_reason == "interrupted"
    assert signal.getsignal(signal.SIGINT) is handler
    # the interrupted member checkpointed at once, mid-round; the others were at a ready
    assert [m.step for m in result.members] == [8, 6, 4, 4]
    for m in result.members:
        assert m.status == "active"
        last = reports_of(result, m.id)[-1]
        assert m.step == last.step
        assert result.load(m.id)["x"] == pytest.approx(last.metrics["x"])
    assert events_of(result, "stop") == []


def test_ctrl_c_in_a_function_trainable():
    handler = signal.getsignal(signal.SIGINT)
    sent: list[int] = []

    def train(member: gp.Member) -> None:
        x = member.restore() or 0.0
        while member.running:
            x += member.hparams["lr"]
            if member.id == 2 and member.step + 1 == 6 and not sent:
                sent.append(member.step + 1)
                os.kill(os.getpid(), signal.SIGINT)
            member.report(score=x, state=x)

    result = run(train, exploit=None, explore=None, initial=INITIAL)
    assert sent == [6]
    assert result.stop_reason == "interrupted"
    assert signal.getsignal(signal.SIGINT) is handler
    assert 6 <= result.members[2].step <= 8  # by its next ready at the latest
    for m in result.members:
        last = reports_of(result, m.id)[-1]
        assert m.step == last.step
        assert result.load(m.id) == pytest.approx(last.metrics["score"])


# -- failures ----------------------------------------------------------------------------


def failing_once(kind: str, at_member: int, at_step: int) -> type[gp.Trainable]:
    done: list[bool] = []

    class FailingOnce(Climb):
        def step(self) -> dict[str, float]:
            metrics = super().step()
            if self.member.id == at_member and self.member.step + 1 == at_step and not done:
                done.append(True)
                if kind == "raise":
                    raise ValueError("boom at the sixth step")
                return {**metrics, "score": math.nan if kind == "nan" else -math.inf}
            return metrics

    return FailingOnce


@pytest.mark.parametrize("kind", ["raise", "nan", "inf"])
def test_a_failed_round_is_recorded_and_the_member_exploited(kind):
    result = run(failing_once(kind, at_member=1, at_step=6), initial=INITIAL)
    assert result.stop_reason == "budget"
    failures = events_of(result, "failure")
    assert [e.member for e in failures] == [1]
    data = failures[0].data
    assert data["failures"] == 1
    if kind == "raise":
        assert data["error"] == "ValueError: boom at the sixth step"
        assert "Traceback" in data["traceback"]
        assert "boom at the sixth step" in data["traceback"]
        assert "in step" in data["traceback"]
    else:
        assert data["error"].startswith("non-finite score")
    # it counts as worst: its very next decision copies another member
    after = [e for e in timeline(result, 1) if isinstance(e, Event) and e.time > failures[0].time]
    assert after[0].kind == "exploit"
    assert after[0].data["donor"] != 1
    # it recovered: a successful round clears the count, and it finished its budget
    final = result.population[1]
    assert final.status == "finished"
    assert final.failures == 0
    assert final.step == STEPS
    check_exploits_continue_from_donor(result)


def test_a_failing_function_trainable_is_recorded():
    done: list[bool] = []

    def train(member: gp.Member) -> None:
        x = member.restore() or 0.0
        while member.running:
            x += member.hparams["lr"]
            if member.id == 2 and member.step + 1 == 7 and not done:
                done.append(True)
                raise KeyError("missing batch")
            member.report(score=x, state=x)

    result = run(train)
    failures = events_of(result, "failure")
    assert [e.member for e in failures] == [2]
    assert failures[0].data["error"] == "KeyError: 'missing batch'"
    assert "missing batch" in failures[0].data["traceback"]
    assert all(m.status == "finished" and m.step == STEPS for m in result.members)


def always_failing(member_id: int) -> type[gp.Trainable]:
    class AlwaysFailing(Climb):
        def step(self) -> dict[str, float]:
            if self.member.id == member_id:
                raise RuntimeError(f"member {member_id} is broken")
            return super().step()

    return AlwaysFailing


@pytest.mark.parametrize("max_failures", [1, 2, 3])
def test_member_stopped_after_max_failures(max_failures):
    result = run(always_failing(2), max_failures=max_failures)
    assert result.stop_reason == "budget"
    broken = result.population[2]
    assert broken.status == "failed"
    assert broken.stop_reason == "failed"
    assert broken.failures == max_failures
    assert [e.data["failures"] for e in events_of(result, "failure", 2)] == list(
        range(1, max_failures + 1)
    )
    assert [e.data["reason"] for e in events_of(result, "stop", 2)] == ["failed"]
    # the rest of the run finished normally
    for m in result.members:
        if m.id != 2:
            assert m.status == "finished"
            assert m.step == STEPS
    assert result.best.id != 2


def test_failures_that_are_not_consecutive_do_not_stop_a_member():
    calls: dict[int, int] = {}

    class Flaky(Climb):
        def step(self) -> dict[str, float]:
            n = calls[self.member.id] = calls.get(self.member.id, 0) + 1
            if self.member.id == 0 and n % 5 == 0:  # one failure after each good round
                raise RuntimeError("flaky")
            return super().step()

    result = run(Flaky, max_failures=2)
    assert len(events_of(result, "failure", 0)) >= 3
    assert result.population[0].status == "finished"
    assert result.population[0].step == STEPS


def test_a_run_where_every_member_fails_still_ends():
    class Broken(Climb):
        def step(self) -> dict[str, float]:
            raise RuntimeError("broken")

    result = run(Broken, max_failures=2)
    assert result.stop_reason == "all_failed"
    assert all(m.status == "failed" for m in result.members)
    assert [m.id for m in result.failed] == [0, 1, 2, 3]
    assert {m.stop_reason for m in result.failed} == {"failed"}
    assert len(events_of(result, "failure")) == 4 * 2
    with pytest.raises(gp.InvalidArgumentError, match="failed"):
        _ = result.best


def test_a_member_failing_in_its_last_round_does_not_train_past_the_budget():
    # member 3 (the worst) fails once in its last round; its decision copies a donor that
    # has already finished (its checkpoint is at the budget): the copy must not train on
    result = run(
        failing_once("raise", at_member=3, at_step=STEPS - 1),
        initial=INITIAL[::-1],
        aligned=False,  # the scenario's decisions: each compared by its latest score
    )
    assert [e.member for e in events_of(result, "failure")] == [3]
    last_exploit = events_of(result, "exploit", 3)[-1]
    assert last_exploit.time > events_of(result, "failure", 3)[0].time
    assert last_exploit.data["donor_step"] == STEPS  # the scenario: a finished donor
    for m in result.members:
        assert m.status == "finished"
        assert max(r.step for r in reports_of(result, m.id)) <= STEPS, m
        assert m.step == STEPS, m


def flaky(period: int) -> type[gp.Trainable]:
    """Every member fails at every ``period``-th call of its step."""
    calls: dict[int, int] = {}

    class Flaky(Climb):
        def step(self) -> dict[str, float]:
            n = calls[self.member.id] = calls.get(self.member.id, 0) + 1
            if n % period == 0:
                raise RuntimeError("flaky")
            return super().step()

    return Flaky


@pytest.mark.parametrize(
    ("trainable", "options"),
    [
        pytest.param(Climb, {}, id="plain"),
        pytest.param(climb, {"population": 6, "synchronous": True}, id="function-sync"),
        pytest.param(failing_once("nan", 1, 6), {"initial": INITIAL}, id="fail-once"),
        pytest.param(always_failing(2), {}, id="always-failing"),
        pytest.param(flaky(6), {"population": 6, "max_failures": 5}, id="flaky"),
    ],
)
def test_only_current_and_kept_checkpoints_are_kept(trainable, options):
    # a checkpoint nobody holds any more is deleted: the store does not grow with the run;
    # each member keeps its current checkpoint and (keep=1) the one before it
    checkpoints = gp.MemoryCheckpoints()
    result = run(trainable, checkpoints=checkpoints, **options)
    current = {m.checkpoint for m in result.members if m.checkpoint is not None}
    current |= {p.id for m in result.population for p in m.previous}
    for checkpoint in current:
        checkpoints.get(checkpoint)
    assert len(checkpoints) == len(current)


# -- synchronous runs --------------------------------------------------------------------


class RecordingTruncation(gp.Truncation):
    """Truncation that records what the population looked like at each decision."""

    def __init__(self) -> None:
        super().__init__(0.25)
        self.seen: list[tuple[int, list[int], list[float]]] = []

    def select(self, population, member, rng):
        active = [m for m in population if m.status == "active"]
        counters = [m.checkpoint.counter for m in active if m.checkpoint is not None]
        self.seen.append((member.ready_count, [m.ready_count for m in active], counters))
        return super().select(population, member, rng)


@pytest.mark.parametrize("trainable", APIS)
def test_synchronous_decides_in_generations(trainable):
    select = RecordingTruncation()
    result = run(trainable, exploit=select, synchronous=True, population=5)
    assert result.stop_reason == "budget"
    assert all(m.step == STEPS for m in result.members)
    assert len(select.seen) == 5 * (STEPS // 4 - 1)
    for ready_count, others, counters in select.seen:
        # every active member finished this round, and none has started the next
        assert others == [ready_count] * 5
        # so every score compared is of the same round
        assert counters == [4.0 * ready_count] * 5
    rounds = [seen[0] for seen in select.seen]
    assert rounds == sorted(rounds)
    assert events_of(result, "exploit")


def test_asynchronous_decides_without_waiting():
    # the contrast: without synchronous=True a member decides as soon as it is ready
    select = RecordingTruncation()
    run(Climb, exploit=select, population=5)
    assert any(others != [ready] * 5 for ready, others, _ in select.seen)


def test_synchronous_run_with_a_failed_member_finishes():
    result = run(always_failing(1), synchronous=True, max_failures=2)
    assert result.stop_reason == "budget"
    assert result.population[1].status == "failed"
    assert all(m.step == STEPS for m in result.members if m.id != 1)


def test_synchronous_is_reproducible():
    a = run(climb, synchronous=True, seed=5, clock=None)
    b = run(climb, synchronous=True, seed=5, clock=None)
    assert fingerprint(a) == fingerprint(b)


# -- the starting population -------------------------------------------------------------

SPACE3 = gp.Space(lr=gp.Float(0.01, 1.0, log=True), momentum=gp.Float(0.5, 0.99), opt="sgd")


def grid(**kwargs: Any) -> gp.Result:
    return run(Climb, space=SPACE3, exploit=None, explore=None, budget=gp.Budget(steps=4), **kwargs)


def check_in_space(config: Mapping[str, Any]) -> None:
    assert set(config) == {"lr", "momentum", "opt"}
    assert 0.01 <= config["lr"] <= 1.0
    assert 0.5 <= config["momentum"] <= 0.99
    assert config["opt"] == "sgd"


def test_partial_initial_configs_are_completed_from_the_space():
    result = grid(population=3, initial=[{"lr": 0.05}, {"momentum": 0.6, "lr": 0.3}])
    configs = [m.hparams for m in result.members]
    for config in configs:
        check_in_space(config)
    assert configs[0]["lr"] == 0.05
    assert configs[1]["lr"] == 0.3
    assert configs[1]["momentum"] == 0.6
    # the first report of each member used its starting config
    for member, config in enumerate(configs):
        assert reports_of(result, member)[0].metrics["lr_used"] == config["lr"]


def test_population_defaults_to_the_number_of_initial_configs():
    result = grid(population=None, initial=[{"lr": 0.05}, {"lr": 0.1}])
    assert len(result.members) == 2


def test_population_sampled_from_the_space():
    a = grid(population=6, seed=3)
    configs = [m.hparams for m in a.members]
    for config in configs:
        check_in_space(config)
    assert len({c["lr"] for c in configs}) == 6
    assert [m.hparams for m in grid(population=6, seed=3).members] == configs
    assert [m.hparams for m in grid(population=6, seed=4).members] != configs


def test_too_many_initial_configs_raise():
    with pytest.raises(gp.InvalidArgumentError, match="initial"):
        grid(population=1, initial=[{"lr": 0.05}, {"lr": 0.1}])


@pytest.mark.parametrize(
    "initial",
    [[{"lr": 5.0}], [{"unknown": 1}], [{"opt": "adam"}]],
    ids=["out-of-bounds", "unknown-key", "fixed-changed"],
)
def test_invalid_initial_configs_raise(initial):
    with pytest.raises(gp.InvalidArgumentError):
        grid(population=2, initial=initial)


def test_population_or_initial_is_required():
    with pytest.raises(gp.InvalidArgumentError, match="population"):
        grid(population=None)


# -- contract errors are raised ----------------------------------------------------------


def test_class_not_reporting_the_metric_raises():
    class NoMetric(Climb):
        def step(self) -> dict[str, float]:
            return {"accuracy": 1.0}

    with pytest.raises(gp.TrainableError, match="score"):
        run(NoMetric)


def test_function_not_reporting_the_metric_raises():
    def train(member: gp.Member) -> None:
        while member.running:
            member.report(accuracy=1.0, state=lambda: 0)

    with pytest.raises(gp.TrainableError, match="score"):
        run(train)


def test_function_never_passing_state_raises():
    def train(member: gp.Member) -> None:
        x = 0.0
        while member.running:
            x += 1.0
            member.report(score=x)

    with pytest.raises(gp.TrainableError, match="state"):
        run(train)


def test_non_numeric_metric_raises():
    class Text(Climb):
        def step(self) -> dict[str, Any]:
            return {"score": "high"}

    with pytest.raises(gp.TrainableError, match="number"):
        run(Text)


def test_step_not_returning_a_dict_raises():
    class Scalar(Climb):
        def step(self) -> Any:
            return 1.0

    with pytest.raises(gp.TrainableError, match="dict"):
        run(Scalar)


def test_unpicklable_state_raises():
    class Unpicklable(Climb):
        def save(self) -> Any:
            return {"fn": lambda: self.x}

    with pytest.raises(gp.CheckpointError, match=r"state\['fn'\]"):
        run(Unpicklable)
    with pytest.raises(gp.CheckpointError, match="could not be serialised"):
        run(Unpicklable, trust_checkpoints=True)  # pickle cannot store a lambda either


def test_a_run_name_cannot_be_reused_in_a_store():
    store = gp.MemoryStore()
    run(Climb, store=store, budget=gp.Budget(steps=4))
    with pytest.raises(gp.InvalidArgumentError, match="name"):
        run(Climb, store=store, budget=gp.Budget(steps=4), resume=False)
    run(Climb, store=store, budget=gp.Budget(steps=4), name="second")


# -- the toy example ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy() -> ModuleType:
    spec = importlib.util.spec_from_file_location("genepool_example_toy", EXAMPLES / "toy.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mean_best(run_variant: Callable[..., gp.Result], variant: str, seeds: int = 5) -> float:
    scores = [run_variant(variant, seed).best.score for seed in range(seeds)]
    return statistics.fmean(float(s) for s in scores if s is not None)


def test_toy_pbt_beats_grid_search(toy):
    pbt = mean_best(toy.run_variant, "pbt")
    grid_search = mean_best(toy.run_variant, "grid_search")
    assert pbt > 1.15
    assert grid_search == pytest.approx(0.39, abs=0.02)
    assert pbt > grid_search + 0.5


# -- downsampled metrics -----------------------------------------------------------------


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
def test_metrics_every_keeps_the_decision_metric_at_every_step(storage, tmp_path):
    url = "memory" if storage == "memory" else f"sqlite:///{tmp_path / 'pbt.db'}"
    result = gp.run(
        Climb,
        SPACE,
        metric="score",
        population=8,
        ready=gp.Every(4),
        exploit=gp.Truncation(0.25),
        budget=gp.Budget(steps=STEPS),
        seed=3,
        storage=url,
        metrics_every=5,
    )
    reports = result.reports
    assert sum(1 for e in result.events if e.kind == "exploit") > 0
    by_member: dict[int, list[Report]] = {}
    for r in reports:
        by_member.setdefault(r.member, []).append(r)
    for rows in by_member.values():
        # every step of every round has its score (exploits restart rounds from a donor step)
        assert all(isinstance(r.metrics["score"], float) for r in rows)
        for r in rows:
            full = r.step % 5 == 0 or r.step % 4 == 0  # a multiple of 5, or a round's last
            assert ("x" in r.metrics) == full, r
            assert ("draw" in r.metrics) == full, r
    assert any("x" not in r.metrics for r in reports)


def test_metrics_every_must_be_a_positive_integer():
    with pytest.raises(gp.InvalidArgumentError, match="metrics_every"):
        gp.run(
            Climb,
            SPACE,
            metric="score",
            population=2,
            ready=gp.Every(4),
            budget=gp.Budget(steps=8),
            metrics_every=0,
        )


@pytest.mark.parametrize("population", [2, 8])
def test_toy_asynchronous_pbt_reaches_the_synchronous_quality(toy, population):
    # asynchronously a member that decides is a round ahead of some and behind others:
    # compared at the same point of training (aligned, the default), Q's rise with
    # training no longer makes whoever trained furthest look best
    def run_variant(variant: str, seed: int, *, synchronous: bool, **options: Any) -> gp.Result:
        settings = toy.VARIANTS[variant]
        return gp.run(
            toy.Toy,
            toy.SPACE,
            metric="Q",
            population=population,
            initial=(toy.INITIAL * population)[:population],
            ready=gp.Every(4),
            budget=gp.Budget(steps=200),
            exploit=settings["exploit"],
            explore=settings["explore"],
            seed=seed,
            synchronous=synchronous,
            **options,
        )

    synchronous = mean_best(lambda v, s: run_variant(v, s, synchronous=True), "pbt")
    asynchronous = mean_best(lambda v, s: run_variant(v, s, synchronous=False), "pbt")
    unaligned = mean_best(lambda v, s: run_variant(v, s, synchronous=False, aligned=False), "pbt")
    assert synchronous > 1.19
    assert asynchronous > synchronous - 0.005, (asynchronous, synchronous)
    assert unaligned < asynchronous  # what the comparison at the same point fixes


def test_aligned_must_be_a_bool_or_none():
    with pytest.raises(gp.InvalidArgumentError, match=r"'aligned'.*True, False or None"):
        run(aligned="yes")


# -- a fault in the member's own code outside step is that member's failure ---------------


def raising_in(method: str, *, member: int, times: int = 1) -> type[gp.Trainable]:
    """Climb whose ``method`` raises for ``member``, ``times`` times in all."""
    left = [times]

    def boom(self: Climb) -> None:
        if self.member.id == member and left[0] > 0:
            left[0] -= 1
            raise RuntimeError(f"{method} broke")

    class Raising(Climb):
        def setup(self, hparams: Mapping[str, Any]) -> None:
            super().setup(hparams)
            if method == "setup":
                boom(self)

        def load(self, state: Mapping[str, Any]) -> None:
            if method == "load":
                boom(self)
            super().load(state)

        def save(self) -> dict[str, float]:
            if method == "save":
                boom(self)
            return super().save()

        def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
            if method == "apply_hparams" and self.member.step > 0:
                boom(self)
            super().apply_hparams(hparams)

    return Raising


@pytest.mark.parametrize("method", ["setup", "load", "save", "apply_hparams"])
def test_an_exception_in_the_members_own_code_is_its_failure(method):
    # setup at its start, load and apply_hparams in an exploit, save at a ready: a
    # failure event with its traceback, then the failure policy; the run goes on
    result = run(raising_in(method, member=0), initial=INITIAL, max_failures=3)
    assert result.stop_reason == "budget"
    failures = events_of(result, "failure", 0)
    assert len(failures) == 1, [e.data["error"] for e in failures]
    assert failures[0].data["error"] == f"RuntimeError: {method} broke"
    assert f"in {method}" in failures[0].data["traceback"]
    assert all(m.status == "finished" and m.step == STEPS for m in result.members)


def test_a_member_whose_setup_always_raises_stops_failed_and_the_others_finish():
    result = run(raising_in("setup", member=2, times=100), initial=INITIAL, max_failures=2)
    assert result.stop_reason == "budget"
    assert [m.id for m in result.failed] == [2]
    assert len(events_of(result, "failure", 2)) == 2
    assert all(m.status == "finished" for m in result.members if m.id != 2)


def test_an_abstract_trainable_is_refused_before_the_run_starts():
    class Half(gp.Trainable):
        def setup(self, hparams: Mapping[str, Any]) -> None:
            pass

        def step(self) -> dict[str, float]:
            return {"score": 0.0}

    with pytest.raises(gp.InvalidArgumentError, match=r"Half, which does not define load, save"):
        run(Half)


# -- a member that hangs in a serial run --------------------------------------------------


#: Set when a hang test ends: what hung returns (no thread is left to later tests).
RELEASE = threading.Event()


class HangsAtStep(Climb):
    """Member 1 blocks for good in its sixth step (an event nobody sets)."""

    def step(self) -> dict[str, float]:
        if self.member.id == 1 and self.member.step + 1 == 6:
            # the member's own handler around the wait must not swallow the stop
            with contextlib.suppress(Exception):
                RELEASE.wait()
        return super().step()


def never_reports(member: gp.Member) -> None:
    """Member 1 loops without a report once it has made five steps, until the test ends."""
    x = 0.0
    while member.running:
        if member.id == 1 and member.step >= 5:
            while not RELEASE.is_set():  # (the thread then ends: nothing leaks to others)
                time.sleep(0.01)
            return
        x += float(member.hparams["lr"])
        member.report(score=x, state={"x": x})


@pytest.mark.parametrize("trainable", [HangsAtStep, never_reports], ids=["step", "function"])
def test_a_hung_member_stops_a_serial_run_with_an_error_naming_it(trainable):
    started = time.monotonic()
    RELEASE.clear()
    try:
        with pytest.raises(gp.TrainableError, match=r"Member 1 made no step for \d+ s .*hangs"):
            run(trainable, progress_timeout=0.5, clock=gp.SystemClock())
        assert time.monotonic() - started < 20.0
    finally:
        RELEASE.set()
        time.sleep(0.05)  # the function's thread sees it and ends
