"""Lease holders known dead (``genepool.store._base.holder_dead``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from genepool.store import WorkerInfo, _base


@pytest.fixture(autouse=True)
def _forget_seen_holders():
    _base._seen_alive.clear()
    yield
    _base._seen_alive.clear()


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_running_holder_is_alive():
    assert not _base.holder_dead(WorkerInfo(name="me"))


def test_a_holder_whose_process_is_gone_is_dead():
    assert _base.holder_dead(WorkerInfo(name="gone", pid=exited_pid(), proc_start=1))


def test_a_holder_on_another_host_is_never_known_dead():
    holder = WorkerInfo(name="far", host="elsewhere.invalid", pid=exited_pid(), proc_start=1)
    assert not _base.holder_dead(holder)


def test_a_reused_pid_is_dead_at_once_even_just_after_its_holder_was_seen_alive():
    me = WorkerInfo(name="me")
    assert me.proc_start is not None
    assert not _base.holder_dead(me)  # seen alive, and remembered
    impostor = WorkerInfo(name="old", pid=os.getpid(), proc_start=me.proc_start - 1)
    assert _base.holder_dead(impostor)


def test_a_holder_seen_alive_is_not_read_from_proc_again_for_a_while(monkeypatch):
    reads: list[int] = []
    real = _base._process_start

    def counting(pid: int) -> int | None:
        reads.append(pid)
        return real(pid)

    monkeypatch.setattr(_base, "_process_start", counting)
    me = WorkerInfo(name="me", proc_start=real(os.getpid()))
    for _ in range(5):
        assert not _base.holder_dead(me)
    assert reads == [os.getpid()]
    monkeypatch.setattr(_base, "ALIVE_RECHECK_SECONDS", 0.0)
    assert not _base.holder_dead(me)
    assert reads == [os.getpid()] * 2
