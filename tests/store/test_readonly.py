"""Reading never writes, a database that is not genepool's is refused, and a corrupt row
is a StorageError that says where it is and what to do.

Reading is ``Result.open``, ``load_best`` and the ``genepool`` commands that read
(``status``, ``export``, ``report``, ``tensorboard``): they open the store read-only. A
missing SQLite file is an error (never created), no schema is created or upgraded, the
file's journal mode is left as it is, and the checkpoints' folder is neither created nor
swept. A SQLite file that holds other tables (and no genepool schema), or is no SQLite
database at all, is refused, also by ``gp.run``, before anything is written to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import genepool as gp
from genepool import cli
from genepool.checkpoints import LocalCheckpoints
from genepool.member import Event, MemberView, Report
from genepool.store import _sqlschema, open_store
from genepool.store.sql import SQLStore
from tests.store.test_contract import postgres_url, sqlite_url

SPACE = gp.Space(lr=gp.Float(0.1, 1.0))
SETTINGS: dict[str, Any] = {
    "metric": "score",
    "population": 2,
    "ready": gp.Every(2),
    "budget": gp.Budget(steps=4),
    "seed": 0,
}


def _train(member: gp.Member) -> None:
    x = member.restore() or 0.0
    while member.running:
        x += member.hparams["lr"]
        member.report(score=x, state=x)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def _tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    finally:
        conn.close()
    return {name for (name,) in rows}


def execute(url: str, statement: str, **params: Any) -> None:
    """Run SQL on a store's database outside the store (as an operator would)."""
    engine = sa.create_engine(_sqlschema.sa_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement), params)
    finally:
        engine.dispose()


def main(*args: str) -> int:
    return cli.main(list(args))


# -- reading never writes ------------------------------------------------------------------


READERS: dict[str, Callable[[str], object]] = {
    "Result.open": lambda url: gp.Result.open(url),
    "load_best": lambda url: gp.load_best(url),
    "open_store": lambda url: open_store(url, read_only=True),
}


@pytest.mark.parametrize("read", READERS.values(), ids=READERS.keys())
def test_reading_a_missing_sqlite_file_is_an_error_that_creates_nothing(tmp_path, read):
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    with pytest.raises(gp.StorageError) as info:
        read(url)
    assert str(tmp_path / "missing.db") in str(info.value)
    assert "nothing was created" in str(info.value)
    assert "Fix:" in str(info.value)
    assert _files(tmp_path) == set()  # no database, no lock file, no checkpoints folder


@pytest.fixture
def finished(tmp_path: Path) -> tuple[str, Path]:
    """A finished run's database, put back in rollback-journal mode (as a copy of it may
    be), with a stale temporary directory in its checkpoints folder."""
    db = tmp_path / "pbt.db"
    gp.run(_train, SPACE, storage=f"sqlite:///{db}", **SETTINGS)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    stale = tmp_path / "pbt.db.checkpoints" / "run" / "m0" / ".tmp-s9-left-by-a-crash"
    stale.mkdir()
    then = time.time() - 10 * 24 * 3600
    os.utime(stale, (then, then))
    return f"sqlite:///{db}", db


def test_reading_a_run_changes_neither_the_database_nor_the_checkpoints(finished):
    url, db = finished
    before, files = _digest(db), _files(db.parent)
    result = gp.Result.open(url)
    assert result.load() == pytest.approx(result.best.score)
    assert gp.load_best(url) == pytest.approx(result.best.score)
    assert _digest(db) == before
    assert _journal_mode(db) == "delete"  # not switched to WAL
    assert _files(db.parent) == files  # the stale .tmp-* directory was not swept either


@pytest.mark.parametrize("command", ["status", "export", "report"])
def test_the_reading_commands_change_nothing(finished, command, capsys):
    url, db = finished
    before, files = _digest(db), _files(db.parent)
    extra = ["--output", str(db.parent / "out" / "report.html")] if command == "report" else []
    if command == "report":
        (db.parent / "out").mkdir()
        files |= {"out"}
    assert main(command, "--storage", url, *extra) == 0
    assert _digest(db) == before
    assert _journal_mode(db) == "delete"
    assert _files(db.parent) - {"out/report.html"} == files


def test_reading_a_run_does_not_create_its_checkpoints_folder(tmp_path):
    url = f"sqlite:///{tmp_path / 'pbt.db'}"
    elsewhere = tmp_path / "ckpt"
    gp.run(_train, SPACE, storage=url, checkpoints=elsewhere, **SETTINGS)
    result = gp.Result.open(url)  # looks beside the database, where there is nothing
    assert not (tmp_path / "pbt.db.checkpoints").exists()
    with pytest.raises(gp.CheckpointError, match="No checkpoint"):
        result.load()
    assert not (tmp_path / "pbt.db.checkpoints").exists()
    assert gp.Result.open(url, checkpoints=str(elsewhere)).load() == pytest.approx(
        result.best.score
    )


def test_an_older_schema_is_read_as_it_is_and_not_upgraded(tmp_path):
    db = tmp_path / "pbt.db"
    gp.run(_train, SPACE, storage=f"sqlite:///{db}", **SETTINGS)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE genepool_schema_version SET version = 0")
    conn.commit()
    conn.close()
    before = _digest(db)
    assert gp.Result.open(f"sqlite:///{db}").best.step == 4
    assert _digest(db) == before


def test_a_read_only_store_refuses_every_write(tmp_path):
    url = f"sqlite:///{tmp_path / 'pbt.db'}"
    gp.run(_train, SPACE, storage=url, **SETTINGS)
    before = _digest(tmp_path / "pbt.db")
    store = open_store(url, read_only=True)
    assert isinstance(store, SQLStore)
    assert store.runs() == ["run"]
    with pytest.raises(gp.StorageError, match="read-only") as info:
        store.create_run("other", config={}, members=[MemberView(id=0, hparams={})])
    assert "Fix:" in str(info.value)
    with pytest.raises(gp.StorageError, match="read-only"):
        store.claim("run", gp.store.WorkerInfo("w"), lease_seconds=10.0)
    store.close()
    assert _digest(tmp_path / "pbt.db") == before


def test_read_only_checkpoints_are_neither_made_nor_swept_nor_written(tmp_path):
    root = tmp_path / "ckpt"
    store = LocalCheckpoints(root, read_only=True)
    assert not root.exists()
    for write in (
        lambda: store.put("run", 0, 1, b"x"),
        lambda: store.delete("run/m0/s1-" + "0" * 32),
        lambda: store.discard("run/m0/s1-" + "0" * 32),
        lambda: store.sweep(),
    ):
        with pytest.raises(gp.CheckpointError, match="read-only"):
            write()
    assert not root.exists()
    assert store.ids() == []


def test_read_only_fsspec_checkpoints_sweep_nothing(tmp_path):
    pytest.importorskip("fsspec")
    from genepool._fsspec_checkpoints import FsspecCheckpoints

    stale = tmp_path / "ckpt" / "run" / "m0" / ".tmp-s9-left"
    stale.mkdir(parents=True)
    then = time.time() - 10 * 24 * 3600
    os.utime(stale, (then, then))
    store = FsspecCheckpoints(f"file://{tmp_path / 'ckpt'}", read_only=True)
    assert stale.exists()
    with pytest.raises(gp.CheckpointError, match="read-only"):
        store.put("run", 0, 1, b"x")
    missing = FsspecCheckpoints(f"file://{tmp_path / 'none'}", read_only=True)
    assert missing.ids() == []
    assert not (tmp_path / "none").exists()


def test_reading_a_postgresql_schema_without_genepool_creates_no_table(request):
    url = postgres_url(request)
    with pytest.raises(gp.StorageError, match="no genepool schema") as info:
        gp.Result.open(url)
    assert "nothing was created" in str(info.value)
    engine = sa.create_engine(_sqlschema.sa_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert sa.inspect(conn).get_table_names() == []
    finally:
        engine.dispose()


# -- a database that is not genepool's -----------------------------------------------------


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
    conn.commit()
    conn.close()


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"name,score\n" + b"a,1\n" * 500)


OPENERS: dict[str, Callable[[str], object]] = {
    "gp.run": lambda url: gp.run(_train, SPACE, storage=url, **SETTINGS),
    "SQLStore": lambda url: SQLStore(url),
    **READERS,
}


@pytest.mark.parametrize("make", [_foreign, _not_sqlite], ids=["other-tables", "not-sqlite"])
@pytest.mark.parametrize("open_", OPENERS.values(), ids=OPENERS.keys())
def test_a_file_that_is_not_a_genepool_database_is_refused_untouched(tmp_path, make, open_):
    path = tmp_path / "app.db"
    make(path)
    before, mode = _digest(path), None
    if make is _foreign:
        mode = _journal_mode(path)
    with pytest.raises(gp.StorageError) as info:
        open_(f"sqlite:///{path}")
    message = str(info.value)
    assert str(path) in message
    assert "not a genepool database" in message or "not a SQLite database" in message
    assert "Fix: point the URL at a genepool database" in message
    assert _digest(path) == before
    if make is _foreign:
        assert _tables(path) == {"invoices"}
        assert _journal_mode(path) == mode == "delete"
    assert _files(tmp_path) == {"app.db"}  # no lock file, no checkpoints folder


def test_an_empty_file_is_a_new_database(tmp_path):
    path = tmp_path / "new.db"
    path.touch()
    result = gp.run(_train, SPACE, storage=f"sqlite:///{path}", **SETTINGS)
    assert result.best.step == 4


def test_a_genepool_database_with_tables_of_its_own_beside_opens(tmp_path):
    url = f"sqlite:///{tmp_path / 'pbt.db'}"
    gp.run(_train, SPACE, storage=url, **SETTINGS)
    _foreign(tmp_path / "pbt.db")  # someone keeps notes beside the runs
    assert gp.Result.open(url).best.step == 4
    assert gp.run(_train, SPACE, storage=url, **SETTINGS).best.step == 4


# -- corrupt rows --------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def written(request: pytest.FixtureRequest) -> str:
    """The URL of a database holding one run, with a report and an event."""
    url = sqlite_url(request) if request.param == "sqlite" else postgres_url(request)
    store = SQLStore(url)
    store.create_run(
        "run",
        config={"mode": "max", "metric": "score"},
        members=[MemberView(id=i, hparams={"lr": 0.5}) for i in range(2)],
    )
    lease = store.claim("run", gp.store.WorkerInfo("w"), lease_seconds=60.0)
    assert lease is not None
    store.commit(
        lease,
        reports=[Report(lease.member, 1, {"score": 1.0, "loss": 2.0}, 1.0)],
        events=[Event("explore", lease.member, 1, {"from": 0.5}, 1.0)],
        release=True,
    )
    store.close()
    return url


def _view(**changes: Any) -> str:
    base: dict[str, Any] = {"id": 1, "hparams": {"lr": 0.5}, "step": 0, "status": "active"}
    base.update(changes)
    return json.dumps(base)


CORRUPT_MEMBERS = {
    "bad-json": "{not json",
    "not-an-object": "[1, 2]",
    "missing-id": '{"hparams": {}}',
    "step-is-text": _view(step="ten"),
    "hparams-is-a-list": _view(hparams=[1, 2]),
    "score-is-text": _view(score="high"),
    "recent-holds-text": _view(recent=["a"]),
    "checkpoint-is-a-number": _view(checkpoint=3),
}


def _check_message(err: gp.StorageError, url: str, table: str, row: str) -> None:
    message = str(err)
    if url.startswith("sqlite"):
        assert url[len("sqlite:///") :] in message  # the file
    else:
        assert "SQLStore('postgresql://" in message  # the database (password hidden)
    assert table in message
    assert row in message
    assert "corrupt" in message
    assert "Fix: restore the database from a backup" in message


def _read_run(url: str, *, read_only: bool) -> None:
    store = SQLStore(url, read_only=True) if read_only else SQLStore(url)
    try:
        store.population("run")
        store.history("run")
    finally:
        store.close()


@pytest.mark.parametrize("text", CORRUPT_MEMBERS.values(), ids=CORRUPT_MEMBERS.keys())
@pytest.mark.parametrize("read_only", [False, True], ids=["write", "read"])
def test_a_corrupt_member_row_names_the_table_and_row(written, text, read_only):
    execute(written, "UPDATE genepool_members SET view = :v WHERE id = 1", v=text)
    with pytest.raises(gp.StorageError) as info:
        _read_run(written, read_only=read_only)
    _check_message(info.value, written, "genepool_members", "member 1")


def test_a_member_row_corrupted_after_it_was_read_is_refused_too(written):
    store = SQLStore(written)
    try:
        store.population("run")
        # another process's write, as far as this one can tell
        execute(
            written,
            "UPDATE genepool_members SET view = :v, version = version + 5 WHERE id = 0",
            v="{",
        )
        execute(written, "UPDATE genepool_runs SET version = version + 5")
        for _ in range(2):  # and it stays refused
            with pytest.raises(gp.StorageError) as info:
                store.population("run")
            _check_message(info.value, written, "genepool_members", "member 0")
    finally:
        store.close()


def test_a_corrupt_lease_holder_names_its_row(written):
    execute(written, "UPDATE genepool_members SET holder = :h WHERE id = 0", h='{"x": 1}')
    with pytest.raises(gp.StorageError) as info:
        _read_run(written, read_only=True)
    _check_message(info.value, written, "genepool_members", "member 0")


CORRUPT_ROWS: dict[str, tuple[str, Mapping[str, Any], str]] = {
    "config": ("UPDATE genepool_runs SET config = :v", {"v": "{oops"}, "genepool_runs"),
    "config-not-object": ("UPDATE genepool_runs SET config = :v", {"v": "3"}, "genepool_runs"),
    "report-json": ("UPDATE genepool_reports SET metrics = :v", {"v": "{"}, "genepool_reports"),
    "report-list": ("UPDATE genepool_reports SET metrics = :v", {"v": "[]"}, "genepool_reports"),
    "event-json": ("UPDATE genepool_events SET data = :v", {"v": "nul"}, "genepool_events"),
    "event-text": ("UPDATE genepool_events SET data = :v", {"v": '"x"'}, "genepool_events"),
}


@pytest.mark.parametrize(
    ("statement", "params", "table"), CORRUPT_ROWS.values(), ids=CORRUPT_ROWS.keys()
)
def test_a_corrupt_run_report_or_event_row_names_the_table_and_row(
    written, statement, params, table
):
    execute(written, statement, **params)
    with pytest.raises(gp.StorageError) as info:
        _read_run(written, read_only=True)
    row = "run 'run'" if table == "genepool_runs" else "seq=1"
    _check_message(info.value, written, table, row)


def test_a_report_column_of_the_wrong_type_is_refused(tmp_path):
    # SQLite keeps whatever a column is given: a step that is text is possible there
    url = f"sqlite:///{tmp_path / 'pbt.db'}"
    gp.run(_train, SPACE, storage=url, **SETTINGS)
    execute(url, "UPDATE genepool_reports SET step = 'four' WHERE seq = 2")
    with pytest.raises(gp.StorageError) as info, gp.Result.open(url) as result:
        result.reports  # noqa: B018 - the history is read when first asked for
    _check_message(info.value, url, "genepool_reports", "seq=2")
