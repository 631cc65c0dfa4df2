"""Resuming a durable run: the same call again continues it, from the store and the
checkpoints (serial, SQLite in a temporary directory).

Interruptions come from inside the trainable (a SIGINT to its own process at a given
step, through a trigger file: tests/executors/_trainables.py), never from sleeps.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from tests.executors import _trainables as M

BUDGET = 12
READY = 4
APIS = [pytest.param(M.Climber, id="class"), pytest.param(M.climber_function, id="function")]
#: Starting configs far apart: the slow members copy the fast ones.
SPREAD = [{"lr": 0.02}, {"lr": 0.05}, {"lr": 0.2}, {"lr": 0.45}]


def run(
    tmp_path: Path, trainable: Any = M.Climber, *, db: str = "pbt.db", **options: Any
) -> gp.Result:
    """A run whose store (the file ``db``), checkpoints, log and trigger files live in
    ``tmp_path``."""
    settings: dict[str, Any] = {
        "metric": "score",
        "population": 4,
        "ready": gp.Every(READY),
        "budget": gp.Budget(steps=BUDGET),
        "seed": 0,
        "storage": f"sqlite:///{tmp_path / db}",
    }
    settings.update(options)
    space = settings.pop("space", M.space(str(tmp_path / "log.txt"), str(tmp_path / "trigger")))
    return gp.run(trainable, space, **settings)


def interrupt_at(tmp_path: Path, member: int, step: int) -> None:
    """The next run sends SIGINT to itself when ``member`` trains ``step``."""
    (tmp_path / "trigger").write_text(f"sigint {member} {step}\n", encoding="utf-8")


def log_of(tmp_path: Path) -> list[tuple[str, int, int, int]]:
    return M.read_log(str(tmp_path / "log.txt"))


def summary(result: gp.Result) -> list[tuple[Any, ...]]:
    return [
        (m.id, m.status, m.step, m.score, m.hparams["lr"], m.generation, m.parent)
        for m in result.members
    ]


def draws(result: gp.Result) -> dict[int, list[tuple[int, float]]]:
    """Each member's (step, draw from member.rng) in the order they were reported."""
    out: dict[int, list[tuple[int, float]]] = {}
    for r in result.reports:
        out.setdefault(r.member, []).append((r.step, r.metrics["draw"]))
    return out


def steps(result: gp.Result) -> dict[int, list[int]]:
    """Each member's reported steps, in order."""
    return {m: [s for s, _ in d] for m, d in draws(result).items()}


def exploits(result: gp.Result) -> list[tuple[Any, ...]]:
    return sorted(
        (
            e.member,
            e.data["donor"],
            e.data["donor_step"],
            e.data["old_step"],
            sorted(e.data["new_hparams"].items()),
        )
        for e in result.events
        if e.kind == "exploit"
    )


# -- a run that exists ---------------------------------------------------------------------


def test_running_a_finished_run_again_returns_at_once_with_the_same_result(tmp_path: Path):
    first = run(tmp_path)
    assert first.stop_reason == "budget"
    lines = log_of(tmp_path)
    second = run(tmp_path)
    assert log_of(tmp_path) == lines, "the finished run trained again"
    assert second.stop_reason == "budget"
    assert second.seed == first.seed
    assert summary(second) == summary(first)
    assert [m.checkpoint for m in second.members] == [m.checkpoint for m in first.members]
    assert second.best == first.best
    assert second.reports == first.reports
    assert second.events == first.events
    assert second.load() == first.load()


def test_running_a_run_that_reached_its_target_again_says_so(tmp_path: Path):
    # the same result includes why the run ended: resuming it adds nothing, not a budget
    budget = gp.Budget(steps=40, target=0.9)
    first = run(tmp_path, budget=budget)
    assert first.stop_reason == "target"
    second = run(tmp_path, budget=budget)
    assert summary(second) == summary(first)
    assert second.stop_reason == "target"


def test_resume_true_needs_an_existing_run(tmp_path: Path):
    with pytest.raises(gp.InvalidArgumentError, match="resume"):
        run(tmp_path, resume=True)
    run(tmp_path, budget=gp.Budget(steps=4))
    with pytest.raises(gp.InvalidArgumentError, match="'other'"):
        run(tmp_path, budget=gp.Budget(steps=4), resume=True, name="other")
    assert run(tmp_path, budget=gp.Budget(steps=4), resume=True).stop_reason == "budget"


def test_resume_false_refuses_an_existing_run(tmp_path: Path):
    run(tmp_path, budget=gp.Budget(steps=4))
    lines = log_of(tmp_path)
    with pytest.raises(gp.InvalidArgumentError, match="resume=False"):
        run(tmp_path, budget=gp.Budget(steps=4), resume=False)
    assert log_of(tmp_path) == lines
    assert run(tmp_path, budget=gp.Budget(steps=4), resume=False, name="b").name == "b"


def wider(tmp_path: Path) -> gp.Space:
    log, trigger = str(tmp_path / "log.txt"), str(tmp_path / "trigger")
    return gp.Space(lr=gp.Float(0.01, 0.9, log=True), log=log, trigger=trigger)


@pytest.mark.parametrize(
    ("changed", "options"),
    [
        pytest.param("budget", lambda p: {"budget": gp.Budget(steps=16)}, id="budget"),
        pytest.param("space", lambda p: {"space": wider(p)}, id="space"),
        pytest.param("exploit", lambda p: {"exploit": gp.Tournament()}, id="exploit"),
        pytest.param("explore", lambda p: {"explore": gp.Resample(0.5)}, id="explore"),
        pytest.param("ready", lambda p: {"ready": gp.Every(3)}, id="ready"),
        pytest.param("metric", lambda p: {"metric": "draw"}, id="metric"),
        pytest.param("mode", lambda p: {"mode": "min"}, id="mode"),
        pytest.param("seed", lambda p: {"seed": 1}, id="seed"),
        pytest.param("population", lambda p: {"population": 5}, id="population"),
    ],
)
def test_changed_settings_are_refused_naming_what_changed(tmp_path: Path, changed, options):
    interrupt_at(tmp_path, 1, 6)
    first = run(tmp_path)
    assert first.stop_reason == "interrupted"
    lines = log_of(tmp_path)
    with pytest.raises(gp.InvalidArgumentError, match="allow_config_change") as err:
        run(tmp_path, **options(tmp_path))
    assert f"{changed}: stored" in str(err.value)
    assert log_of(tmp_path) == lines, "a refused resume trained"
    # allowed on purpose, the run goes on (its members and seed as stored)
    again = run(tmp_path, **options(tmp_path), allow_config_change=True)
    assert again.stop_reason != "interrupted"
    assert again.seed == 0
    assert len(again.population) == 4
    assert len(log_of(tmp_path)) > len(lines)


def test_a_seed_drawn_at_the_start_is_stored_and_reused(tmp_path: Path):
    interrupt_at(tmp_path, 0, 2)  # only member 0 has trained when the run stops
    options: dict[str, Any] = {"exploit": None, "explore": None}  # nothing trained twice
    first = run(tmp_path, seed=None, **options)
    assert first.stop_reason == "interrupted"
    assert isinstance(first.seed, int)
    assert [m.step for m in first.members] == [2, 0, 0, 0]
    resumed = run(tmp_path, seed=None, **options)
    assert resumed.stop_reason == "budget"
    assert resumed.seed == first.seed
    # the members that had not trained yet started from the stored seed's streams
    fresh = run(tmp_path, seed=first.seed, db="fresh.db", **options)
    assert draws(resumed) == draws(fresh)
    assert summary(resumed) == summary(fresh)
    assert summary(run(tmp_path, seed=None, **options)) == summary(resumed)


def test_the_seed_a_run_drew_may_be_passed_to_resume_it(tmp_path: Path):
    # result.seed is "the seed to pass again": passing it is the same run, not a change
    interrupt_at(tmp_path, 1, 6)
    first = run(tmp_path, seed=None)
    assert first.stop_reason == "interrupted"
    resumed = run(tmp_path, seed=first.seed)
    assert resumed.stop_reason == "budget"
    assert resumed.seed == first.seed


# -- Ctrl-C, then the same call again ------------------------------------------------------


@pytest.mark.parametrize("trainable", APIS)
def test_ctrl_c_then_the_same_call_finishes_the_budget(tmp_path: Path, trainable):
    handler = signal.getsignal(signal.SIGINT)
    # the class API stops at once, mid-round; a function at its next ready at the latest
    # (the signal may reach the main thread only when the function hands control back)
    at = 6 if trainable is M.Climber else 8
    interrupt_at(tmp_path, 1, at)
    first = run(tmp_path, trainable)
    assert first.stop_reason == "interrupted"
    assert signal.getsignal(signal.SIGINT) is handler
    assert (tmp_path / "trigger").read_text(encoding="utf-8").startswith("#")
    assert all(m.status == "active" for m in first.members)
    assert first.population[1].step == at
    assert [e for e in first.events if e.kind == "stop"] == []
    stopped_at = {m.id: m.step for m in first.members}
    for m in first.members:  # every member's checkpoint is on disk and whole
        if m.step > 0:
            assert first.load(m.id)["steps"] == m.step
    M.mark(str(tmp_path / "log.txt"))

    second = run(tmp_path, trainable)
    assert second.stop_reason == "budget"
    assert signal.getsignal(signal.SIGINT) is handler
    assert all(m.status == "finished" and m.step == BUDGET for m in second.members)
    lines = log_of(tmp_path)
    M.no_restart_from_zero(lines, READY)
    # each member came back exactly where the interrupted run checkpointed it
    resumed = M.after_mark(lines)
    starts: dict[int, int] = {}
    for kind, member, step, _ in resumed:
        if kind == "start":
            starts.setdefault(member, step)
    assert starts == {m: s for m, s in stopped_at.items() if s < BUDGET}
    # and trained on from there: the next step, not one the first run trained already
    next_steps: dict[int, int] = {}
    for kind, member, step, _ in resumed:
        if kind == "step":
            next_steps.setdefault(member, step)
    assert next_steps == {m: s + 1 for m, s in starts.items()}


@pytest.mark.parametrize("trainable", APIS)
@pytest.mark.parametrize("at", [READY * 2, READY * 2 - 2], ids=["at-a-ready", "mid-round"])
def test_a_member_random_stream_is_restored_on_resume(tmp_path: Path, trainable, at):
    # without exploits nothing is trained twice: every draw of the interrupted and
    # resumed run is the draw of the uninterrupted one, step for step
    options: dict[str, Any] = {"exploit": None, "explore": None}
    straight = run(tmp_path, trainable, db="straight.db", **options)
    interrupt_at(tmp_path, 2, at)
    first = run(tmp_path, trainable, **options)
    assert first.stop_reason == "interrupted"
    assert 0 < first.population[2].step < BUDGET
    resumed = run(tmp_path, trainable, **options)
    assert resumed.stop_reason == "budget"
    assert draws(resumed) == draws(straight)
    assert all(s == [*range(1, BUDGET + 1)] for s in steps(resumed).values())


class LateDrawer(M.Climber):
    """Draws from ``member.rng`` only from step 7 on: its first checkpoint (step 4) is of a
    stream never used."""

    def step(self) -> dict[str, float]:
        log = self.hp["log"]
        if self.fresh:
            M.note(log, "start", self.member.id, self.steps)
            self.fresh = False
        self.steps += 1
        M.trigger(self.hp["trigger"], log, self.member.id, self.steps)
        self.x += float(self.hp["lr"]) * (1.0 - self.x)
        draw = float(self.member.rng.random()) if self.steps >= 7 else 0.0
        M.note(log, "step", self.member.id, self.steps)
        return {"score": self.x, "draw": draw}


def test_a_stream_first_used_after_a_resume_is_the_one_an_unbroken_run_uses(tmp_path: Path):
    options: dict[str, Any] = {"exploit": None, "explore": None}
    straight = run(tmp_path, LateDrawer, db="straight.db", **options)
    interrupt_at(tmp_path, 2, 6)  # after its checkpoint at step 4, before any draw
    first = run(tmp_path, LateDrawer, **options)
    assert first.stop_reason == "interrupted"
    resumed = run(tmp_path, LateDrawer, **options)
    assert resumed.stop_reason == "budget"
    assert draws(resumed) == draws(straight)
    assert {d for member in draws(straight).values() for s, d in member if s >= 7} != {0.0}


def test_a_stream_never_used_is_never_made(tmp_path: Path, monkeypatch):
    import genepool._rng

    made: list[tuple[int, ...]] = []
    real = genepool._rng.member_stream

    def counting(seed: int, member: int, generation: int, attempt: int = 0) -> Any:
        made.append((member, generation, attempt))
        return real(seed, member, generation, attempt)

    monkeypatch.setattr(genepool._rng, "member_stream", counting)
    result = run(tmp_path, LateDrawer, budget=gp.Budget(steps=6), initial=SPREAD)
    assert result.stop_reason == "budget"
    assert made == []
    again = run(tmp_path, LateDrawer, db="again.db", budget=gp.Budget(steps=8), initial=SPREAD)
    assert again.stop_reason == "budget"
    assert made  # from step 7 on it draws


def test_a_run_interrupted_at_a_ready_resumes_as_if_never_interrupted(tmp_path: Path):
    # with exploits: a member interrupted exactly at a ready has trained nothing twice, so
    # the resumed run must make the decision that ready was due, and match the
    # uninterrupted run draw for draw and exploit for exploit
    options: dict[str, Any] = {"budget": gp.Budget(steps=16), "initial": SPREAD}
    straight = run(tmp_path, db="straight.db", **options)
    done = exploits(straight)
    assert done, "the uninterrupted run should exploit"
    member, _, _, old_step, _ = done[0]
    assert old_step % READY == 0
    interrupt_at(tmp_path, member, old_step)
    first = run(tmp_path, **options)
    assert first.stop_reason == "interrupted"
    trained = [s for kind, m, s, _ in log_of(tmp_path) if kind == "step" and m == member]
    assert trained[-1] == old_step, "the interrupt should land at that ready"
    resumed = run(tmp_path, **options)
    assert resumed.stop_reason == "budget"
    assert exploits(resumed) == done
    assert draws(resumed) == draws(straight)
    assert summary(resumed) == summary(straight)


# -- the plateau ---------------------------------------------------------------------------


def test_a_run_resumed_during_a_plateau_stops_where_it_would_have(tmp_path: Path):
    # the rounds since the best score last improved are counted across the interruption:
    # a resumed run neither starts counting again nor trains rounds the straight run did not
    options: dict[str, Any] = {
        "budget": gp.Budget(steps=400, plateau=2, min_delta=0.01),
        "initial": SPREAD,
    }
    straight = run(tmp_path, db="straight.db", **options)
    assert straight.stop_reason == "plateau"
    assert max(m.step for m in straight.members) < 400
    improved = [e for e in straight.events if e.kind == "best"]
    assert improved, "the tracker's state is recorded as events"
    # interrupt the member furthest on at its last ready but one: after the best improved
    last = max(straight.members, key=lambda m: m.step)
    interrupt_at(tmp_path, last.id, last.step - READY)
    first = run(tmp_path, **options)
    assert first.stop_reason == "interrupted"
    assert (tmp_path / "trigger").read_text(encoding="utf-8").startswith("#")
    resumed = run(tmp_path, **options)
    assert resumed.stop_reason == "plateau"
    assert summary(resumed) == summary(straight)
    assert steps(resumed) == steps(straight)
    assert [e for e in resumed.events if e.kind == "best"] == [
        e for e in first.events if e.kind == "best"
    ], "no improvement after the interruption"
    assert [(e.member, e.step, e.data) for e in resumed.events if e.kind == "best"] == [
        (e.member, e.step, e.data) for e in improved
    ]


def test_without_a_plateau_no_best_events_are_recorded(tmp_path: Path):
    result = run(tmp_path)
    assert result.stop_reason == "budget"
    assert [e for e in result.events if e.kind == "best"] == []


# -- checkpoints on disk -------------------------------------------------------------------


def checkpoint_dirs(root: Path) -> tuple[set[str], list[str]]:
    """The checkpoint ids under a checkpoint directory, and any temporary leftovers."""
    found: set[str] = set()
    leftovers: list[str] = []
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            if d.startswith(".tmp-"):
                leftovers.append(os.path.join(dirpath, d))
        rel = Path(dirpath).relative_to(root).parts
        if len(rel) == 3 and rel[1].startswith("m") and rel[2].startswith("s"):
            found.add("/".join(rel))
    return found, leftovers


@pytest.mark.parametrize("interrupted", [False, True], ids=["straight", "resumed"])
def test_only_each_member_current_checkpoint_stays_on_disk(tmp_path: Path, interrupted):
    # keep=0: no previous checkpoint beyond the current ones (tests/test_retention.py)
    options: dict[str, Any] = {"budget": gp.Budget(steps=24), "initial": SPREAD, "keep": 0}
    if interrupted:
        interrupt_at(tmp_path, 2, 10)
        assert run(tmp_path, **options).stop_reason == "interrupted"
    result = run(tmp_path, **options)
    assert result.stop_reason == "budget"
    assert exploits(result), "the run should exploit (and so share and drop checkpoints)"
    current = {m.checkpoint for m in result.members}
    assert None not in current
    found, leftovers = checkpoint_dirs(tmp_path / "pbt.db.checkpoints")
    assert found == current
    assert leftovers == []
    for m in result.members:
        assert result.load(m.id)["steps"] == m.step
