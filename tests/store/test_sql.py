"""The SQL store beyond the contract: schema versions, several runs and several store
instances on one database, exact JSON, the SQLite settings, and several processes at once.

The contract itself runs over SQLite and PostgreSQL in ``test_contract.py``. Tests taking
``url`` run on both (PostgreSQL: a fresh schema per test; skipped without a server, failed
when ``CI`` is set).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import multiprocessing
import os
import pickle
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

import genepool as gp
from genepool.member import CheckpointRef, Event, MemberView, Report
from genepool.store import (
    MemoryStore,
    WorkerInfo,
    _codec,
    _snapshots,
    _sqlite_file,
    _sqlschema,
    open_store,
    sql,
)
from genepool.store.sql import SCHEMA_VERSION, SQLiteStore, SQLStore
from tests.store.test_contract import postgres_url, sqlite_url

RUN = "run"
W1 = WorkerInfo(name="w1")
W2 = WorkerInfo(name="w2")
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> str:
    return sqlite_url(request) if request.param == "sqlite" else postgres_url(request)


@pytest.fixture
def opened() -> Iterator[list[SQLStore]]:
    """Stores a test opens, closed when it ends."""
    stores: list[SQLStore] = []
    yield stores
    for store in stores:
        store.close()


def open_sql(opened: list[SQLStore], url: str, **kwargs: Any) -> SQLStore:
    store = SQLStore(url, **kwargs)
    opened.append(store)
    return store


def execute(url: str, statement: str) -> list[tuple[Any, ...]]:
    """Run SQL on the store's database, outside the store (as an operator would)."""
    engine = sa.create_engine(_sqlschema.sa_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def members(n: int) -> list[MemberView]:
    return [MemberView(id=i, hparams={"lr": 0.1 * (i + 1)}) for i in range(n)]


def must_claim(store: SQLStore, worker: WorkerInfo = W1, run: str = RUN) -> gp.store.Lease:
    lease = store.claim(run, worker, lease_seconds=60.0)
    assert lease is not None
    return lease


# -- schema versions ---------------------------------------------------------------------


def test_schema_version_is_stored(url, opened):
    open_sql(opened, url)
    assert execute(url, "SELECT version FROM genepool_schema_version") == [(SCHEMA_VERSION,)]
    open_sql(opened, url)  # opening again changes nothing
    assert execute(url, "SELECT version FROM genepool_schema_version") == [(SCHEMA_VERSION,)]


def test_a_newer_schema_is_refused_naming_both_versions(url, opened):
    open_sql(opened, url).close()
    newer = SCHEMA_VERSION + 1
    execute(url, f"UPDATE genepool_schema_version SET version = {newer}")
    with pytest.raises(gp.StorageError, match=rf"version {newer}.*version {SCHEMA_VERSION}"):
        SQLStore(url)
    # refusing wrote nothing
    assert execute(url, "SELECT version FROM genepool_schema_version") == [(newer,)]


@pytest.mark.parametrize("how", ["no version table", "no version row", "version 0"])
def test_an_older_schema_is_upgraded(url, opened, monkeypatch, how):
    store = open_sql(opened, url)
    store.create_run(RUN, config={"mode": "min"}, members=members(2))
    lease = must_claim(store)
    row = dataclasses.replace(store.population(RUN)[lease.member], step=4, score=0.5)
    store.commit(lease, member=row, reports=[Report(lease.member, 4, {"s": 1.0}, 1.0)])
    store.close()
    statement = {
        "no version table": "DROP TABLE genepool_schema_version",
        "no version row": "DELETE FROM genepool_schema_version",
        "version 0": "UPDATE genepool_schema_version SET version = 0",
    }[how]
    execute(url, statement)

    calls: list[int] = []
    upgrade = _sqlschema._UPGRADES[0]

    def spy(conn: sa.Connection) -> None:
        calls.append(0)
        upgrade(conn)

    monkeypatch.setitem(_sqlschema._UPGRADES, 0, spy)
    again = open_sql(opened, url)
    assert calls == [0]
    assert execute(url, "SELECT version FROM genepool_schema_version") == [(SCHEMA_VERSION,)]
    # the data survived and the store works
    assert again.population(RUN)[lease.member].step == 4
    assert again.population(RUN).mode == "min"
    assert len(again.history(RUN).reports) == 1
    again.commit(lease, release=True)
    assert again.claim(RUN, W2, lease_seconds=60.0) is not None
    open_sql(opened, url)
    assert calls == [0]  # upgraded once


def test_every_store_object_on_one_database_reads_its_one_identity(url, opened):
    first = open_sql(opened, url)
    identity = first.identity
    assert execute(url, "SELECT key, value FROM genepool_meta") == [("identity", identity)]
    assert open_sql(opened, url).identity == identity  # another object, as another process
    first.close()
    assert open_sql(opened, url).identity == identity  # opened again
    handed = pickle.loads(pickle.dumps(first))  # a worker's copy
    opened.append(handed)
    assert handed.identity == identity
    assert open_sql(opened, url, read_only=True).identity == identity


def test_two_databases_have_two_identities(tmp_path, opened):
    a = open_sql(opened, f"sqlite:///{tmp_path / 'a.db'}")
    b = open_sql(opened, f"sqlite:///{tmp_path / 'b.db'}")
    assert a.identity != b.identity


def test_a_database_written_before_identities_gets_one_when_opened_to_write(url, opened):
    open_sql(opened, url).close()
    execute(url, "DROP TABLE genepool_meta")
    execute(url, "UPDATE genepool_schema_version SET version = 1")
    reader = open_sql(opened, url, read_only=True)
    with pytest.raises(gp.StorageError, match="no identity") as info:
        _ = reader.identity
    assert "Fix: open it to write once" in str(info.value)
    identity = open_sql(opened, url).identity  # upgraded to version 2
    assert execute(url, "SELECT version FROM genepool_schema_version") == [(SCHEMA_VERSION,)]
    assert open_sql(opened, url, read_only=True).identity == identity


def test_an_empty_database_gets_every_table(url, opened):
    open_sql(opened, url)
    engine = sa.create_engine(_sqlschema.sa_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert {t.name for t in _sqlschema._metadata.sorted_tables} <= tables


# -- runs, instances, exact values ---------------------------------------------------------


def test_several_runs_share_one_database(url, opened):
    a = open_sql(opened, url)
    assert a.create_run("first", config={"mode": "min", "seed": 1}, members=members(2))
    assert a.create_run("second", config={"mode": "max", "seed": 2}, members=members(3))
    assert not a.create_run("first", config={"mode": "max"}, members=members(5))
    first, second = must_claim(a, run="first"), must_claim(a, run="second")
    for lease, checkpoint in [(first, "shared-id"), (second, "shared-id")]:
        view = a.population(lease.run)[lease.member]
        ref = CheckpointRef(checkpoint, lease.member, 4, 4.0, 1.0, {})
        a.commit(
            lease,
            member=dataclasses.replace(view, step=4, checkpoint=ref),
            reports=[Report(lease.member, 4, {"run": lease.run}, 0.0)],
            events=[Event("start", lease.member, 0, {"run": lease.run}, 0.0)],
        )
    b = open_sql(opened, url)
    assert b.runs() == ["first", "second"]
    assert (len(b.population("first")), len(b.population("second"))) == (2, 3)
    assert (b.population("first").mode, b.population("second").mode) == ("min", "max")
    assert b.run_config("second")["seed"] == 2
    for run in ("first", "second"):
        history = b.history(run)
        assert [r.metrics["run"] for r in history.reports] == [run]
        assert [e.data["run"] for e in history.events] == [run]
    # collecting in one run touches nothing of the other
    a.commit(
        first, member=dataclasses.replace(a.population("first")[first.member], checkpoint=None)
    )
    assert b.collect("first", ["shared-id"]) == ["shared-id"]
    assert b.collect("second", ["shared-id"]) == []  # member's current checkpoint there
    a.commit(second, pin="shared-id")  # not collected in this run: can be pinned


def test_the_snapshot_cache_follows_writes_of_another_instance(url, opened, monkeypatch):
    clock = gp.ManualClock()
    a, b = open_sql(opened, url, clock=clock), open_sql(opened, url, clock=clock)
    rows = [*members(2), *(dataclasses.replace(m, status="finished") for m in members(4)[2:])]
    a.create_run(RUN, config={}, members=rows)
    before = a.population(RUN)
    held = must_claim(b, W2)
    assert held.member == 0
    b.commit(held, member=dataclasses.replace(before[0], step=5, ready_count=1))
    seen = a.population(RUN)
    assert seen[0].step == 5
    assert before[0].step == 0  # the older snapshot did not change
    # a's claim sees b's lease, and a's commit returns b's write too
    mine = must_claim(a, W1)
    assert mine.member == 1
    pop = a.commit(mine, member=dataclasses.replace(seen[1], step=3))
    assert (pop[0].step, pop[1].step) == (5, 3)
    assert b.population(RUN)[1].step == 3

    # only rows changed since the cache are read again
    decoded: list[str] = []
    original = _codec.view_from_json

    def counting(text: str) -> MemberView:
        decoded.append(text)
        return original(text)

    monkeypatch.setattr(_snapshots, "view_from_json", counting)
    a.population(RUN)
    assert decoded == []
    b.commit(held, member=dataclasses.replace(b.population(RUN)[0], step=9), release=True)
    decoded.clear()
    assert a.population(RUN)[0].step == 9
    assert len(decoded) == 1

    # a lease b takes over from a (expired) fences a, and counts a crash
    clock.advance(61.0)
    taken = must_claim(b, W2)
    assert taken.member == 1
    with pytest.raises(gp.StaleLeaseError):
        a.commit(mine, member=dataclasses.replace(seen[1], step=99))
    assert a.population(RUN)[1].crashes == 1
    assert a.population(RUN)[1].step == 3


def test_a_commit_of_reports_alone_sees_and_fences_as_any_other(url, opened):
    """Reports and events change no member row, so they bump no run version (the run's
    row is not written): the commit still reads what another instance wrote, returns it,
    and is refused once that instance holds the member."""
    clock = gp.ManualClock()
    a, b = open_sql(opened, url, clock=clock), open_sql(opened, url, clock=clock)
    a.create_run(RUN, config={"metric": "score"}, members=members(2))
    mine = must_claim(a, W1)
    theirs = must_claim(b, W2)
    b.commit(theirs, member=dataclasses.replace(b.population(RUN)[1], step=7))
    version = execute(url, "SELECT version FROM genepool_runs")
    pop = a.commit(mine, reports=[Report(0, 1, {"score": 0.5}, 0.0)])
    assert pop[1].step == 7  # b's write, read by a's commit
    a.commit(mine, events=[Event("note", 0, 1, {}, 0.0)])
    assert execute(url, "SELECT version FROM genepool_runs") == version
    clock.advance(61.0)
    taken = must_claim(b, W2)
    assert taken.member == 0
    with pytest.raises(gp.StaleLeaseError):
        a.commit(mine, reports=[Report(0, 2, {"score": 0.9}, 0.0)])
    with pytest.raises(gp.StaleLeaseError):
        a.commit(mine, events=[Event("note", 0, 2, {}, 0.0)])
    history = b.history(RUN)
    assert [(r.member, r.step) for r in history.reports] == [(0, 1)]
    assert [(e.kind, e.step) for e in history.events] == [("note", 1)]


def tricky_view() -> MemberView:
    hparams = {
        "lr": 0.1,
        "n": 3,
        "one": 1.0,
        "big": 2**62 + 1,
        "tiny": 5e-324,
        "third": 1 / 3,
        "neg_zero": -0.0,
        "inf": math.inf,
        "none": None,
        "flag": True,
        "name": "adam ünïcode",
        "layers": (64, 32),
        "empty": (),
        "nested": {"betas": (0.9, 0.999), "list": [1, 2.0, "x", None, (1, [2])], "d": {}},
        "tag_like": {"$t": [1, 2]},
        "keys": {1: "int key", (2, 3): "tuple key"},
    }
    ref = CheckpointRef("ck-1", 2, 40, 40.5, -1.25e-7, {"lr": 0.2, "layers": (8,)})
    return MemberView(
        id=0,
        hparams=hparams,
        step=40,
        generation=3,
        parent=2,
        checkpoint=ref,
        score=-1.25e-7,
        recent=(0.5, 1e300, -2.0, 3.0000000000000004),
        failures=1,
        ready_count=10,
        stop_reason=None,
        pending=True,
        crashes=2,
    )


def test_member_view_round_trips_exactly(url, opened):
    view = tricky_view()
    nan_view = MemberView(id=1, hparams={"x": math.nan}, score=math.nan, recent=(math.nan, 1.0))
    open_sql(opened, url).create_run(
        RUN, config={"initial": [view.hparams]}, members=[view, nan_view]
    )
    fresh = open_sql(opened, url)  # reads the database, not a cache
    back = fresh.population(RUN)
    assert back[0] == view
    assert repr(back[0]) == repr(view)  # and the same types: ints, floats, tuples, -0.0
    assert repr(back[1]) == repr(nan_view)
    assert fresh.run_config(RUN)["initial"] == [view.hparams]
    assert repr(fresh.run_config(RUN)["initial"]) == repr([view.hparams])


def test_reports_and_events_round_trip_with_the_score_apart(url, opened):
    store = open_sql(opened, url)
    store.create_run(RUN, config={"metric": "loss"}, members=members(1))
    lease = must_claim(store)
    reports = [
        Report(0, 1, {"loss": 0.25, "acc": 0.9, "shape": (2, 3)}, 10.5),
        Report(0, 2, {"acc": 1, "loss": 3}, 11.0),  # an int score keeps its type
        Report(0, 3, {"loss": math.inf}, 12.0),
        Report(0, 4, {"other": "no score"}, 13.0),
    ]
    events = [Event("exploit", 0, 4, {"donor": 3, "old_hparams": {"l": (1, 2)}}, 14.0)]
    store.commit(lease, reports=reports, events=events)
    history = open_sql(opened, url).history(RUN)
    assert history.reports == tuple(reports)
    assert repr(history.reports) == repr(tuple(reports))
    assert repr(history.events) == repr(tuple(events))
    rows = execute(url, "SELECT score, metrics FROM genepool_reports ORDER BY seq")
    assert rows[0] == (0.25, '{"acc":0.9,"shape":{"$t":[2,3]}}')  # the score only in its column
    assert rows[1][0] == 3.0
    assert rows[3][0] is None


def test_numpy_values_are_stored_as_python_values(tmp_path, opened):
    store = open_sql(opened, f"sqlite:///{tmp_path / 'np.db'}")
    view = MemberView(id=0, hparams={"lr": np.float32(0.5), "n": np.int64(3), "b": np.bool_(True)})
    store.create_run(RUN, config={"arr": np.arange(3)}, members=[view])
    back = open_sql(opened, f"sqlite:///{tmp_path / 'np.db'}").population(RUN)[0]
    assert back.hparams == {"lr": 0.5, "n": 3, "b": True}
    assert [type(v) for v in back.hparams.values()] == [float, int, bool]
    with pytest.raises(gp.StorageError, match="cannot be stored"):
        store.create_run("bad", config={"f": object()}, members=[])


# -- SQLite ------------------------------------------------------------------------------


def test_sqlite_runs_in_wal_with_immediate_write_transactions(tmp_path, opened):
    store = open_sql(opened, f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(store, SQLiteStore)  # what SQLStore makes of a SQLite URL
    store.create_run(RUN, config={}, members=members(1))
    with store._require_engine().connect() as conn:  # a connection as the store makes them
        pragma = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
        }
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 1,
        "busy_timeout": 30000,
        "foreign_keys": 1,
    }
    statements: list[str] = []
    raw = store._connection().connection.dbapi_connection
    assert raw is not None
    raw.set_trace_callback(statements.append)
    try:
        lease = must_claim(store)
        store.commit(lease, release=True)
        store.population(RUN)
    finally:
        raw.set_trace_callback(None)
    begins = [s for s in statements if s.startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE", "BEGIN IMMEDIATE"]  # the read needs none


def test_a_database_on_a_network_filesystem_is_refused(tmp_path, monkeypatch):
    looked_up: list[str] = []

    def nfs(path: str, mounts: str = "/proc/mounts") -> str:
        looked_up.append(path)
        return "nfs4"

    monkeypatch.setattr(_sqlite_file, "mount_type", nfs)
    with pytest.raises(gp.StorageError, match=r"network filesystem \(nfs4\).*WAL.*PostgreSQL"):
        SQLStore(f"sqlite:///{tmp_path / 'shared.db'}")
    assert looked_up == [str(tmp_path)]
    assert not (tmp_path / "shared.db").exists()


def test_mount_type_reads_the_longest_matching_mount(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "server:/export /mnt/share nfs4 rw 0 0\n"
        "//host/x /mnt/with\\040space cifs rw 0 0\n"
        "me@host:/ /mnt/ssh fuse.sshfs rw 0 0\n"
        "tmpfs /mnt/share/local tmpfs rw 0 0\n"
    )
    found = {
        p: _sqlite_file.mount_type(p, mounts=str(mounts))
        for p in [
            "/mnt/share/a/b",
            "/mnt/sharefoo",
            "/mnt/with space/db",
            "/mnt/ssh",
            "/mnt/share/local/x",
        ]
    }
    assert found == {
        "/mnt/share/a/b": "nfs4",
        "/mnt/sharefoo": "ext4",
        "/mnt/with space/db": "cifs",
        "/mnt/ssh": "fuse.sshfs",
        "/mnt/share/local/x": "tmpfs",
    }
    assert {"nfs4", "cifs", "fuse.sshfs", "9p"} <= sql.NETWORK_FILESYSTEMS
    assert _sqlite_file.mount_type("/x", mounts=str(tmp_path / "missing")) is None


def test_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(gp.StorageError, match="does not exist"):
        SQLStore(f"sqlite:///{tmp_path / 'nope' / 'x.db'}")


# -- opening -----------------------------------------------------------------------------


def test_open_store(tmp_path, opened):
    assert isinstance(open_store("memory"), MemoryStore)
    mine = MemoryStore()
    assert open_store(mine) is mine
    store = open_store(f"sqlite:///{tmp_path / 'o.db'}")
    assert isinstance(store, SQLStore)
    opened.append(store)
    for bad in ["mysql://u@h/db", "not a url", "redis://h"]:
        with pytest.raises(gp.InvalidArgumentError, match="url_or_store"):
            open_store(bad)
    with pytest.raises(ValueError, match="'url' parameter of SQLStore"):
        SQLStore("mysql://u@h/db")


def test_postgresql_urls_mean_psycopg_3():
    for url in ["postgresql://u@h/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"]:
        assert _sqlschema.sa_url(url).drivername == "postgresql+psycopg"
    assert _sqlschema.sa_url("postgresql://u:secret@h:5433/db?options=x").port == 5433


def test_a_missing_psycopg_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    with pytest.raises(gp.MissingDependencyError, match=r"psycopg.*genepool\[postgres\]"):
        SQLStore("postgresql://user@localhost/db")


def test_the_store_pickles_as_its_url(url, opened):
    store = open_sql(opened, url)
    store.create_run(RUN, config={"mode": "min"}, members=members(2))
    again = pickle.loads(pickle.dumps(store))
    opened.append(again)
    assert again is not store
    assert again.url == store.url
    assert again.population(RUN) == store.population(RUN)


_WORKER_SESSION = """
import dataclasses, pickle, sys
from genepool.member import CheckpointRef, Event, Report
from genepool.store import WorkerInfo

store = pickle.loads(sys.stdin.buffer.read())
w = WorkerInfo(name="child")
lease = store.claim("run", w, lease_seconds=60.0)
view = store.population("run")[lease.member]
ref = CheckpointRef("c-own", view.id, 3, 3.0, 0.5, view.hparams)
lease = store.renew(lease, lease_seconds=60.0)
store.commit(
    lease,
    member=dataclasses.replace(view, step=3, checkpoint=ref),
    reports=[Report(view.id, 3, {"score": 0.5, "loss": 1.0}, 1.0)],
    events=[Event("ready", view.id, 3, {"k": 1}, 1.0)],
)
store.commit(lease, pin="c-donor")
lease = store.commit_and_claim(
    lease, w, lease_seconds=60.0, member=dataclasses.replace(view, step=4)
)
now = store.population("run")[lease.member]
store.commit(lease, member=dataclasses.replace(now, pending=True))
store.commit(lease, release=True)
lease = store.claim("run", w, lease_seconds=60.0)
now = store.population("run")[lease.member]
store.commit(lease, member=dataclasses.replace(now, status="done"), release=True)
store.collect("run", ["c-gone", "c-own", "c-donor"])
print(sorted(m for m in sys.modules if m.split(".")[0] == "sqlalchemy"))
"""


def test_a_sqlite_store_reaches_a_process_with_its_sql_compiled(tmp_path, opened):
    """A worker process handed a SQLite store runs every statement a worker runs without
    importing SQLAlchemy (a third of a second of its start)."""
    store = open_sql(opened, f"sqlite:///{tmp_path / 'w.db'}")
    store.create_run(RUN, config={"metric": "score"}, members=members(2))
    child = subprocess.run(
        [sys.executable, "-c", _WORKER_SESSION],
        input=pickle.dumps(store),
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr.decode()
    assert child.stdout.decode().strip() == "[]"
    pop = store.population(RUN)
    assert [m.status for m in pop] == ["active", "done"] or [m.status for m in pop] == [
        "done",
        "active",
    ]
    history = store.history(RUN)
    assert [r.metrics for r in history.reports] == [{"score": 0.5, "loss": 1.0}]
    assert [e.kind for e in history.events] == ["ready"]


def test_a_store_handed_over_compiles_what_it_was_not_given(tmp_path, opened):
    store = open_sql(opened, f"sqlite:///{tmp_path / 'w.db'}")
    store.create_run(RUN, config={}, members=members(1))
    again = pickle.loads(pickle.dumps(store))
    opened.append(again)
    again._compiled.clear()  # as if a statement had been left out
    assert again.create_run("second", config={}, members=members(2))
    assert again.runs() == [RUN, "second"]
    assert store.population("second") == again.population("second")


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_writers_queue_behind_the_lock_beside_the_database(tmp_path, opened, monkeypatch):
    import fcntl
    import threading

    store = open_sql(opened, f"sqlite:///{tmp_path / 'q.db'}")
    store.create_run(RUN, config={}, members=members(2))
    queue = tmp_path / "q.db.genepool-lock"
    assert queue.exists()
    fd = os.open(queue, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another writer's turn
        done: list[float] = []
        writer = threading.Thread(
            target=lambda: done.append(
                store.claim(RUN, W1, lease_seconds=60.0) is not None and time.monotonic()
            )
        )
        writer.start()
        writer.join(0.3)
        assert writer.is_alive()  # it waits its turn...
        released = time.monotonic()
        fcntl.flock(fd, fcntl.LOCK_UN)
        writer.join(10)
        assert done  # ... and takes it when it comes
        assert done[0] >= released
        # a turn held past the busy timeout (a stopped process) holds nobody for longer:
        # the writer goes on to SQLite's own lock
        monkeypatch.setattr(_sqlite_file, "BUSY_SECONDS", 0.2)
        fcntl.flock(fd, fcntl.LOCK_EX)
        began = time.monotonic()
        assert store.claim(RUN, W2, lease_seconds=60.0) is not None
        assert 0.2 <= time.monotonic() - began < 5
    finally:
        os.close(fd)
    # a store handed to another process queues on the same file
    again = pickle.loads(pickle.dumps(store))
    opened.append(again)
    assert again._writers.path == str(queue)


def test_the_repr_hides_the_password():
    store = SQLStore.__new__(SQLStore, "postgresql://user:secret@host/db")  # not opened
    store.url = "postgresql://user:secret@host/db"
    assert "secret" not in repr(store)


# -- several processes -------------------------------------------------------------------

REPORTS_PER_PROCESS = 10_000
BATCH = 100
UNBATCHED = 500


def _write_reports(store: SQLStore, index: int, barrier: Any, results: Any) -> None:
    """In a child: claim a member, then write its reports, most in batches. The lease is
    kept to the end, so that each process writes for its own member."""
    try:
        worker = WorkerInfo(name=f"p{index}")
        barrier.wait()
        lease = store.claim(RUN, worker, lease_seconds=3600.0)
        if lease is None:
            raise RuntimeError(f"process {index} claimed nothing")
        m = lease.member
        batched = REPORTS_PER_PROCESS - UNBATCHED
        for start in range(0, batched, BATCH):
            batch = [
                Report(m, step, {"score": float(step), "p": index}, time.time())
                for step in range(start + 1, start + BATCH + 1)
            ]
            store.commit(lease, reports=batch)
        for step in range(batched + 1, REPORTS_PER_PROCESS + 1):
            report = Report(m, step, {"score": float(step), "p": index}, 0.0)
            store.commit(lease, reports=[report])
        results.put((index, m, None))
    except Exception as err:  # pragma: no cover - reported by the parent
        results.put((index, None, f"{type(err).__name__}: {err}"))


def run_processes(target: Any, store: SQLStore, n: int = 4) -> list[Any]:
    """Run ``target(store, index, barrier, results)`` in ``n`` spawned processes; what
    each put in ``results``."""
    barrier, results = SPAWN.Barrier(n), SPAWN.Queue()
    processes = [SPAWN.Process(target=target, args=(store, i, barrier, results)) for i in range(n)]
    for p in processes:
        p.start()
    try:
        return [results.get(timeout=90) for _ in processes]
    finally:
        for p in processes:
            p.join(timeout=30)
            if p.is_alive():  # pragma: no cover - only when the test already failed
                p.kill()


def test_processes_lose_and_duplicate_no_report(url, opened):
    store = open_sql(opened, url)
    store.create_run(RUN, config={"metric": "score"}, members=members(4))
    outcomes = run_processes(_write_reports, store)
    assert [error for _, _, error in outcomes if error] == []
    assert sorted(m for _, m, _ in outcomes) == [0, 1, 2, 3]
    reports = store.history(RUN).reports
    assert len(reports) == 4 * REPORTS_PER_PROCESS
    by_member: dict[int, list[int]] = defaultdict(list)
    for r in reports:
        by_member[r.member].append(r.step)
        assert r.metrics["score"] == float(r.step)
    expected = list(range(1, REPORTS_PER_PROCESS + 1))  # each member's, in write order
    assert dict(by_member) == dict.fromkeys(range(4), expected)


STRESS_SECONDS = 3.0


def _hold_members(store: SQLStore, index: int, barrier: Any, results: Any) -> None:
    """In a child: claim, bump the member's step, release, for a few seconds; send back
    every lease with the monotonic time it was held from (claim returned) and until
    (release called)."""
    worker = WorkerInfo(name=f"p{index}")
    rng = np.random.default_rng(index)
    held: list[tuple[int, int, float, float]] = []
    barrier.wait()
    deadline = time.monotonic() + STRESS_SECONDS
    try:
        while time.monotonic() < deadline:
            lease = store.claim(RUN, worker, lease_seconds=3600.0)
            if lease is None:
                continue
            since = time.monotonic()
            if rng.random() < 0.2:
                lease = store.renew(lease, lease_seconds=3600.0)
            row = store.population(RUN)[lease.member]
            store.commit(lease, member=dataclasses.replace(row, step=row.step + 1))
            until = time.monotonic()
            store.commit(lease, release=True)
            held.append((lease.member, lease.token, since, until))
        results.put((index, held, None))
    except Exception as err:  # pragma: no cover - reported by the parent
        results.put((index, held, f"{type(err).__name__}: {err}"))


def test_processes_never_hold_a_member_together(url, opened):
    population = 6
    store = open_sql(opened, url)
    store.create_run(RUN, config={}, members=members(population))
    outcomes = run_processes(_hold_members, store)
    assert [error for _, _, error in outcomes if error] == []
    leases = [lease for _, held, _ in outcomes for lease in held]
    per_process = [len(held) for _, held, _ in outcomes]
    assert min(per_process) > 0, per_process
    # a token names one lease of one member: never handed out twice
    tokens = Counter((member, token) for member, token, _, _ in leases)
    assert max(tokens.values()) == 1
    by_member: dict[int, list[tuple[int, float, float]]] = defaultdict(list)
    for member, token, since, until in leases:
        by_member[member].append((token, since, until))
    for member, held in by_member.items():
        held.sort()
        for (token, _, until), (next_token, since, _) in itertools.pairwise(held):
            assert next_token > token
            assert until <= since, f"member {member}: leases {token} and {next_token} overlap"
    # nobody wrote over another's row: every lease added one step
    pop = store.population(RUN)
    assert [m.step for m in pop] == [len(by_member[m.id]) for m in pop]
