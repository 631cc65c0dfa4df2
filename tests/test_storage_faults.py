"""A storage fault never costs a member (issue 13, item 2).

A full disk, an I/O error or a database that cannot write stops the run with a
:class:`~genepool.StorageError` naming the path and the fix; every member is left active
(no failure, no crash counted, no lease held), and the same call resumes once the cause
is gone. The faults are injected without privileges: a checkpoint store that raises the
operating system's error (ENOSPC, EIO) once a flag file exists, and a SQLite connection
that answers ``database or disk is full``.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from genepool._faults import abandoned
from genepool.checkpoints import _files
from genepool.store import WorkerInfo
from genepool.store.sql import SQLiteStore as SQLStore  # its sqlite3 connection: _dbapi
from tests.executors import _trainables as M
from tests.test_resume import READY, SPREAD, interrupt_at, log_of, run

FAULTS = [
    pytest.param(errno.ENOSPC, "free space", id="ENOSPC"),
    pytest.param(errno.EIO, "I/O error", id="EIO"),
]
#: Checkpoints from this step on fail while the flag file exists (the first ready's are
#: written: the members have something to resume from).
FAIL_FROM = 2 * READY


class FaultyCheckpoints(gp.LocalCheckpoints):
    """Local checkpoints whose writes at step >= ``FAIL_FROM`` raise ``OSError(code)``
    while the file ``flag`` exists (in every process: the flag is on disk)."""

    def __init__(self, root: str, *, flag: str, code: int) -> None:
        super().__init__(root)
        self.flag, self.code = flag, code

    def put(self, run: str, member: int, step: int, blob: bytes, **kw: Any) -> str:
        if step >= FAIL_FROM and os.path.exists(self.flag):
            raise OSError(self.code, os.strerror(self.code), self.root)
        return super().put(run, member, step, blob, **kw)


class FullDatabase:
    """A sqlite3 connection that answers ``database or disk is full`` to every write
    while ``full[0]`` is true, as SQLite does when its disk is full."""

    def __init__(self, raw: Any, full: list[bool]) -> None:
        self._raw, self._full = raw, full

    def _refuse(self, sql: str) -> None:
        words = sql.lstrip().split(None, 1)
        if self._full[0] and words and words[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql: str, *args: Any) -> Any:
        self._refuse(sql)
        return self._raw.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        self._refuse(sql)
        return self._raw.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def faulty(tmp_path: Path, code: int) -> FaultyCheckpoints:
    flag = tmp_path / "disk-full"
    flag.touch()
    return FaultyCheckpoints(str(tmp_path / "pbt.db.checkpoints"), flag=str(flag), code=code)


def assert_untouched(tmp_path: Path, *, claimable: bool = True) -> None:
    """Every member active, with no failure or crash counted, at a checkpoint of its
    first ready or later; ``claimable``: and none held by a lease."""
    with SQLStore(f"sqlite:///{tmp_path / 'pbt.db'}") as store:
        population = store.population("run")
        assert [m.status for m in population] == ["active"] * 4
        assert [(m.crashes, m.failures) for m in population] == [(0, 0)] * 4
        assert all(m.checkpoint is not None and m.step >= READY for m in population)
        if claimable:  # nobody holds one: each can be claimed at once
            me = WorkerInfo(name="test")
            leases = [store.claim("run", me, lease_seconds=5.0) for _ in range(4)]
            assert sorted(lease.member for lease in leases if lease is not None) == [0, 1, 2, 3]
            for lease in leases:
                assert lease is not None
                store.commit(lease, release=True)


def assert_completed(result: gp.Result, tmp_path: Path) -> None:
    assert result.stop_reason == "budget"
    assert result.failed == []
    assert all(m.status == "finished" and m.step == 12 for m in result.members)
    assert all(m.crashes == 0 for m in result.population)
    M.no_restart_from_zero(log_of(tmp_path), READY)


@pytest.mark.parametrize("api", [M.Climber, M.climber_function], ids=["class", "function"])
@pytest.mark.parametrize(("code", "fix"), FAULTS)
def test_a_checkpoint_disk_fault_stops_a_serial_run_and_the_same_call_resumes(
    tmp_path: Path, api: Any, code: int, fix: str
):
    checkpoints = faulty(tmp_path, code)
    options: dict[str, Any] = {"initial": SPREAD, "checkpoints": checkpoints}
    with pytest.raises(gp.StorageFaultError) as info:
        run(tmp_path, api, **options)
    message = str(info.value)
    assert checkpoints.root in message
    assert fix in message
    assert "run the same call again" in message
    assert "members active" in message
    assert_untouched(tmp_path)

    Path(checkpoints.flag).unlink()  # the cause is gone
    assert_completed(run(tmp_path, api, **options), tmp_path)


def test_the_library_checkpoint_store_turns_a_full_disk_into_a_storage_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # the operating system's error from deep inside LocalCheckpoints, not a wrapper's
    original = _files.write_file

    def full(path: str, data: bytes, *, fsync: bool) -> None:
        if (tmp_path / "disk-full").exists() and "s8-" in path:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(path, data, fsync=fsync)

    monkeypatch.setattr(_files, "write_file", full)
    (tmp_path / "disk-full").touch()
    with pytest.raises(gp.StorageFaultError, match=r"No space left on device.*free space"):
        run(tmp_path, initial=SPREAD)
    assert_untouched(tmp_path)
    (tmp_path / "disk-full").unlink()
    assert_completed(run(tmp_path, initial=SPREAD), tmp_path)


def test_a_checkpoint_disk_fault_stops_worker_processes_and_the_same_call_resumes(
    tmp_path: Path,
):
    checkpoints = faulty(tmp_path, errno.ENOSPC)
    executor = gp.ProcessExecutor(workers=2)
    options: dict[str, Any] = {"initial": SPREAD, "checkpoints": checkpoints}
    with pytest.raises(gp.StorageFaultError, match=r"No space left on device.*free space"):
        run(tmp_path, executor=executor, **options)
    assert executor.started_processes == 2  # a storage fault starts no other worker
    assert_untouched(tmp_path)

    Path(checkpoints.flag).unlink()
    assert_completed(run(tmp_path, workers=2, **options), tmp_path)


def test_a_full_database_stops_the_run_and_its_lease_is_given_back_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # the database refuses every write, the release of the lease too: the lease is left
    # behind, and the next run of this process gives it back (no crash, no waiting)
    store = SQLStore(f"sqlite:///{tmp_path / 'pbt.db'}")
    full: list[bool] = [False]
    filled: list[bool] = []
    dbapi = store._dbapi
    monkeypatch.setattr(store, "_dbapi", lambda: FullDatabase(dbapi(), full))

    class FillsTheDisk(M.Climber):
        def step(self) -> dict[str, float]:
            if self.steps == READY and self.member.id == 0 and not filled:  # round 2
                full[0] = True
                filled.append(True)  # once
            return super().step()

    options: dict[str, Any] = {"initial": SPREAD, "storage": store, "lease_seconds": 60.0}
    with pytest.raises(gp.StorageFaultError, match=r"database or disk is full.*free space"):
        run(tmp_path, FillsTheDisk, **options)
    left = abandoned(store)
    assert [lease.member for lease in left] == [0]
    full[0] = False
    assert_untouched(tmp_path, claimable=False)  # member 0's lease is still there

    started = time.monotonic()
    result = run(tmp_path, FillsTheDisk, **options)
    assert time.monotonic() - started < 30.0, "it waited for the lease to run out"
    assert abandoned(store) == []
    assert_completed(result, tmp_path)
    store.close()


def test_a_serial_run_waits_for_a_member_another_process_holds(tmp_path: Path):
    # never 'no claimable member' with a member active: it waits until the lease runs out
    interrupt_at(tmp_path, 0, 5)
    assert run(tmp_path).stop_reason == "interrupted"
    with SQLStore(f"sqlite:///{tmp_path / 'pbt.db'}") as store:
        elsewhere = WorkerInfo(name="elsewhere", host="another-machine", machine="")
        lease = store.claim("run", elsewhere, lease_seconds=1.5)  # and never renewed
        assert lease is not None
    started = time.monotonic()
    result = run(tmp_path)
    assert time.monotonic() - started >= 1.0  # it waited for the lease
    assert result.stop_reason == "budget"
    assert all(m.status == "finished" and m.step == 12 for m in result.members)


def test_fsync_from_run_and_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    flushed: list[str] = []
    original = _files.fsync_dir

    def counted(path: str) -> None:
        flushed.append(path)
        original(path)

    monkeypatch.setattr(_files, "fsync_dir", counted)
    run(tmp_path, budget=gp.Budget(steps=4))
    assert flushed == []  # off by default
    run(tmp_path, db="synced.db", budget=gp.Budget(steps=4), fsync=True)
    assert len(flushed) >= 4  # each checkpoint's folder at least

    with pytest.raises(gp.InvalidArgumentError, match=r"'fsync'.*True or False"):
        run(tmp_path, db="other.db", fsync="yes")
    with pytest.raises(gp.InvalidArgumentError, match=r"fsync=True.*LocalCheckpoints"):
        run(tmp_path, db="other.db", fsync=True, checkpoints=gp.LocalCheckpoints(str(tmp_path)))


def test_the_command_reports_a_storage_fault_and_exits_75(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from genepool.cli import main

    script = tmp_path / "train.py"
    script.write_text(
        "import genepool as gp\n"
        "SPACE = gp.Space(lr=gp.Float(0.01, 0.5))\n"
        "class T(gp.Trainable):\n"
        "    def setup(self, hp): self.x, self.lr = 0.0, hp['lr']\n"
        "    def apply_hparams(self, hp): self.lr = hp['lr']\n"
        "    def step(self): self.x += self.lr; return {'score': self.x}\n"
        "    def save(self): return {'x': self.x}\n"
        "    def load(self, s): self.x = s['x']\n",
        encoding="utf-8",
    )
    config = tmp_path / "pbt.toml"
    config.write_text(
        'metric = "score"\npopulation = 2\nseed = 0\nfsync = true\n[budget]\nsteps = 8\n',
        encoding="utf-8",
    )

    def full(path: str, data: bytes, *, fsync: bool) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_files, "write_file", full)
    url = f"sqlite:///{tmp_path / 'pbt.db'}"
    command = ["run", f"{script}:T", "--config", str(config), "--storage", url, "--quiet"]
    assert main(command) == 75
    said = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert said["stop_reason"] == "storage"
    assert "free space" in said["error"]
    monkeypatch.undo()
    assert main(command) == 0
    said = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert said["stop_reason"] == "budget"
    assert said["failed"] == []


def test_result_open_says_why_a_run_ended(tmp_path: Path):
    class Broken(M.Climber):
        def step(self) -> dict[str, float]:
            raise RuntimeError("broken")

    run(tmp_path, budget=gp.Budget(steps=4))
    run(tmp_path, Broken, db="broken.db", max_failures=1)
    interrupt_at(tmp_path, 0, 2)
    run(tmp_path, db="interrupted.db")
    with gp.Result.open(f"sqlite:///{tmp_path / 'pbt.db'}") as done:
        assert done.stop_reason == "budget"
        assert done.failed == []
    with gp.Result.open(f"sqlite:///{tmp_path / 'broken.db'}") as broken:
        assert broken.stop_reason == "all_failed"
        assert [(m.id, m.stop_reason) for m in broken.failed] == [(i, "failed") for i in range(4)]
    with gp.Result.open(f"sqlite:///{tmp_path / 'interrupted.db'}") as cut:
        assert cut.stop_reason == "interrupted"
