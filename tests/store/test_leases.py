"""Lease holders known dead (``genepool.store._leases.holder_dead``)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

import genepool as gp
from genepool.store import WorkerInfo, _leases


@pytest.fixture(autouse=True)
def _forget_seen_holders():
    _leases._seen_alive.clear()
    yield
    _leases._seen_alive.clear()


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_running_holder_is_alive():
    assert not _leases.holder_dead(WorkerInfo(name="me"))


def test_a_holder_whose_process_is_gone_is_dead():
    assert _leases.holder_dead(WorkerInfo(name="gone", pid=exited_pid(), proc_start=1))


def test_a_holder_on_another_host_is_never_known_dead():
    holder = WorkerInfo(name="far", host="elsewhere.invalid", pid=exited_pid(), proc_start=1)
    assert not _leases.holder_dead(holder)


def test_a_reused_pid_is_dead_at_once_even_just_after_its_holder_was_seen_alive():
    me = WorkerInfo(name="me")
    assert me.proc_start is not None
    assert not _leases.holder_dead(me)  # seen alive, and remembered
    impostor = WorkerInfo(name="old", pid=os.getpid(), proc_start=me.proc_start - 1)
    assert _leases.holder_dead(impostor)


def test_a_holder_seen_alive_is_not_read_from_proc_again_for_a_while(monkeypatch):
    reads: list[int] = []
    real = _leases._process_start

    def counting(pid: int) -> int | None:
        reads.append(pid)
        return real(pid)

    monkeypatch.setattr(_leases, "_process_start", counting)
    me = WorkerInfo(name="me", proc_start=real(os.getpid()))
    for _ in range(5):
        assert not _leases.holder_dead(me)
    assert reads == [os.getpid()]
    monkeypatch.setattr(_leases, "ALIVE_RECHECK_SECONDS", 0.0)
    assert not _leases.holder_dead(me)
    assert reads == [os.getpid()] * 2


# -- the machine: the same host name is not enough ----------------------------------------


def this_boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
        return f.read().strip()


linux_only = pytest.mark.skipif(
    not os.path.exists("/proc/self/ns/pid"), reason="boot ids and PID namespaces are Linux's"
)

#: A boot id that no kernel has: a machine other than this one (a container host's twin, a
#: cloned image) that shares this one's host name.
OTHER_BOOT = "00000000-0000-4000-8000-000000000000"


@linux_only
def test_a_worker_records_this_boot_and_pid_namespace():
    machine = WorkerInfo(name="me").machine
    assert machine == f"{this_boot_id()}/{os.readlink('/proc/self/ns/pid')}"


@linux_only
def test_a_dead_holder_in_this_boot_and_pid_namespace_is_dead_at_once():
    holder = WorkerInfo(
        name="gone", pid=exited_pid(), proc_start=1, machine=_leases._this_machine()
    )
    assert _leases.holder_dead(holder)


@linux_only
def test_a_dead_pid_on_another_machine_with_this_host_name_is_not_known_dead():
    namespace = os.readlink("/proc/self/ns/pid")
    holder = WorkerInfo(
        name="twin", pid=exited_pid(), proc_start=1, machine=f"{OTHER_BOOT}/{namespace}"
    )
    assert holder.host == _leases._hostname()
    assert not _leases.holder_dead(holder)


@linux_only
def test_a_dead_pid_in_another_pid_namespace_is_not_known_dead():
    holder = WorkerInfo(
        name="container", pid=exited_pid(), proc_start=1, machine=f"{this_boot_id()}/pid:[1]"
    )
    assert holder.machine != _leases._this_machine()
    assert not _leases.holder_dead(holder)


def test_a_holder_on_an_unknown_machine_is_not_known_dead():
    assert not _leases.holder_dead(
        WorkerInfo(name="old", pid=exited_pid(), proc_start=1, machine="")
    )


def test_where_the_machine_cannot_be_read_no_holder_is_known_dead(monkeypatch):
    def unreadable(path: str) -> str:
        raise OSError(f"{path}: no such file")

    _leases._this_machine.cache_clear()
    monkeypatch.setattr(os, "readlink", unreadable)
    try:
        assert _leases._this_machine() == ""
        gone = WorkerInfo(name="gone", pid=exited_pid(), proc_start=1)
        assert gone.machine == ""
        assert not _leases.holder_dead(gone)
    finally:
        _leases._this_machine.cache_clear()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_reads_its_own_machine():
    def unread(path: str) -> str:
        return "unread"

    assert _leases._this_machine() != "unread"  # cached in this process
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12 warns of a fork beside threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: its cache was cleared, so it reads the (patched) files again
        try:
            os.readlink = unread  # type: ignore[assignment]
            os.write(write, _leases._this_machine().encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, encoding="ascii") as f:
        assert f.read().endswith("/unread")


# -- old holder rows ---------------------------------------------------------------------


def test_an_old_five_field_holder_reads_back_with_its_machine_unknown():
    from genepool.store import _codec

    holder = _codec.holder_from_json('["w", "host", 12, 3.5, 77]')
    assert holder == WorkerInfo(
        name="w", host="host", pid=12, started=3.5, proc_start=77, machine=""
    )
    new = WorkerInfo(name="w", pid=12, started=3.5, proc_start=77, machine="boot/pid:[9]")
    assert _codec.holder_from_json(_codec.holder_json(new)) == new


@pytest.mark.parametrize(
    "text",
    ['["w", "host", 12, 3.5, 77, 5]', '["w", "host", 12, 3.5, 77, "m", 1]', '["w", "host"]'],
)
def test_a_holder_of_the_wrong_shape_is_corrupt(text):
    from genepool.store import _codec

    with pytest.raises(_codec.Corrupt):
        _codec.holder_from_json(text)


def test_an_old_holder_row_with_a_dead_pid_on_this_host_waits_for_its_lease(tmp_path):
    """A lease written by an older genepool names no machine: its holder may be a twin
    machine's worker, alive, so the member is taken over only when the lease runs out."""
    import sqlite3

    import genepool as gp
    from genepool.member import MemberView
    from genepool.store.sql import SQLStore

    url, clock = f"sqlite:///{tmp_path / 'store.db'}", gp.ManualClock()
    store = SQLStore(url, clock=clock)
    store.create_run("run", config={}, members=[MemberView(id=0, hparams={"lr": 0.1})])
    assert store.claim("run", WorkerInfo(name="w"), lease_seconds=10.0) is not None
    store.close()
    old = f'["old", "{_leases._hostname()}", {exited_pid()}, 0.0, 1]'
    with sqlite3.connect(tmp_path / "store.db") as db:
        assert db.execute("UPDATE genepool_members SET holder = ?", (old,)).rowcount == 1
    db.close()
    store = SQLStore(url, clock=clock)  # a new store: it reads the rows afresh
    try:
        assert store.claim("run", WorkerInfo(name="w2"), lease_seconds=10.0) is None
        clock.advance(11.0)
        assert store.claim("run", WorkerInfo(name="w2"), lease_seconds=10.0) is not None
        assert store.population("run").members[0].crashes == 1
    finally:
        store.close()


def test_stale_lease_error_is_a_storage_error():
    assert issubclass(gp.StaleLeaseError, gp.StorageError)
