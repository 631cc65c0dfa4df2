"""Crashes: a worker's death counts against its member only while the run's driver lives,
the count starts again whenever the member checkpoints progress, and failed members can
be brought back (``Store.revive``, ``genepool revive``, ``gp.run(revive=True)``).

Kills and failures come from inside the trainable (tests/executors/_trainables.py); a
death is otherwise simulated with a lease holder whose pid has exited, on this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from genepool.cli import main
from genepool.store import WorkerInfo, _leases
from genepool.store.sql import SQLStore
from tests.executors import _trainables as T

READY = 4
BUDGET = 12
ROOT = Path(__file__).resolve().parents[1]
RUN = "run"

linux_only = pytest.mark.skipif(
    not os.path.exists("/proc/self/ns/pid"), reason="boot ids and PID namespaces are Linux's"
)


def exited_pid() -> int:
    """The pid of a process of this machine that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def dead_worker(*, driver_alive: bool) -> WorkerInfo:
    """A lease holder of this machine that has died; its driver is this process (alive)
    or one that has exited too."""
    here = os.getpid()
    return WorkerInfo(
        name="killed",
        pid=exited_pid(),
        proc_start=1,
        driver_pid=here if driver_alive else exited_pid(),
        driver_start=_leases._process_start(here) if driver_alive else 1,
    )


def storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pbt.db'}"


def run(tmp_path: Path, *, population: int = 1, **options: Any) -> gp.Result:
    """A serial SQLite run in ``tmp_path``; its trigger file is ``tmp_path/trigger``."""
    settings: dict[str, Any] = {
        "metric": "score",
        "population": population,
        "ready": gp.Every(READY),
        "budget": gp.Budget(steps=BUDGET),
        "seed": 0,
        "storage": storage(tmp_path),
        "exploit": None,
    }
    settings.update(options)
    space = T.space(str(tmp_path / "log.txt"), str(tmp_path / "trigger"))
    return gp.run(T.Climber, space, **settings)


def trigger(tmp_path: Path, *lines: str) -> None:
    (tmp_path / "trigger").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def die_holding(url: str, worker: WorkerInfo) -> None:
    """A worker claims the run's only member and dies holding it (its lease stays)."""
    store = SQLStore(url)
    try:
        assert store.claim(RUN, worker, lease_seconds=600.0) is not None
    finally:
        store.close()


def member(url: str, i: int = 0) -> gp.MemberView:
    store = SQLStore(url)
    try:
        return store.population(RUN)[i]
    finally:
        store.close()


# -- who died ----------------------------------------------------------------------------


def test_a_worker_records_its_driver() -> None:
    info = WorkerInfo.with_driver("w", started=0.0, driver=os.getppid())
    assert info.driver_pid == os.getppid()
    assert info.driver_start == _leases._process_start(os.getppid())
    assert WorkerInfo.with_driver("w", started=0.0, driver=None).driver_pid is None


@linux_only
def test_a_worker_that_died_with_its_driver_counts_no_crash(tmp_path: Path) -> None:
    trigger(tmp_path, "sigint 0 6")
    assert run(tmp_path).stop_reason == "interrupted"
    url = storage(tmp_path)
    for _ in range(3):  # three driver kills in a row, each while the member was held
        die_holding(url, dead_worker(driver_alive=False))
    assert member(url).crashes == 0
    result = run(tmp_path, max_crashes=1)
    assert result.stop_reason == "budget"
    assert (result.members[0].status, result.members[0].step) == ("finished", BUDGET)


@linux_only
def test_a_worker_killed_while_its_driver_lives_counts_one_crash(tmp_path: Path) -> None:
    trigger(tmp_path, "sigint 0 6")
    run(tmp_path)
    url = storage(tmp_path)
    die_holding(url, dead_worker(driver_alive=True))
    die_holding(url, dead_worker(driver_alive=True))  # takes the first one's lease: 1
    assert member(url).crashes == 1
    result = run(tmp_path, max_crashes=2)  # its claim takes the second one's: 2
    view = result.population[0]
    assert (view.status, view.stop_reason, view.crashes) == ("failed", "crashed", 2)


@linux_only
def test_crashes_start_again_after_a_new_checkpoint(tmp_path: Path) -> None:
    # max_crashes - 1 crashes, progress, max_crashes - 1 again: never failed
    trigger(tmp_path, "sigint 0 6", "sigint 0 10")
    url = storage(tmp_path)
    run(tmp_path)  # checkpointed at step 4, stopped at 6
    crashed = WorkerInfo(name="killed", pid=exited_pid(), proc_start=1)  # no driver: counts
    die_holding(url, crashed)
    die_holding(url, crashed)
    result = run(tmp_path)  # the claim counts the second: 2 of 3; checkpoints step 8
    assert result.stop_reason == "interrupted"
    assert result.members[0].step >= 8
    assert result.population[0].crashes == 0  # progress: the count starts again
    die_holding(url, crashed)
    die_holding(url, crashed)
    result = run(tmp_path)
    assert result.stop_reason == "budget"
    assert (result.members[0].status, result.members[0].step) == ("finished", BUDGET)


DRIVER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    import genepool as gp
    from tests.executors import _trainables as T
    result = gp.run(
        T.Climber, T.space({log!r}, {trigger!r}), metric="score", population=4,
        ready=gp.Every({ready}), budget=gp.Budget(steps={budget}), seed=0,
        storage={storage!r}, workers=2, lease_seconds=60.0,
    )
    print(result.stop_reason)
    """
)


def test_a_driver_killed_again_and_again_fails_no_member(tmp_path: Path) -> None:
    # the driver is SIGKILLed three times while member 2 trains, each time before its next
    # checkpoint: its worker dies with the driver, and that is never held against it
    trigger(tmp_path, "sigkill-driver 2 6", "sigkill-driver 2 7", "sigkill-driver 2 8")
    script = DRIVER.format(
        root=str(ROOT),
        log=str(tmp_path / "log.txt"),
        trigger=str(tmp_path / "trigger"),
        ready=READY,
        budget=BUDGET,
        storage=storage(tmp_path),
    )
    codes = []
    for _ in range(6):
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
        )
        codes.append(done.returncode)
        if done.returncode == 0:
            assert done.stdout.strip().splitlines()[-1] == "budget"
            break
        assert done.returncode == -9, done.stderr[-2000:]
    assert codes == [-9, -9, -9, 0]
    store = SQLStore(storage(tmp_path))
    try:
        population = store.population(RUN)
    finally:
        store.close()
    assert [(m.status, m.step, m.crashes) for m in population] == [("finished", BUDGET, 0)] * 4


# -- revive ------------------------------------------------------------------------------


def failed_run(tmp_path: Path) -> gp.Result:
    """Member 1 of 2 fails from step 6 on (after its checkpoint at step 4)."""
    trigger(tmp_path, "raise 1 6 always")
    result = run(tmp_path, population=2)
    assert [m.status for m in result.members] == ["finished", "failed"]
    trigger(tmp_path)  # it would train now
    return result


def revives(url: str) -> list[gp.Event]:
    store = SQLStore(url)
    try:
        return [e for e in store.events(RUN) if e.kind == "revive"]
    finally:
        store.close()


def test_genepool_revive_brings_failed_members_back(tmp_path: Path, capsys) -> None:
    failed_run(tmp_path)
    url = storage(tmp_path)
    assert main(["revive", "--storage", url]) == 0
    assert json.loads(capsys.readouterr().out) == {"run": RUN, "revived": [1]}
    view = member(url, 1)
    assert (view.status, view.failures, view.crashes, view.stop_reason) == ("active", 0, 0, None)
    assert view.checkpoint is not None
    assert view.step == READY
    [event] = revives(url)
    assert (event.member, event.step, event.data["failures"]) == (1, READY, 3)
    assert main(["revive", "--storage", url, "--member", "0", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"run": RUN, "revived": []}
    assert main(["revive", "--storage", url, "--member", "7"]) == 2
    assert "7" in capsys.readouterr().err
    T.mark(str(tmp_path / "log.txt"))
    result = run(tmp_path, population=2)  # a resume trains it from its checkpoint
    assert [(m.status, m.step) for m in result.members] == [("finished", BUDGET)] * 2
    starts = [
        s
        for kind, m, s, _ in T.after_mark(T.read_log(str(tmp_path / "log.txt")))
        if kind == "start" and m == 1
    ]
    assert starts[:1] == [READY]
    report = tmp_path / "report.html"  # the report counts the revive with the events
    assert main(["report", "--storage", url, "-o", str(report)]) == 0
    assert "revive 1" in report.read_text(encoding="utf-8")


def test_run_with_revive_resumes_failed_members(tmp_path: Path) -> None:
    failed_run(tmp_path)
    again = run(tmp_path, population=2)  # without revive it stays failed
    assert [m.status for m in again.members] == ["finished", "failed"]
    result = run(tmp_path, population=2, revive=True)
    assert [(m.status, m.step) for m in result.members] == [("finished", BUDGET)] * 2
    assert [e.member for e in revives(storage(tmp_path))] == [1]


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_revive_must_be_true_or_false(tmp_path: Path, value: object) -> None:
    with pytest.raises(gp.InvalidArgumentError, match=r"'revive'.*True or False"):
        run(tmp_path, revive=value)
