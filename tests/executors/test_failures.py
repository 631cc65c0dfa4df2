"""Worker processes that crash, hang or are interrupted (SQLite in a temporary directory).

Everything that goes wrong comes from inside the trainable, through a trigger file
(tests/executors/_trainables.py), never from sleeps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from genepool.store.sql import SQLStore
from tests.executors import _trainables as M

BUDGET = 12
READY = 4
ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path: Path, trainable: Any = M.Climber, *, trigger: str = "", **options: Any):
    """A run of two worker processes; the trigger file says what goes wrong."""
    log = tmp_path / "log.txt"
    (tmp_path / "trigger").write_text(trigger, encoding="utf-8")
    executor = gp.ProcessExecutor(workers=2)
    settings: dict[str, Any] = {
        "metric": "score",
        "population": 4,
        "ready": gp.Every(READY),
        "budget": gp.Budget(steps=BUDGET),
        "seed": 0,
        "storage": f"sqlite:///{tmp_path / 'pbt.db'}",
        "executor": executor,
        "lease_seconds": 5.0,
    }
    settings.update(options)
    result = gp.run(trainable, M.space(str(log), str(tmp_path / "trigger")), **settings)
    return result, executor, M.read_log(str(log))


# -- a member that keeps killing its worker ------------------------------------------------


@pytest.mark.parametrize(
    "trainable",
    [pytest.param(M.Climber, id="class"), pytest.param(M.climber_function, id="function")],
)
def test_a_member_that_keeps_killing_its_worker_is_stopped_as_failed(tmp_path, trainable):
    result, executor, lines = run(
        tmp_path, trainable, trigger="sigkill 1 6 always\n", max_crashes=2
    )
    assert result.stop_reason == "budget"
    member = result.population[1]
    assert member.status == "failed"
    assert member.stop_reason == "crashed"
    assert member.crashes == 2
    # it died twice: the first worker and the one that took it over; then it was stopped
    assert executor.started_processes == 4
    assert [e.data["reason"] for e in result.events if e.kind == "stop" and e.member == 1] == [
        "crashed"
    ]
    for m in result.population:
        if m.id != 1:
            assert m.status == "finished"
            assert m.step == BUDGET
            assert m.crashes == 0
    M.no_restart_from_zero(lines, READY)


# -- a member whose trainable hangs --------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {root!r})
    import genepool as gp
    from tests.executors import _trainables as M
    result = gp.run(
        M.{trainable}, M.space({log!r}, {trigger!r}), metric="score", population=4,
        ready=gp.Every({ready}), budget=gp.Budget(steps={budget}), seed=0,
        storage={storage!r}, workers=2, lease_seconds={lease}, progress_timeout={timeout},
        exploit={exploit}, executor={executor},
    )
    print(json.dumps({{"stop_reason": result.stop_reason}}))
    """
)


def script(tmp_path: Path, trigger: str, **values: Any) -> str:
    (tmp_path / "trigger").write_text(trigger, encoding="utf-8")
    settings: dict[str, Any] = {
        "root": str(ROOT),
        "trainable": "Climber",
        "log": str(tmp_path / "log.txt"),
        "trigger": str(tmp_path / "trigger"),
        "ready": READY,
        "budget": BUDGET,
        "storage": f"sqlite:///{tmp_path / 'pbt.db'}",
        "lease": 5.0,
        "timeout": None,
        "exploit": "gp.Truncation()",
        "executor": None,
    }
    settings.update(values)
    return SCRIPT.format(**settings)


def all_done(storage: str) -> bool:
    try:
        return all(m.status != "active" for m in SQLStore(storage).population("run"))
    except Exception:  # not created yet
        return False


def test_a_hung_member_is_taken_over_and_the_run_ends(tmp_path):
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    # the hung worker never exits by itself: the driver ends it a grace period after the
    # last member ended
    executor = "gp.ProcessExecutor(workers=2, grace_seconds=1.0)"
    code = script(tmp_path, "hang 1 6\n", lease=2.0, timeout=1.0, executor=executor)
    started = time.monotonic()
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as driver:
        try:
            # every member ends: the hung one is trained on by the other worker
            while not all_done(storage) and time.monotonic() - started < 60:
                if driver.poll() is not None:
                    break
                time.sleep(0.1)  # polls the store: the test's own clock, not the run's
            finished = time.monotonic() - started
            try:
                out, err = driver.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"every member ended after {finished:.1f} s, but the driver was still "
                    "waiting 30 s later: it waits for the hung worker"
                )
        finally:
            driver.kill()
    assert driver.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["stop_reason"] == "budget"
    population = SQLStore(storage).population("run")
    assert all(m.status == "finished" and m.step == BUDGET for m in population)
    assert population[1].crashes == 0  # counted at the takeover, cleared by a checkpoint
    lines = M.read_log(str(tmp_path / "log.txt"))
    hang = next(i for i, line in enumerate(lines) if line[0] == "hang")
    hung_pid = lines[hang][3]
    # another worker took member 1 over from its checkpoint (step 4), not from step 0: it
    # restarted from it, or went on from it if it still had it resident (it trained the
    # round that ended there)
    after = [
        line
        for line in lines[hang:]
        if line[0] in ("start", "step") and line[1] == 1 and line[3] != hung_pid
    ]
    assert after, "nobody took the hung member over"
    assert after[0][:3] in (("start", 1, READY), ("step", 1, READY + 1)), after[:3]
    assert all(pid != hung_pid for _, _, _, pid in lines[hang + 1 :])
    M.no_restart_from_zero(lines, READY)


def test_a_member_that_always_hangs_ends_its_workers_and_stops_as_failed(tmp_path):
    # each worker that hangs in member 1's step ends itself and is replaced; each
    # takeover counts a crash, and max_crashes (3) of them stop the member
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    code = script(tmp_path, "hang 1 6 always\n", lease=1.0, timeout=0.5, exploit="None")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["stop_reason"] == "budget"
    assert "made no step for" in done.stderr
    assert "ending this worker" in done.stderr
    population = SQLStore(storage).population("run")
    assert population[1].status == "failed"
    assert population[1].stop_reason == "crashed"
    assert all(m.status == "finished" and m.step == BUDGET for m in population if m.id != 1)
    hung = {pid for kind, m, _, pid in M.read_log(str(tmp_path / "log.txt")) if kind == "hang"}
    assert len(hung) == 3  # three workers hung in it, each replaced


def test_the_default_progress_limit_is_ten_slowest_rounds_and_at_least_ten_minutes():
    from genepool._heartbeat import PROGRESS_FLOOR_SECONDS, Heartbeat

    class Ctx:
        progress_timeout = None

    beat = Heartbeat(Ctx(), name="worker-0")  # type: ignore[arg-type]
    beat.round_took(0.5)
    assert beat.progress_limit() == PROGRESS_FLOOR_SECONDS == 600.0
    beat.round_took(120.0)
    beat.round_took(3.0)  # the slowest round counts
    assert beat.progress_limit() == 1200.0
    Ctx.progress_timeout = 30.0
    assert beat.progress_limit() == 30.0


def test_a_hung_worker_that_wakes_up_cannot_write_for_its_member(tmp_path):
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    code = script(tmp_path, "hang-until-taken-over 1 6\n", lease=2.0, timeout=1.0, exploit="None")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["stop_reason"] == "budget"
    lines = M.read_log(str(tmp_path / "log.txt"))
    woke = [line for line in lines if line[0] == "woke"]
    assert woke, "the hung worker never woke"
    hung_pid = woke[0][3]
    # another worker went on from the member's checkpoint at the ready (with a new
    # trainable, or the one it still had from training the member before)
    hung = lines.index(("hang", 1, READY + 2, hung_pid))
    assert any(
        kind == "step" and m == 1 and step == READY + 1 and pid != hung_pid
        for kind, m, step, pid in lines[hung:]
    )
    # the woken worker trained a step after the takeover (its log says so) ...
    after_woke = lines[lines.index(woke[0]) :]
    assert ("step", 1, 6, hung_pid) in after_woke
    # ... but its lease was gone: none of what it did reached the store
    store = SQLStore(storage)
    history = store.history("run")
    assert not [r for r in history.reports if r.metrics.get("woke")]
    population = store.population("run")
    assert all(m.status == "finished" and m.step == BUDGET for m in population)
    assert population[1].crashes == 0  # counted at the takeover, cleared by a checkpoint
    # nor the checkpoint directory: only each member's current and kept previous ones
    root = tmp_path / "pbt.db.checkpoints" / "run"
    on_disk = {f"run/{p.parent.name}/{p.name}" for p in root.glob("m*/s*")}
    current = {m.checkpoint.id for m in population if m.checkpoint is not None}
    assert on_disk == current | {p.id for m in population for p in m.previous}
    # and without exploits each step of the member is reported once, by one holder
    assert [r.step for r in history.reports if r.member == 1] == list(range(1, BUDGET + 1))


# -- synchronous runs across processes -----------------------------------------------------


def same_round_decisions(result: gp.Result, decisions: list[dict[str, Any]], skip: set[int]):
    """Every exploit copied a checkpoint of the round the recipient had reached, and every
    ready decision saw each active member at the same round (``skip``: a failing member,
    whose failed rounds are decided at once, not at a ready)."""
    exploits = [e for e in result.events if e.kind == "exploit" and e.member not in skip]
    for e in exploits:
        assert e.data["donor_step"] == e.data["old_step"], e
    seen = [d for d in decisions if not d["failed"] and d["member"] not in skip]
    assert seen
    for d in seen:
        assert d["others"] == [d["ready_count"]] * len(d["others"]), d
        assert d["counters"] == [READY * d["ready_count"]] * len(d["others"]), d
    return exploits


def test_synchronous_decisions_see_one_round_across_processes(tmp_path):
    path = str(tmp_path / "decisions.jsonl")
    result, _, _ = run(
        tmp_path,
        synchronous=True,
        population=5,
        budget=gp.Budget(steps=20),
        exploit=M.RecordingTruncation(path),
    )
    assert result.stop_reason == "budget"
    assert all(m.status == "finished" and m.step == 20 for m in result.population)
    decisions = M.read_decisions(path)
    assert len(decisions) == 5 * (20 // READY - 1)
    exploits = same_round_decisions(result, decisions, skip=set())
    assert exploits, "the run should exploit"


def test_a_member_that_has_checkpointed_but_not_yet_waits_keeps_the_barrier(tmp_path):
    # member 2 (the best: it never copies) ends its second round; the worker holding it is
    # held between its checkpoint and the moment it waits for its decision until the other
    # members all wait at the barrier (or member 0 trains step 9, in the third round: that
    # must not happen before member 2's second-round decision, which must see the second
    # round)
    path = str(tmp_path / "decisions.jsonl")
    checkpoints = M.HeldCheckpoint(
        str(tmp_path / "checkpoints"),
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        log=str(tmp_path / "log.txt"),
        member=2,
        step=2 * READY,
        waiter=0,
    )
    result, _, _ = run(
        tmp_path,
        synchronous=True,
        initial=[{"lr": 0.05}, {"lr": 0.1}, {"lr": 0.4}, {"lr": 0.2}],
        exploit=M.RecordingTruncation(path),
        checkpoints=checkpoints,
    )
    assert Path(checkpoints.fired).read_text(encoding="utf-8") == "barrier"
    assert result.stop_reason == "budget"
    assert all(m.status == "finished" and m.step == BUDGET for m in result.population)
    decisions = M.read_decisions(path)
    assert [d for d in decisions if d["member"] == 2] != []
    same_round_decisions(result, decisions, skip=set())


@pytest.mark.parametrize(
    ("trigger", "options"),
    [
        pytest.param("raise 1 6 always\n", {"max_failures": 2}, id="raises"),
        pytest.param("sigkill 1 6 always\n", {"max_crashes": 1}, id="crashes"),
    ],
)
def test_a_member_failing_for_good_does_not_hold_the_barrier(tmp_path, trigger, options):
    path = str(tmp_path / "decisions.jsonl")
    result, _, _ = run(
        tmp_path,
        trigger=trigger,
        synchronous=True,
        exploit=M.RecordingTruncation(path),
        **options,
    )
    assert result.stop_reason == "budget"
    assert result.population[1].status == "failed"
    assert all(m.status == "finished" and m.step == BUDGET for m in result.population if m.id != 1)
    same_round_decisions(result, M.read_decisions(path), skip={1})


# -- Ctrl-C to the driver ------------------------------------------------------------------

CONFIG = textwrap.dedent(
    """
    metric = "score"
    population = 4
    seed = 0
    workers = 2
    lease_seconds = 5.0
    storage = "{storage}"

    [ready]
    every = {ready}

    [budget]
    steps = {budget}

    [space]
    lr = {{ float = [0.01, 0.5], log = true }}
    log = "{log}"
    trigger = "{trigger}"
    """
)


def test_ctrl_c_to_the_driver_stops_the_run_and_the_same_command_finishes_it(tmp_path):
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    log, trigger = tmp_path / "log.txt", tmp_path / "trigger"
    trigger.write_text("sigint-driver 2 7\n", encoding="utf-8")
    config = tmp_path / "pbt.toml"
    config.write_text(
        CONFIG.format(storage=storage, ready=READY, budget=BUDGET, log=log, trigger=trigger),
        encoding="utf-8",
    )
    command = [
        sys.executable,
        "-m",
        "genepool.cli",
        "run",
        "tests.executors._trainables:Climber",
        "--config",
        str(config),
        "--quiet",
    ]
    first = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert trigger.read_text(encoding="utf-8").startswith("#"), "the interrupt never fired"
    assert json.loads(first.stdout.strip().splitlines()[-1])["stop_reason"] == "interrupted"
    store = SQLStore(storage)
    population = store.population("run")
    assert any(m.status == "active" for m in population)
    # the interrupted member checkpointed where it stopped and kept it (the driver forwards
    # the interrupt to the workers, which may train a step or two more before they see it)
    interrupted = population[2]
    assert interrupted.status == "active"
    assert interrupted.checkpoint is not None
    assert interrupted.checkpoint.member == 2
    assert interrupted.step >= 7
    stopped_at = {m.id: m.step for m in population}
    for m in population:  # every checkpoint the store names is on disk
        if m.checkpoint is not None:
            assert (tmp_path / "pbt.db.checkpoints" / m.checkpoint.id / "payload.bin").exists()
    M.mark(str(log))

    second = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads(second.stdout.strip().splitlines()[-1])["stop_reason"] == "budget"
    population = store.population("run")
    assert all(m.status == "finished" and m.step == BUDGET for m in population)
    lines = M.read_log(str(log))
    M.no_restart_from_zero(lines, READY)
    starts: dict[int, int] = {}
    for kind, member, step, _ in M.after_mark(lines):
        if kind == "start":
            starts.setdefault(member, step)
    assert starts.get(2) == stopped_at[2], (starts, stopped_at)
    for member, step in starts.items():
        assert step == stopped_at[member], (starts, stopped_at)
