"""FsspecCheckpoints: the checkpoint contract on ``memory://`` and S3 (a moto server on
loopback, started once per session: ``conftest.py``), torn and foreign objects, the sweep
of leftovers, pickling, and whole runs with ``checkpoints=`` a URL. A ``file://`` URL is
the local backend's: ``test_local.py``.

The S3 tests skip when moto or s3fs is missing (they fail instead when ``CI`` is set).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import genepool as gp
from genepool.checkpoints import MANIFEST_FORMAT, CheckpointStore, encode
from genepool.checkpoints import fsspec as fc
from tests.checkpoints.conftest import BUCKET
from tests.checkpoints.contract import CheckpointContract

try:
    import fsspec
except ImportError as _err:  # pragma: no cover - the dev extra installs it
    if os.environ.get("CI"):
        raise
    pytest.skip(
        f"fsspec is not installed ({_err}): pip install -e '.[dev]'", allow_module_level=True
    )

FsspecCheckpoints = gp.FsspecCheckpoints
BACKENDS = ["memory", "s3"]


# -- one store per backend -------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, Any]]]:
    """A fresh URL of one backend, and its storage_options."""
    unique = uuid.uuid4().hex
    if request.param == "memory":
        url = f"memory://genepool-tests/{unique}"
        yield url, {}
        memory = fsspec.filesystem("memory")
        if memory.exists(f"/genepool-tests/{unique}"):
            memory.rm(f"/genepool-tests/{unique}", recursive=True)
    else:
        yield f"s3://{BUCKET}/{unique}", request.getfixturevalue("s3_options")


def _factory(location: tuple[str, dict[str, Any]]) -> Callable[[], Any]:
    """A factory of stores on one backend; the stores it makes share one location."""
    url, options = location
    return lambda: FsspecCheckpoints(url, storage_options=options)


@pytest.fixture
def make_store(location: tuple[str, dict[str, Any]]) -> Callable[[], Any]:
    return _factory(location)


@pytest.fixture
def store(make_store: Callable[[], Any]) -> FsspecCheckpoints:
    return make_store()  # type: ignore[no-any-return]


class TestFsspecCheckpoints(CheckpointContract):
    """The contract on every backend of ``location``: ``memory://`` and S3."""

    concurrent_puts = 10  # a put is a request or two

    @pytest.fixture
    def make_store(self, location: tuple[str, dict[str, Any]]) -> Callable[[], CheckpointStore]:
        return _factory(location)


# -- layout, reopening, pickling ---------------------------------------------------------------


def _objects(store: FsspecCheckpoints) -> list[str]:
    """Every object under the store's root, relative to it."""
    fs = store.filesystem
    fs.invalidate_cache()
    return sorted(name[len(store.root) + 1 :] for name in fs.find(store.root))


def _write(store: FsspecCheckpoints, relative: str, data: bytes) -> None:
    """Put an object under the store's root behind its back (parents made where needed)."""
    fs, path = store.filesystem, f"{store.root}/{relative}"
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def _read(store: FsspecCheckpoints, relative: str) -> bytes:
    return bytes(store.filesystem.cat_file(f"{store.root}/{relative}"))


def test_layout_is_that_of_local_checkpoints(store):
    blob = encode({"state": [1, 2, 3]})
    cid = store.put("exp-1", 4, 12, blob, manifest={"score": 0.25, "hparams": {"lr": 0.1}})
    run, member, name = cid.split("/")
    assert (run, member, name[:4]) == ("exp-1", "m4", "s12-")
    assert len(name.split("-")[1]) == 32
    assert _objects(store) == [f"{cid}/manifest.json", f"{cid}/payload.bin"]  # no temporary
    fs = store.filesystem
    assert fs.cat_file(f"{store.root}/{cid}/payload.bin") == blob
    on_store = json.loads(fs.cat_file(f"{store.root}/{cid}/manifest.json"))
    assert on_store == store.manifest(cid)
    assert on_store["format"] == MANIFEST_FORMAT
    assert on_store["payload"] == {
        "file": "payload.bin",
        "size": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    assert len(store) == 1


def test_checkpoints_survive_a_new_object_and_a_pickle(store, make_store):
    cid = store.put("run", 1, 2, b"kept", manifest={"score": 3.0})
    again = make_store()
    assert again.ids() == [cid]
    assert again.get(cid) == b"kept"
    copied = pickle.loads(pickle.dumps(store))  # executors send it to worker processes
    assert copied._bucket._fs is None  # the filesystem is opened again where it is unpickled
    assert copied.url == store.url
    assert copied.get(cid) == b"kept"
    assert copied.manifest(cid)["fields"] == {"score": 3.0}
    second = copied.put("run", 1, 3, b"from the copy")
    assert store.get(second) == b"from the copy"
    assert repr(copied) == f"FsspecCheckpoints({store.url!r}, fsync=False)"


def test_process_local_is_only_memory(store):
    assert store.process_local == store.url.startswith("memory://")


def test_delete_removes_the_whole_prefix(store):
    keep = store.put("run", 0, 1, b"keep")
    cid = store.put("run", 0, 2, b"gone")
    _write(store, f"{cid}/notes.txt", b"someone's notes")
    store.delete(cid)
    assert store.ids() == [keep]
    assert [o for o in _objects(store) if o.startswith(cid)] == []
    store.delete(cid)  # a no-op when gone


def test_ids_ignore_objects_that_are_not_checkpoints(store):
    cid = store.put("run", 0, 1, b"x")
    for junk in ("README.txt", "run/notes.txt", "run/m0/notes.txt", ".hidden/m0/x/manifest.json"):
        _write(store, junk, b"not ours")
    _write(store, f"run/m0/s1-{uuid.uuid4().hex}/other.txt", b"not ours")
    _write(store, f"run/mx/s1-{uuid.uuid4().hex}/manifest.json", b"{}")
    assert store.ids() == [cid]
    assert store.ids("run") == [cid]
    assert store.ids("missing") == []
    with pytest.raises(gp.InvalidArgumentError, match=r"'run' parameter of FsspecCheckpoints\.ids"):
        store.ids("../run")  # never a listing outside the root
    assert store.sweep(grace_seconds=0) == 0  # none of them is a leftover of ours
    assert len(_objects(store)) == 2 + 6


# -- torn, foreign and newer checkpoints ---------------------------------------------------------


def _name() -> str:
    return f"s5-{uuid.uuid4().hex}"


def test_a_payload_without_manifest_is_never_listed_nor_loaded(store):
    done = store.put("run", 0, 4, b"before")
    cid = f"run/m0/{_name()}"
    _write(store, f"{cid}/payload.bin", b"half a write")
    assert store.ids() == [done]
    for read in (store.get, store.manifest):
        with pytest.raises(gp.CheckpointError, match=r"only its payload\.bin is there") as info:
            read(cid)
        assert "never loaded" in str(info.value)
        assert "sweep()" in str(info.value)


def test_a_delete_cut_short_leaves_no_checkpoint(store):
    cid = store.put("run", 0, 4, b"state")
    store.filesystem.rm_file(f"{store.root}/{cid}/manifest.json")
    assert store.ids() == []
    with pytest.raises(gp.CheckpointError, match=r"without manifest\.json"):
        store.get(cid)


@pytest.mark.parametrize(
    ("changed", "match"),
    [
        (b"xxxxx", r"is torn: the SHA-256 of payload\.bin differs"),
        (b"xy", r"is torn: payload\.bin has 2 bytes, the manifest says 5"),
    ],
    ids=["same-size", "other-size"],
)
def test_a_changed_payload_is_torn(store, changed, match):
    cid = store.put("run", 0, 1, b"state")
    _write(store, f"{cid}/payload.bin", changed)
    with pytest.raises(gp.CheckpointError, match=match) as info:
        store.get(cid)
    assert store.url in str(info.value)
    assert store.manifest(cid)["payload"]["size"] == 5  # the manifest alone still reads


def test_a_missing_payload_is_torn(store):
    cid = store.put("run", 0, 1, b"state")
    store.filesystem.rm_file(f"{store.root}/{cid}/payload.bin")
    with pytest.raises(gp.CheckpointError, match=r"is torn: payload\.bin is missing"):
        store.get(cid)


@pytest.mark.parametrize(
    ("manifest", "match"),
    [
        (b'{"hello": 1}', "is not a genepool checkpoint: its manifest.json is not a genepool"),
        (b'{"format": "one"}', "is not a genepool checkpoint: its manifest.json has format"),
        (b"{not json", r"is torn: manifest\.json is not valid JSON"),
    ],
    ids=["other-json", "bad-format", "not-json"],
)
def test_a_foreign_manifest_is_refused(store, manifest, match):
    cid = f"run/m0/{_name()}"
    _write(store, f"{cid}/payload.bin", b"x")
    _write(store, f"{cid}/manifest.json", manifest)
    for read in (store.get, store.manifest):
        with pytest.raises(gp.CheckpointError, match=match):
            read(cid)


def test_a_prefix_with_foreign_objects_only_is_not_a_checkpoint(store):
    cid = f"run/m0/{_name()}"
    _write(store, f"{cid}/notes.txt", b"not ours")
    with pytest.raises(gp.CheckpointError, match="is not a genepool checkpoint: it has no") as i:
        store.get(cid)
    assert "Fix:" in str(i.value)


def test_the_manifest_of_another_checkpoint_is_refused(store):
    cid = store.put("run", 0, 1, b"state")
    fs = store.filesystem
    other = f"run/m0/{_name()}"
    for name in ("payload.bin", "manifest.json"):
        _write(store, f"{other}/{name}", fs.cat_file(f"{store.root}/{cid}/{name}"))
    with pytest.raises(gp.CheckpointError, match=f"is for checkpoint '{cid}'"):
        store.get(other)


def test_a_newer_manifest_format_is_refused(store):
    cid = store.put("run", 0, 1, b"state")
    path = f"{store.root}/{cid}/manifest.json"
    fs = store.filesystem
    record = json.loads(fs.cat_file(path))
    record["format"] = MANIFEST_FORMAT + 1
    fs.pipe_file(path, json.dumps(record).encode())
    for read in (store.get, store.manifest):
        with pytest.raises(gp.CheckpointError, match=f"manifest format {MANIFEST_FORMAT + 1}") as i:
            read(cid)
        assert "upgrade genepool" in str(i.value)


def test_a_malformed_id_is_refused(store):
    cid = store.put("run", 0, 1, b"state")
    for bad in (cid + "/payload.bin", "run/m0/.tmp-" + cid.split("/")[-1], "run/x/s1-0", 7):
        with pytest.raises(gp.CheckpointError, match="not a checkpoint id"):
            store.get(bad)
    with pytest.raises(gp.CheckpointError, match="not a checkpoint id"):
        store.delete("../../etc")


def test_a_reader_of_a_checkpoint_deleted_meanwhile_is_told_it_is_missing(store, monkeypatch):
    cid = store.put("run", 0, 1, b"state" * 10)
    fs = store.filesystem
    real_cat = fs.cat_file
    deleted: list[bool] = []

    def cat_file(path: str, *args: Any, **kwargs: Any) -> Any:
        # the reader has read the manifest and is about to read the payload
        if path.endswith("payload.bin") and not deleted:
            deleted.append(True)
            store.delete(cid)
        return real_cat(path, *args, **kwargs)

    monkeypatch.setattr(fs, "cat_file", cat_file)
    with pytest.raises(gp.CheckpointError, match="No checkpoint"):
        store.get(cid)
    assert deleted


# -- atomicity and the sweep ----------------------------------------------------------------------


def test_a_failed_write_leaves_nothing(store, monkeypatch):
    def fail_on_manifest(path: str, data: bytes, **kwargs: Any) -> None:
        if path.endswith("manifest.json"):
            raise OSError(28, "No space left on device")
        real(path, data, **kwargs)

    real = store.filesystem.pipe_file
    monkeypatch.setattr(store.filesystem, "pipe_file", fail_on_manifest)
    with pytest.raises(gp.StorageError, match=r"No space left.*members active.*free space") as info:
        store.put("run", 0, 5, b"x" * 1000)
    assert isinstance(info.value.__cause__, OSError)
    assert store.ids() == []
    assert _objects(store) == []  # the payload (or the temporary) was removed too
    monkeypatch.undo()
    cid = store.put("run", 0, 5, b"x" * 1000)  # and the store still works
    assert store.get(cid) == b"x" * 1000


def test_sweep_removes_leftovers_only_once_old(store, make_store, monkeypatch, caplog):
    done = store.put("run", 0, 4, b"complete")
    torn = f"run/m0/{_name()}"
    _write(store, f"{torn}/payload.bin", b"half")
    _write(store, f"run/m1/.tmp-{_name()}/payload.bin", b"a temporary")
    _write(store, "run/m1/notes.txt", b"not ours")
    before = _objects(store)
    assert len(before) == 5

    # fresh: it may be a write in progress elsewhere, so it is left alone
    assert store.sweep() == 0
    assert make_store().ids() == [done]
    assert _objects(store) == before

    # once old, it is removed: by sweep(), and by the constructor
    monkeypatch.setattr(fc, "SWEEP_GRACE_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="genepool.checkpoints"):
        make_store()
    assert "checkpoint leftover" in caplog.text
    assert _objects(store) == [f"{done}/manifest.json", f"{done}/payload.bin", "run/m1/notes.txt"]
    assert store.get(done) == b"complete"
    assert store.sweep(grace_seconds=0) == 0


def test_sweep_with_no_grace_counts_what_it_removed(store):
    for _ in range(3):
        _write(store, f"run/m0/{_name()}/payload.bin", b"half")
    other = f"other/m0/{_name()}/payload.bin"
    _write(store, other, b"half")
    assert store.sweep(grace_seconds=0, run="run") == 3
    assert _objects(store) == [other]
    assert store.sweep(grace_seconds=0, run="missing") == 0
    assert store.sweep(grace_seconds=0) == 1
    assert _objects(store) == []


# -- arguments and missing pieces ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("", "'url' parameter of FsspecCheckpoints must be a non-empty"),
        (7, "'url' parameter of FsspecCheckpoints must be a non-empty"),
        ("memory://", "must be a URL that names a bucket or directory"),
        ("nosuchprotocol://x/y", "must be a URL whose protocol fsspec knows"),
    ],
)
def test_bad_url_raises_invalid_argument(url, match):
    with pytest.raises(gp.InvalidArgumentError, match=match):
        FsspecCheckpoints(url)


def test_bad_storage_options_raise_invalid_argument():
    with pytest.raises(gp.InvalidArgumentError, match="'storage_options' parameter"):
        FsspecCheckpoints("memory://x", storage_options=[("key", "v")])  # type: ignore[arg-type]


def test_without_fsspec_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(gp.MissingDependencyError, match=r"pip install 'genepool\[s3\]'") as i:
        FsspecCheckpoints("memory://x")
    assert "'fsspec'" in str(i.value)
    assert isinstance(i.value, ImportError)


def test_without_s3fs_the_error_names_the_extra(monkeypatch):
    registry = sys.modules["fsspec.registry"]  # the package's "registry" is a mapping
    monkeypatch.delitem(registry._registry, "s3", raising=False)
    monkeypatch.setitem(sys.modules, "s3fs", None)
    with pytest.raises(gp.MissingDependencyError, match=r"'s3fs'.*genepool\[s3\]"):
        FsspecCheckpoints("s3://bucket/prefix")


def test_a_missing_bucket_is_a_clear_error(s3_options):
    with pytest.raises(gp.CheckpointError, match=r"does not exist.*Fix: create the bucket"):
        FsspecCheckpoints("s3://no-such-bucket-here/prefix", storage_options=s3_options)


# -- whole runs --------------------------------------------------------------------------------


def _train(member: gp.Member) -> None:
    x = member.restore() or 0.0
    while member.running:
        x += member.hparams["lr"] * (1.0 - x)
        member.report(score=x, state=x)


SETTINGS: dict[str, Any] = {
    "metric": "score",
    "population": 4,
    "ready": gp.Every(4),
    "budget": gp.Budget(steps=12),
    "exploit": gp.Truncation(0.25),
    "explore": gp.Perturb(),
    "seed": 0,
}


@pytest.mark.parametrize("scheme", ["s3", "memory"])
def test_a_run_with_checkpoints_on_a_url(request, scheme):
    unique = uuid.uuid4().hex
    if scheme == "s3":
        request.getfixturevalue("s3_env")  # the endpoint and credentials from the environment
        url = f"s3://{BUCKET}/{unique}"
    else:
        url = f"memory://genepool-tests/{unique}"
    result = gp.run(
        _train, gp.Space(lr=gp.Float(0.01, 0.5, log=True)), **SETTINGS, checkpoints=url, keep=0
    )
    assert result.stop_reason == "budget"
    assert all(m.step == 12 for m in result.members)
    assert result.load() == pytest.approx(result.best.score)
    store = FsspecCheckpoints(url)
    ids = store.ids("run")
    # each member holds its last checkpoint; the ones nothing refers to were collected
    assert {m.checkpoint for m in result.members} == set(ids)
    assert len(ids) == 4
    assert all(cid.split("/")[1] == f"m{i}" for i, cid in enumerate(sorted(ids)))
    assert result.best.checkpoint is not None
    assert store.manifest(result.best.checkpoint)["step"] == 12


def test_a_run_of_two_worker_processes_with_checkpoints_on_s3(tmp_path, s3_options):
    url = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    checkpoints = FsspecCheckpoints(url, storage_options=s3_options)  # pickled to the workers
    executor = gp.ProcessExecutor(workers=2)
    result = gp.run(
        _train,
        gp.Space(lr=gp.Float(0.01, 0.5, log=True)),
        **SETTINGS,
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        checkpoints=checkpoints,
        executor=executor,
        keep=0,  # only the current checkpoints stay
    )
    assert executor.started_processes == 2
    assert result.stop_reason == "budget"
    assert all(m.status == "finished" and m.step == 12 for m in result.members)
    assert {m.checkpoint for m in result.members} == set(checkpoints.ids())
    assert result.load() == pytest.approx(result.best.score)
    reopened = gp.Result.open(f"sqlite:///{tmp_path / 'pbt.db'}", checkpoints=checkpoints)
    assert reopened.load() == pytest.approx(result.best.score)


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKIAKEY:hunter2-secret@bucket/prefix",
        "memory://genepool-tests/x?token=hunter2-secret",
        "gcs://bucket/prefix?password=hunter2-secret",
    ],
)
def test_a_url_credential_never_shows(url: str) -> None:
    shown: list[str] = []
    try:
        store = FsspecCheckpoints(url)
        shown.append(repr(store))
        store.get("run/m0/s1-" + "0" * 32)
    except gp.GenepoolError as err:
        chain: BaseException | None = err
        while chain is not None:  # what a traceback shows
            shown += [str(chain), repr(chain)]
            hidden = chain.__suppress_context__
            chain = chain.__cause__ or (None if hidden else chain.__context__)
    assert shown
    assert not [text for text in shown if "hunter2-secret" in text]
