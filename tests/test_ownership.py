"""A run's checkpoint folder belongs to one datastore: two runs that share a checkpoints
folder never delete each other's checkpoints.

Each run's folder (``<checkpoints>/<run>/``) holds a marker naming the datastore it belongs
to (its identity and how it is shown), and each checkpoint's manifest names it too. A run
of another datastore is refused the folder, with a message naming both datastores and the
fix; ``collect_orphans`` and ``sweep`` delete only what belongs to the run's datastore.
Folders written before markers existed are adopted by the datastore whose members refer to
their checkpoints, and otherwise left untouched (a warning says so).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from genepool.checkpoints import (
    MANIFEST_FORMAT,
    OWNER_FILE,
    LocalCheckpoints,
    MemoryCheckpoints,
)
from genepool.store.sql import SQLStore
from tests.checkpoints.contract import A

DATA = Path(__file__).parent / "data" / "manifest-v1"


class Count(gp.Trainable):
    """The trainable of tests/data/manifest-v1."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x, self.lr = 0.0, hparams["lr"]

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.lr = hparams["lr"]

    def step(self) -> dict[str, float]:
        self.x += self.lr
        return {"score": self.x}

    def save(self) -> dict[str, float]:
        return {"x": self.x}

    def load(self, state: dict[str, float]) -> None:
        self.x = state["x"]


SPACE = gp.Space(lr=gp.Float(0.1, 1.0))
#: The settings of the run in tests/data/manifest-v1 ("old").
SETTINGS: dict[str, Any] = {
    "metric": "score",
    "population": 2,
    "ready": gp.Every(2),
    "budget": gp.Budget(steps=4),
    "seed": 0,
}


def run(**options: Any) -> gp.Result:
    return gp.run(Count, SPACE, **{**SETTINGS, **options})


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def marker(folder: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
    return record


def identity(url: str) -> str:
    store = SQLStore(url)
    try:
        return store.identity
    finally:
        store.close()


# -- the bug: two datastores, one folder -------------------------------------------------


def test_a_second_datastore_is_refused_the_folder_and_deletes_nothing(tmp_path):
    shared = tmp_path / "checkpoints"
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    first = run(storage=a, checkpoints=shared)
    best = first.load()
    before = files(shared)
    with pytest.raises(gp.StorageError) as info:
        run(storage=b, checkpoints=shared, seed=1)
    message = str(info.value)
    assert str(shared / "run") in message  # the folder
    assert repr(f"sqlite:///{tmp_path / 'a.db'}") in message  # the datastore it belongs to
    assert repr(f"sqlite:///{tmp_path / 'b.db'}") in message  # the one that asked
    assert identity(a) in message
    assert identity(b) in message
    assert "Fix: pass another checkpoints= folder or another run name=" in message
    assert files(shared) == before  # nothing deleted, nothing written
    assert SQLStore(b).runs() == []  # and the refused run was never created
    assert gp.Result.open(a, checkpoints=str(shared)).load() == best


def test_another_run_name_shares_the_folder_without_touching_the_first(tmp_path):
    shared = tmp_path / "checkpoints"
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    first = run(storage=a, checkpoints=shared)
    before = files(shared / "run")
    second = run(storage=b, checkpoints=shared, name="other", seed=1)
    assert files(shared / "run") == before
    assert gp.Result.open(a, checkpoints=str(shared)).load() == first.load()
    assert gp.Result.open(b, "other", checkpoints=str(shared)).load() == second.load()
    assert marker(shared / "run")["store"] == identity(a)
    assert marker(shared / "other")["store"] == identity(b)


def test_the_owner_resumes_in_its_own_folder(tmp_path):
    url = f"sqlite:///{tmp_path / 'pbt.db'}"
    first = run(storage=url)
    again = run(storage=url)  # the same run again: its own folder
    assert again.best == first.best
    assert gp.load_best(url) == first.load()


def test_the_marker_and_the_manifests_name_the_datastore_and_the_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'pbt.db'}"
    result = run(storage=url, name="exp")
    folder = tmp_path / "pbt.db.checkpoints" / "exp"
    record = marker(folder)
    assert record["store"] == identity(url)
    assert record["shown"] == repr(SQLStore(url))
    assert record["run"] == "exp"
    assert record["durable"] is True
    checkpoints = LocalCheckpoints(tmp_path / "pbt.db.checkpoints")
    for m in result.members:
        assert m.checkpoint is not None
        manifest = checkpoints.manifest(m.checkpoint)
        assert manifest["format"] == MANIFEST_FORMAT == 2
        assert (manifest["store"], manifest["run"]) == (identity(url), "exp")


@pytest.mark.parametrize("url", ["memory://genepool-ownership-test", "file"])
def test_fsspec_folders_are_owned_too(tmp_path, url):
    pytest.importorskip("fsspec")
    if url == "file":
        url = f"file://{tmp_path / 'shared'}"
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    try:
        first = run(storage=a, checkpoints=url)
        with pytest.raises(gp.StorageError, match="belongs to another datastore"):
            run(storage=b, checkpoints=url)
        assert gp.Result.open(a, checkpoints=url).load() == first.load()
    finally:
        if url.startswith("memory://"):
            import fsspec

            fsspec.filesystem("memory").rm(url[len("memory://") :], recursive=True)


# -- an in-memory store and a folder on disk -----------------------------------------------


def test_a_rerun_with_an_in_memory_store_is_refused_the_folder_it_left(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    with caplog.at_level(logging.WARNING, logger="genepool"):
        first = run(checkpoints=folder)
    warned = [r.getMessage() for r in caplog.records if "datastore in memory" in r.getMessage()]
    assert len(warned) == 1
    assert str(folder) in warned[0]
    assert "storage=" in warned[0]
    assert marker(folder / "run")["durable"] is False
    before = files(folder)
    with pytest.raises(gp.StorageError) as info:
        run(checkpoints=folder)  # the script again: a new in-memory store
    message = str(info.value)
    assert "was an in-memory store" in message
    assert "durable storage=" in message
    assert "another checkpoints= folder" in message
    assert files(folder) == before  # the first run's best model is still there
    assert first.load() == {"x": pytest.approx(first.best.score)}


def test_one_in_memory_store_resumes_in_its_folder(tmp_path):
    store = gp.MemoryStore()
    first = run(storage=store, checkpoints=tmp_path / "checkpoints")
    again = run(storage=store, checkpoints=tmp_path / "checkpoints")
    assert again.best == first.best


def test_in_memory_checkpoints_are_owned_too():
    checkpoints = MemoryCheckpoints()
    run(checkpoints=checkpoints)
    with pytest.raises(gp.StorageError, match="MemoryStore"):
        run(checkpoints=checkpoints)  # another MemoryStore
    assert run(checkpoints=checkpoints, name="two").best.step == 4


# -- folders written before markers ------------------------------------------------------


@pytest.fixture
def old(tmp_path: Path) -> tuple[str, Path]:
    """A copy of tests/data/manifest-v1: the run "old" and its checkpoints folder, written
    before folders had markers (manifest format 1, schema version 1)."""
    shutil.copytree(DATA, tmp_path, dirs_exist_ok=True)
    return f"sqlite:///{tmp_path / 'old.db'}", tmp_path / "old.db.checkpoints"


ORPHAN = "old/m1/s3-53261ce3442cdc46e5efa8f7817d6263"


def test_a_checkpoint_of_manifest_format_1_is_read(old):
    url, folder = old
    before = files(folder.parent)
    result = gp.Result.open(url, "old")
    assert result.load() == {"x": pytest.approx(result.best.score)}
    assert gp.load_best(url, "old") == result.load()
    manifest = LocalCheckpoints(folder, read_only=True).manifest(ORPHAN)
    assert manifest["format"] == 1
    assert manifest["store"] is None
    # reading wrote no marker, nothing at all (but SQLite's own -shm and -wal, which a
    # reader of a database in WAL mode needs)
    after = {k: v for k, v in files(folder.parent).items() if not k.endswith(("-shm", "-wal"))}
    assert after == before


def test_a_folder_written_before_markers_is_adopted_by_the_datastore_that_refers_to_it(old):
    url, folder = old
    before = gp.Result.open(url, "old").members
    result = run(storage=url, name="old")  # resumed: its members refer to the checkpoints
    assert result.members == before
    assert marker(folder / "old")["store"] == identity(url)  # the schema got an identity
    current = sorted(m.checkpoint for m in result.members if m.checkpoint is not None)
    # the orphan, now known to be the run's, was collected; the current ones kept
    assert LocalCheckpoints(folder).ids("old") == current
    assert ORPHAN not in current
    assert gp.load_best(url, "old") == result.load()


def test_a_folder_written_before_markers_that_nothing_refers_to_is_left_untouched(
    old, tmp_path, caplog
):
    _, folder = old
    before = files(folder)
    legacy = LocalCheckpoints(folder).ids("old")
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with caplog.at_level(logging.WARNING, logger="genepool.checkpoints"):
        result = run(storage=other, name="old", checkpoints=folder, seed=5)
    warned = [r.getMessage() for r in caplog.records if "left untouched" in r.getMessage()]
    assert len(warned) == 1
    assert str(folder / "old") in warned[0]
    assert not (folder / "old" / OWNER_FILE).exists()  # not adopted
    after = files(folder)
    assert {k: after[k] for k in before} == before  # every old file as it was
    # its members' current and kept previous checkpoints (a set: after an exploit two
    # members may keep the same one)
    ours = {r.id for m in result.population for r in (m.checkpoint, *m.previous) if r is not None}
    assert set(LocalCheckpoints(folder).ids("old")) == set(legacy) | ours
    # the old run adopts its folder when it resumes, and deletes only its own orphan
    result_old = run(storage=f"sqlite:///{tmp_path / 'old.db'}", name="old")
    assert marker(folder / "old")["store"] == identity(f"sqlite:///{tmp_path / 'old.db'}")
    remaining = LocalCheckpoints(folder).ids("old")
    assert ORPHAN not in remaining
    assert ours <= set(remaining)  # the other datastore's checkpoints stay
    assert result_old.best.checkpoint in remaining


# -- the checkpoint stores' ownership: tests/checkpoints/contract.py, on every backend --------


def test_a_damaged_marker_is_refused_naming_it(tmp_path):
    checkpoints = LocalCheckpoints(tmp_path / "ckpt")
    checkpoints.own("run", A)
    (tmp_path / "ckpt" / "run" / OWNER_FILE).write_text("{half", encoding="utf-8")
    with pytest.raises(gp.StorageError, match="damaged") as info:
        checkpoints.own("run", A)
    assert OWNER_FILE in str(info.value)
    assert "Fix:" in str(info.value)


def test_a_format_1_manifest_is_read_by_every_store(tmp_path):
    source = DATA / "old.db.checkpoints"
    for url in (str(source), f"file://{source}"):
        store = (
            LocalCheckpoints(url, read_only=True)
            if "://" not in url
            else pytest.importorskip("genepool._fsspec_checkpoints").FsspecCheckpoints(
                url, read_only=True
            )
        )
        manifest = store.manifest(ORPHAN)
        assert (manifest["format"], manifest["store"], manifest["run"]) == (1, None, "old")
        assert gp.checkpoints.decode(store.get(ORPHAN), checkpoint_id=ORPHAN) == {
            "state": {"x": -1.0},
            "rng": None,
        }
