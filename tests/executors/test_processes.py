"""Local worker processes: the same loop in several processes, meeting through SQLite.

Kills come from inside the trainable (tests/executors/_trainables.py), never from sleeps.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import genepool as gp
from genepool.store.sql import SQLStore
from tests.executors import _trainables as T

BUDGET = 12
READY = 4
ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, trainable: object, *, kill: str = "", workers: int = 2, **options):
    log = tmp_path / "log.txt"
    executor = gp.ProcessExecutor(workers=workers)
    result = gp.run(
        trainable,  # type: ignore[arg-type]
        T.space(str(log), kill),
        metric="score",
        population=4,
        ready=gp.Every(READY),
        budget=gp.Budget(steps=BUDGET),
        seed=0,
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        executor=executor,
        lease_seconds=5.0,
        **options,
    )
    return result, executor, T.read_log(str(log))


def _resumed_from_a_checkpoint(lines: list[tuple[str, int, int, int]]) -> int:
    """The member killed (the log's 'kill' line) went on from a checkpoint taken before the
    kill: its next step is past its first ready and not past the step it died in. (A worker
    that still holds the member's checkpointed state resident goes on without a restart.)"""
    at, (_, member, died, _) = next((i, x) for i, x in enumerate(lines) if x[0] == "kill")
    following = [s for kind, m, s, _ in lines[at + 1 :] if kind == "step" and m == member]
    assert following, f"member {member} never trained again after it was killed"
    assert READY < following[0] <= died, (member, died, following[:3])
    return member


def _no_restart_from_zero_after_a_checkpoint(lines: list[tuple[str, int, int, int]]) -> None:
    """After a member's first ready (a checkpoint exists), it never starts from step 0."""
    T.no_restart_from_zero(lines, READY)


@pytest.mark.parametrize("api", ["class", "function"])
def test_workers_finish_the_budget(tmp_path: Path, api: str) -> None:
    trainable = T.Climber if api == "class" else T.climber_function
    result, executor, lines = _run(tmp_path, trainable)
    assert result.stop_reason == "budget"
    assert executor.started_processes == 2
    assert all(m.status == "finished" and m.step == BUDGET for m in result.members)
    assert {member for kind, member, _, _ in lines if kind == "step"} == {0, 1, 2, 3}
    assert result.best.score is not None
    assert result.best.score > 0.1
    _no_restart_from_zero_after_a_checkpoint(lines)


@pytest.mark.parametrize("api", ["class", "function"])
def test_a_killed_worker_is_replaced_and_its_member_resumes(tmp_path: Path, api: str) -> None:
    kill = tmp_path / "kill.txt"
    kill.write_text("sigkill 1 6\n", encoding="utf-8")
    trainable = T.Climber if api == "class" else T.climber_function
    result, executor, lines = _run(tmp_path, trainable, kill=str(kill))
    assert result.stop_reason == "budget"
    assert executor.started_processes == 3, "the dead worker was not replaced"
    assert all(m.status == "finished" and m.step == BUDGET for m in result.members)
    assert result.population[1].crashes == 0  # counted at the takeover, cleared by a checkpoint
    assert _resumed_from_a_checkpoint(lines) == 1
    _no_restart_from_zero_after_a_checkpoint(lines)


SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    import genepool as gp
    from tests.executors import _trainables as T
    result = gp.run(
        T.{trainable}, T.space({log!r}, {kill!r}), metric="score", population=4,
        ready=gp.Every({ready}), budget=gp.Budget(steps={budget}), seed=0,
        storage={storage!r}, workers=2, lease_seconds=5.0,
    )
    print(result.stop_reason)
    """
)


@pytest.mark.parametrize("api", ["class", "function"])
def test_killing_the_driver_then_running_again_resumes(tmp_path: Path, api: str) -> None:
    kill = tmp_path / "kill.txt"
    kill.write_text("sigkill-driver 2 7\n", encoding="utf-8")
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    script = SCRIPT.format(
        root=str(ROOT),
        trainable="Climber" if api == "class" else "climber_function",
        log=str(tmp_path / "log.txt"),
        kill=str(kill),
        ready=READY,
        budget=BUDGET,
        storage=storage,
    )
    first = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert first.returncode == -9, (
        first.stderr[-2000:],
        kill.read_text(encoding="utf-8"),
        (tmp_path / "log.txt").read_text(encoding="utf-8")[-3000:],
    )
    store = SQLStore(storage)
    assert any(m.status == "active" for m in store.population("run")), [
        (m.id, m.status, m.step, m.stop_reason) for m in store.population("run")
    ]
    T.mark(str(tmp_path / "log.txt"))  # the second run's lines come after this one
    second = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.strip().splitlines()[-1] == "budget"
    population = store.population("run")
    assert all(m.status == "finished" and m.step == BUDGET for m in population)
    lines = T.read_log(str(tmp_path / "log.txt"))
    _no_restart_from_zero_after_a_checkpoint(lines)
    # the driver died while member 2 trained step 7 (its worker may have gone on a little):
    # the second run brings member 2 back from a checkpoint, not from step 0
    second_run = T.after_mark(lines)
    starts = {member: step for kind, member, step, _ in reversed(second_run) if kind == "start"}
    assert starts.get(2, READY) >= READY, starts


def test_a_worker_killed_while_writing_a_checkpoint_never_loads_it(tmp_path: Path) -> None:
    kill = tmp_path / "kill.txt"
    kill.write_text("torn * 8\n", encoding="utf-8")
    result, executor, lines = _run(tmp_path, T.Climber, kill=str(kill))
    assert kill.read_text(encoding="utf-8").startswith("#"), "the torn write never happened"
    assert executor.started_processes == 3
    assert result.stop_reason == "budget"
    assert all(m.status == "finished" and m.step == BUDGET for m in result.members)
    _no_restart_from_zero_after_a_checkpoint(lines)
    # the torn member went on from an earlier checkpoint: the torn one was never published
    _resumed_from_a_checkpoint(lines)
    for member in result.population:  # every checkpoint in use reads back whole
        assert member.checkpoint is not None
        result.load(member.id)
    # once the run has ended, nothing is left behind: neither the torn write's temporary
    # directory nor the dead worker's spare directories, nor any unused checkpoint
    _only_current_checkpoints_on_disk(tmp_path, result.population)


def _only_current_checkpoints_on_disk(tmp_path: Path, population: gp.Population) -> None:
    root = tmp_path / "pbt.db.checkpoints"
    assert list(root.rglob(".tmp-*")) == []
    on_disk = {str(p.relative_to(root)) for p in root.glob("run/m*/s*")}
    kept = {p.id for m in population for p in m.previous}  # keep=1: the one before each
    assert on_disk == {m.checkpoint.id for m in population if m.checkpoint is not None} | kept


def test_a_checkpoint_whose_worker_died_before_recording_it_is_deleted(tmp_path: Path) -> None:
    kill = tmp_path / "kill.txt"
    # the first checkpoint any member writes from step 8 on. Not one member's: a member
    # may write none there (a round that ends in an exploit writes none, and a member that
    # copies a donor which has finished trains no more), but the best member writes one.
    kill.write_text("orphan * 8\n", encoding="utf-8")
    result, executor, lines = _run(tmp_path, T.Climber, kill=str(kill))
    (orphan,) = T.orphans(str(tmp_path / "log.txt"))
    found = re.fullmatch(r"run/m([0-3])/s(8|12)-[0-9a-f]+", orphan)
    assert found, orphan
    member = int(found[1])
    assert executor.started_processes == 3
    assert result.stop_reason == "budget"
    assert all(m.status == "finished" and m.step == BUDGET for m in result.members)
    assert result.population[member].crashes == 0  # counted at the takeover, then cleared
    assert _resumed_from_a_checkpoint(lines) == member  # not from the orphan: nothing named it
    assert not (tmp_path / "pbt.db.checkpoints" / orphan).exists()
    _only_current_checkpoints_on_disk(tmp_path, result.population)


SERIAL_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    import genepool as gp
    from tests.executors import _trainables as T
    result = gp.run(
        T.Climber, T.space({log!r}, {kill!r}), metric="score", population=3,
        ready=gp.Every({ready}), budget=gp.Budget(steps={budget}), seed=0,
        storage={storage!r},
    )
    print(result.stop_reason)
    """
)


def test_a_serial_run_killed_while_writing_a_checkpoint_resumes(tmp_path: Path) -> None:
    kill = tmp_path / "kill.txt"
    kill.write_text("torn * 8\n", encoding="utf-8")
    script = SERIAL_SCRIPT.format(
        root=str(ROOT),
        log=str(tmp_path / "log.txt"),
        kill=str(kill),
        ready=READY,
        budget=BUDGET,
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
    )
    first = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert first.returncode == -9, first.stderr[-2000:]
    second = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.strip().splitlines()[-1] == "budget"
    lines = T.read_log(str(tmp_path / "log.txt"))
    _no_restart_from_zero_after_a_checkpoint(lines)
    population = SQLStore(f"sqlite:///{tmp_path / 'pbt.db'}").population("run")
    assert all(m.status == "finished" and m.step == BUDGET for m in population)


def test_a_serial_run_killed_before_recording_a_checkpoint_deletes_it_on_resume(tmp_path):
    kill = tmp_path / "kill.txt"
    kill.write_text("orphan 2 8\n", encoding="utf-8")
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    script = SERIAL_SCRIPT.format(
        root=str(ROOT),
        log=str(tmp_path / "log.txt"),
        kill=str(kill),
        ready=READY,
        budget=BUDGET,
        storage=storage,
    )
    first = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert first.returncode == -9, first.stderr[-2000:]
    (orphan,) = T.orphans(str(tmp_path / "log.txt"))
    # written whole, and named by no member: nothing would ever delete it
    assert (tmp_path / "pbt.db.checkpoints" / orphan / "manifest.json").exists()
    store = SQLStore(storage)
    assert orphan not in {m.checkpoint.id for m in store.population("run") if m.checkpoint}
    second = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.strip().splitlines()[-1] == "budget"
    population = store.population("run")
    assert all(m.status == "finished" and m.step == BUDGET for m in population)
    assert not (tmp_path / "pbt.db.checkpoints" / orphan).exists()
    _only_current_checkpoints_on_disk(tmp_path, population)


EXIT_SCRIPT = textwrap.dedent(
    """
    import atexit, sys, threading
    from genepool.executors._child import exit_at_once

    class Late:
        def __del__(self):
            print("torn down")  # only when the interpreter is torn down

    keep = Late()
    atexit.register(lambda: print("exit hook"))
    print("written", end="")
    if sys.argv[1] == "thread":  # another non-daemon thread: the usual exit, which waits
        done = threading.Event()
        threading.Thread(target=done.wait).start()
        exit_at_once()
        print(" returned")
        done.set()
    else:
        exit_at_once()
        print(" not reached")
    """
)


@pytest.mark.parametrize(
    ("case", "out"),
    [
        ("alone", "writtenexit hook\n"),
        ("thread", "written returned\nexit hook\ntorn down\n"),
    ],
)
def test_a_worker_process_ends_without_teardown_but_with_its_exit_hooks(case, out):
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, case],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": ""},  # buffered: the flush is tested too
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == out


def test_workers_get_their_thread_cap_and_their_own_device(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    executor = gp.ProcessExecutor(workers=2, threads_per_worker=3, devices=["4", "7"])
    result = gp.run(
        T.environment_reporter,
        gp.Space(lr=gp.Float(0.01, 0.5)),
        metric="score",
        population=4,
        ready=gp.Every(2),
        budget=gp.Budget(steps=4),
        seed=0,
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        executor=executor,
    )
    assert {r.metrics["threads"] for r in result.reports} == {3.0}
    assert {r.metrics["device"] for r in result.reports} <= {4.0, 7.0}
    assert "OMP_NUM_THREADS" not in os.environ  # the driver's own is untouched


def test_a_time_budget_stops_worker_processes_and_a_resumed_run_gets_the_time_again(
    tmp_path: Path,
):
    from tests.test_resume import run as durable_run

    budget = gp.Budget(steps=10**6, seconds=1.5)  # the time ends each call, not the steps
    first = durable_run(tmp_path, workers=2, budget=budget)
    assert first.stop_reason == "time"
    assert all(m.status == "active" and m.step > 0 for m in first.members)
    second = durable_run(tmp_path, workers=2, budget=budget)
    assert second.stop_reason == "time"
    assert all(m.status == "active" for m in second.members)
    assert sum(m.step for m in second.members) > sum(m.step for m in first.members)
