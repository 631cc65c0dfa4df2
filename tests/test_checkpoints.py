"""Checkpoint stores (in memory and in a local directory); their payloads: test_codec.py.

The store contract is checked over both backends; the on-disk layout, atomicity under a
crash, integrity checks and concurrency across processes are checked for LocalCheckpoints.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import logging
import multiprocessing
import os
import pickle
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import genepool as gp
from genepool import checkpoints as ck
from genepool.checkpoints import (
    MANIFEST_FORMAT,
    CheckpointStore,
    LocalCheckpoints,
    MemoryCheckpoints,
    decode,
    encode,
)

StoreFactory = Callable[[Path], "MemoryCheckpoints | LocalCheckpoints"]

BACKENDS: list[object] = [
    pytest.param(lambda root: MemoryCheckpoints(), id="memory"),
    pytest.param(lambda root: LocalCheckpoints(root / "ckpt"), id="local"),
]


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    """A factory of stores of one backend; local stores made by it share one root."""
    factory: StoreFactory = request.param
    return lambda: factory(tmp_path)


@pytest.fixture
def store(make_store: Callable[[], Any]) -> MemoryCheckpoints | LocalCheckpoints:
    return make_store()  # type: ignore[no-any-return]


@pytest.fixture
def local(tmp_path: Path) -> LocalCheckpoints:
    return LocalCheckpoints(tmp_path / "ckpt")


def spawn() -> Any:
    return multiprocessing.get_context("spawn")


# -- the contract, over both backends ------------------------------------------------------


def test_put_get_delete(store):
    cid = store.put("run", 3, 8, b"hello")
    assert isinstance(cid, str)
    assert cid.startswith("run/m3/s8-")
    assert store.get(cid) == b"hello"
    assert len(store) == 1
    assert store.ids() == [cid]
    store.delete(cid)
    assert len(store) == 0
    with pytest.raises(gp.CheckpointError, match="No checkpoint"):
        store.get(cid)
    with pytest.raises(gp.CheckpointError, match="No checkpoint"):
        store.manifest(cid)
    store.delete(cid)  # deleting twice is a no-op


def test_get_unknown_id_raises_checkpoint_error(store):
    with pytest.raises(gp.CheckpointError, match="nope"):
        store.get("nope")


def test_get_unknown_well_formed_id_raises_checkpoint_error(store):
    cid = store.put("run", 0, 1, b"x")
    store.delete(cid)
    with pytest.raises(gp.CheckpointError, match=r"No checkpoint .*run/m0/s1-"):
        store.get(cid)


def test_ids_are_never_reused(make_store):
    store = make_store()
    seen = set()
    for _ in range(5):
        cid = store.put("run", 0, 4, b"x")
        assert cid not in seen
        seen.add(cid)
        store.delete(cid)  # even after a delete, the same (run, member, step) gets a new id
    other = make_store()
    assert other.put("run2", 0, 4, b"x") not in seen
    if isinstance(other, LocalCheckpoints):  # a restart on the same directory
        assert other.put("run", 0, 4, b"x") not in seen


def test_ids_are_unique_under_concurrent_puts(store):
    ids: list[str] = []
    guard = threading.Lock()

    def work() -> None:
        mine = [store.put("run", 0, 0, b"x") for _ in range(200)]
        with guard:
            ids.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == len(ids) == 800
    assert len(store) == 800
    assert store.ids() == sorted(ids)


def test_stored_bytes_are_immutable(store):
    blob = bytearray(b"abc")
    cid = store.put("run", 0, 1, blob)
    blob[0] = ord("z")  # the caller changes its buffer afterwards
    got = store.get(cid)
    assert got == b"abc"
    assert isinstance(got, bytes)
    view = memoryview(bytearray(b"def"))
    cid2 = store.put("run", 0, 2, view)
    view[0] = ord("z")
    assert store.get(cid2) == b"def"


def test_checkpoints_of_different_members_are_independent(store):
    a = store.put("run", 0, 4, b"a")
    b = store.put("run", 1, 4, b"b")
    assert a != b
    store.delete(a)
    assert store.get(b) == b"b"


def test_is_a_checkpoint_store(store):
    assert isinstance(store, gp.CheckpointStore)
    assert isinstance(store, CheckpointStore)


def test_empty_and_large_payloads(store):
    empty = store.put("run", 0, 0, b"")
    big = bytes(np.random.default_rng(0).integers(0, 256, size=3_000_000, dtype=np.uint8))
    large = store.put("run", 0, 1, big)
    assert store.get(empty) == b""
    assert store.get(large) == big
    assert store.manifest(large)["payload"]["size"] == len(big)


def test_put_keeps_its_positional_signature(store):
    cid = store.put("run", 2, 6, b"x")  # what the worker calls today
    assert store.manifest(cid)["fields"] == {}
    cid = store.put(run="run", member=2, step=6, blob=b"y", manifest={"score": 1.0})
    assert store.manifest(cid)["fields"] == {"score": 1.0}
    with pytest.raises(TypeError):
        store.put("run", 2, 6, b"z", {"score": 1.0})  # manifest is keyword-only


def test_manifest_round_trip(store):
    fields = {
        "member": 3,
        "step": 8,
        "hparams": {"lr": np.float64(0.01), "layers": np.int64(4), "opt": "adam"},
        "score": np.float32(0.5),
        "history": np.array([1.0, 2.0]),
        "pair": (1, 2),
        "nothing": None,
        "nan": float("nan"),
    }
    cid = store.put("run", 3, 8, encode({"w": 1}), manifest=fields)
    manifest = store.manifest(cid)
    assert manifest["format"] == MANIFEST_FORMAT == 2
    assert manifest["store"] is None  # no datastore owns the run's folder (own())
    assert manifest["id"] == cid
    assert (manifest["run"], manifest["member"], manifest["step"]) == ("run", 3, 8)
    got = manifest["fields"]
    assert np.isnan(got.pop("nan"))
    assert got == {
        "member": 3,
        "step": 8,
        "hparams": {"lr": 0.01, "layers": 4, "opt": "adam"},
        "score": 0.5,
        "history": [1.0, 2.0],
        "pair": [1, 2],
        "nothing": None,
    }
    assert type(got["hparams"]["layers"]) is int
    blob = store.get(cid)
    assert manifest["payload"] == {
        "file": "payload.bin",
        "size": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    assert manifest["versions"] == {
        "genepool": gp.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    created = datetime.datetime.fromisoformat(manifest["created"].replace("Z", "+00:00"))
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - created).total_seconds()) < 60


def test_manifest_is_a_copy(store):
    fields: dict[str, Any] = {"hparams": {"lr": 0.1}}
    cid = store.put("run", 0, 1, b"x", manifest=fields)
    fields["hparams"]["lr"] = 9.0  # the caller changes its dict afterwards
    got = store.manifest(cid)
    got["fields"]["hparams"]["lr"] = 7.0  # and the reader changes its copy
    assert store.manifest(cid)["fields"] == {"hparams": {"lr": 0.1}}


@pytest.mark.parametrize(
    "fields",
    [{"f": lambda: 1}, {"obj": object()}, {"s": {1, 2}}, {3: "int key"}, ["not", "a", "map"]],
    ids=["lambda", "object", "set", "int-key", "list"],
)
def test_manifest_that_is_not_json_raises_invalid_argument(store, fields):
    with pytest.raises(gp.InvalidArgumentError, match="'manifest' parameter"):
        store.put("run", 0, 1, b"x", manifest=fields)
    assert len(store) == 0


@pytest.mark.parametrize(
    "run",
    [
        "",
        "a/b",
        "a\\b",
        ".",
        "..",
        ".hidden",
        ".tmp-x",
        "a:b",
        "x.",
        "x ",
        "a\x00b",
        "q?",
        7,
        "\udc80",
    ],
)
def test_bad_run_name_raises_invalid_argument(store, run):
    with pytest.raises(gp.InvalidArgumentError, match="'run' parameter"):
        store.put(run, 0, 1, b"x")
    assert len(store) == 0


@pytest.mark.parametrize(("member", "step"), [(-1, 0), (0, -1), (1.0, 0), (0, "3"), (True, 0)])
def test_bad_member_or_step_raises_invalid_argument(store, member, step):
    with pytest.raises(gp.InvalidArgumentError, match="must be an int >= 0"):
        store.put("run", member, step, b"x")


def test_numpy_member_and_step_are_accepted(store):
    cid = store.put("run", np.int64(2), np.int32(5), b"x")
    assert cid.startswith("run/m2/s5-")
    assert type(store.manifest(cid)["member"]) is int


# -- LocalCheckpoints: layout ------------------------------------------------------------


def test_on_disk_layout(tmp_path):
    root = tmp_path / "ckpt"
    store = LocalCheckpoints(root)
    assert store.root == str(root)
    assert not store.fsync
    blob = encode({"state": [1, 2, 3]})
    cid = store.put("exp-1", 4, 12, blob, manifest={"score": 0.25, "hparams": {"lr": 0.1}})
    run, member, name = cid.split("/")
    assert (run, member) == ("exp-1", "m4")
    step, unique = name.split("-")
    assert step == "s12"
    assert len(unique) == 32
    int(unique, 16)
    path = root / "exp-1" / "m4" / name
    assert path.is_dir()
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "payload.bin"]
    assert sorted(p.name for p in path.parent.iterdir()) == [name]  # no temporary left
    assert (path / "payload.bin").read_bytes() == blob
    on_disk = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk == store.manifest(cid)
    assert on_disk["format"] == 2
    assert on_disk["store"] is None
    assert on_disk["id"] == cid
    assert on_disk["fields"] == {"score": 0.25, "hparams": {"lr": 0.1}}
    assert on_disk["payload"]["size"] == len(blob)
    assert on_disk["payload"]["sha256"] == hashlib.sha256(blob).hexdigest()
    assert set(on_disk["versions"]) == {"genepool", "python", "numpy"}
    assert decode(store.get(cid), checkpoint_id=cid) == {"state": [1, 2, 3]}


@pytest.mark.parametrize("run", ["ünïcode-€ run", "tab\x7fdel", "line\u2028sep", "x" * 200])
def test_manifest_json_of_any_valid_run_name(tmp_path, run):
    store = LocalCheckpoints(tmp_path / "ckpt")
    cid = store.put(run, 1, 2, b"abc", manifest={"name": run, "q": 'say "hi"\\'})
    path = Path(store.root, *cid.split("/"))
    on_disk = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk == store.manifest(cid)
    assert (on_disk["id"], on_disk["run"]) == (cid, run)
    assert on_disk["fields"] == {"name": run, "q": 'say "hi"\\'}
    assert store.get(cid) == b"abc"
    assert store.ids(run) == [cid]


def test_relative_root_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = LocalCheckpoints("rel")
    cid = store.put("run", 0, 0, b"x")
    monkeypatch.chdir("/")
    assert store.root == str(tmp_path / "rel")
    assert store.get(cid) == b"x"


def test_checkpoints_survive_a_restart_and_a_pickle(tmp_path):
    first = LocalCheckpoints(tmp_path)
    cid = first.put("run", 1, 2, b"kept", manifest={"score": 3.0})
    again = LocalCheckpoints(tmp_path)
    assert again.ids() == [cid]
    assert again.get(cid) == b"kept"
    copied = pickle.loads(pickle.dumps(first))  # executors send it to worker processes
    assert copied.get(cid) == b"kept"
    assert copied.manifest(cid)["fields"] == {"score": 3.0}


def test_ids_of_one_run(local):
    a = local.put("a", 0, 1, b"x")
    b = local.put("b", 1, 1, b"x")
    assert local.ids("a") == [a]
    assert local.ids("b") == [b]
    assert local.ids("missing") == []
    assert local.ids() == sorted([a, b])
    assert len(local) == 2


# -- LocalCheckpoints: atomicity ---------------------------------------------------------


def _member_dir_entries(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "run" / "m0").iterdir())


def test_failed_write_leaves_nothing(local, monkeypatch):
    original = ck._write_file

    def torn(path: str, data: bytes, *, fsync: bool) -> None:
        if path.endswith("payload.bin"):
            with open(path, "xb") as f:
                f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        original(path, data, fsync=fsync)

    monkeypatch.setattr(ck, "_write_file", torn)
    # a storage fault (never the member's): the run stops, and says how to fix it
    with pytest.raises(gp.StorageError, match=r"No space left.*members active.*free space") as info:
        local.put("run", 0, 5, b"x" * 1000)
    assert isinstance(info.value.__cause__, OSError)
    assert local.ids() == []
    assert _member_dir_entries(Path(local.root)) == []  # the temporary was removed too
    monkeypatch.setattr(ck, "_write_file", original)
    cid = local.put("run", 0, 5, b"x" * 1000)  # and the store still works
    assert local.get(cid) == b"x" * 1000


def _crash_mid_write(root: str) -> None:
    """In a child process: die (no clean-up at all) after writing half the payload."""
    original = ck._write_file

    def crash(path: str, data: bytes, *, fsync: bool) -> None:
        if path.endswith("payload.bin"):
            with open(path, "xb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
            os._exit(17)
        original(path, data, fsync=fsync)

    ck._write_file = crash
    LocalCheckpoints(root).put("run", 0, 5, b"x" * 1000)


def test_crash_mid_write_leaves_no_checkpoint_and_sweep_cleans_up(tmp_path, caplog):
    root = tmp_path / "ckpt"
    store = LocalCheckpoints(root)
    done = store.put("run", 0, 4, b"before")
    child = spawn().Process(target=_crash_mid_write, args=(str(root),))
    child.start()
    child.join(60)
    assert child.exitcode == 17

    # the half-written checkpoint is only a temporary directory: no id shows it
    entries = _member_dir_entries(root)
    tmp = [e for e in entries if e.startswith(".tmp-")]
    assert len(tmp) == 1
    assert (root / "run" / "m0" / tmp[0] / "payload.bin").stat().st_size == 500
    assert store.ids() == [done]
    would_be = "run/m0/" + tmp[0].removeprefix(".tmp-")
    with pytest.raises(gp.CheckpointError, match="No checkpoint"):
        store.get(would_be)
    for malformed in ("run/m0/" + tmp[0], "run/m0/" + tmp[0] + "/payload.bin"):
        with pytest.raises(gp.CheckpointError, match="not a checkpoint id"):
            store.get(malformed)

    # a fresh temporary may be a write in progress elsewhere: it is left alone
    assert store.sweep() == 0
    assert LocalCheckpoints(root).ids() == [done]
    assert len(_member_dir_entries(root)) == 2

    # once old, it is removed: by sweep(), and by the constructor
    old = time.time() - 2 * ck.SWEEP_GRACE_SECONDS
    for path in (root / "run" / "m0" / tmp[0]).iterdir():
        os.utime(path, (old, old))
    os.utime(root / "run" / "m0" / tmp[0], (old, old))
    with caplog.at_level(logging.INFO, logger="genepool.checkpoints"):
        LocalCheckpoints(root)
    assert _member_dir_entries(root) == [done.split("/")[-1]]
    assert "stale temporary" in caplog.text
    assert store.get(done) == b"before"
    assert store.sweep(grace_seconds=0) == 0


def test_sweep_with_no_grace_removes_every_temporary(local):
    local.put("run", 0, 1, b"x")
    member_dir = Path(local.root) / "run" / "m0"
    (member_dir / ".tmp-s2-abc").mkdir()
    (member_dir / ".tmp-s2-abc" / "payload.bin").write_bytes(b"half")
    (member_dir / ".tmp-del-xyz").mkdir()
    (member_dir / ".tmp-file").write_bytes(b"not a directory: not ours")
    assert local.sweep(grace_seconds=0) == 2
    assert sorted(p.name for p in member_dir.iterdir() if p.name.startswith(".")) == [".tmp-file"]
    assert len(local) == 1


def test_a_write_whose_temporary_is_swept_fails_cleanly(local, monkeypatch):
    original = ck._write_file

    def swept_meanwhile(path: str, data: bytes, *, fsync: bool) -> None:
        if path.endswith("manifest.json"):
            assert local.sweep(grace_seconds=0) == 1  # another process thinks it stale
        original(path, data, fsync=fsync)

    monkeypatch.setattr(ck, "_write_file", swept_meanwhile)
    with pytest.raises(gp.StorageError, match="writing checkpoint 'run/m0/s5-"):
        local.put("run", 0, 5, b"payload")
    assert local.ids() == []
    assert _member_dir_entries(Path(local.root)) == []


def test_readers_never_see_a_partial_checkpoint(local):
    blobs = [bytes([i]) * (50_000 + i) for i in range(60)]
    stop = threading.Event()
    problems: list[BaseException] = []
    reads = 0

    def read() -> None:
        nonlocal reads
        while not stop.is_set():
            for cid in local.ids():
                try:
                    blob = local.get(cid)
                except BaseException as err:
                    problems.append(err)
                    return
                assert blob in blobs
                reads += 1

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    try:
        i = 0
        while i < len(blobs) or (reads < 50 and time.monotonic() < deadline):
            local.put("run", 0, i, blobs[i % len(blobs)])
            i += 1
    finally:
        stop.set()
        reader.join()
    assert problems == []
    assert reads > 0


# -- LocalCheckpoints: integrity ---------------------------------------------------------


def _dir(store: LocalCheckpoints, cid: str) -> Path:
    return Path(store.root, *cid.split("/"))


def test_truncated_payload_is_torn(local):
    cid = local.put("run", 0, 1, encode(list(range(1000))))
    payload = _dir(local, cid) / "payload.bin"
    size = payload.stat().st_size
    with open(payload, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(gp.CheckpointError, match=r"is torn: payload\.bin has \d+ bytes"):
        local.get(cid)
    local.manifest(cid)  # the manifest alone is still readable


def test_changed_payload_bytes_are_torn(local):
    cid = local.put("run", 0, 1, b"abcdef")
    (_dir(local, cid) / "payload.bin").write_bytes(b"abcdeX")  # same size
    with pytest.raises(gp.CheckpointError, match="is torn: the SHA-256"):
        local.get(cid)


def test_missing_payload_is_torn(local):
    cid = local.put("run", 0, 1, b"abc")
    (_dir(local, cid) / "payload.bin").unlink()
    with pytest.raises(gp.CheckpointError, match=r"is torn: payload\.bin is missing"):
        local.get(cid)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: {**m, "payload": {**m["payload"], "size": 4}}, "has 3 bytes"),
        (lambda m: {**m, "payload": {**m["payload"], "sha256": "0" * 64}}, "SHA-256"),
        (lambda m: {k: v for k, v in m.items() if k != "payload"}, "lacks the payload"),
        (lambda m: {**m, "id": "run/m1/s1-" + "0" * 32}, "is for checkpoint"),
        (lambda m: {k: v for k, v in m.items() if k != "format"}, "not a genepool manifest"),
        (lambda m: {**m, "format": "1"}, "has format '1'"),
        (lambda m: [m], "not a genepool manifest"),
    ],
    ids=["size", "sha256", "no-payload", "other-id", "no-format", "str-format", "list"],
)
def test_edited_manifest_is_refused(local, edit, match):
    cid = local.put("run", 0, 1, b"abc")
    path = _dir(local, cid) / "manifest.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(gp.CheckpointError, match=match):
        local.get(cid)


@pytest.mark.parametrize("content", [b"", b"{", b'{"format": 1,', b"\xff\xfe"])
def test_unreadable_manifest_is_torn(local, content):
    cid = local.put("run", 0, 1, b"abc")
    (_dir(local, cid) / "manifest.json").write_bytes(content)
    with pytest.raises(gp.CheckpointError, match=r"is torn: manifest\.json is not valid JSON"):
        local.get(cid)
    with pytest.raises(gp.CheckpointError, match="is torn"):
        local.manifest(cid)


def test_missing_manifest_is_torn(local):
    cid = local.put("run", 0, 1, b"abc")
    (_dir(local, cid) / "manifest.json").unlink()
    with pytest.raises(gp.CheckpointError, match=r"is torn: manifest\.json is missing"):
        local.get(cid)


def test_newer_manifest_format_is_refused(local):
    cid = local.put("run", 0, 1, b"abc")
    path = _dir(local, cid) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format"] = MANIFEST_FORMAT + 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(gp.CheckpointError, match="manifest format 3") as info:
        local.get(cid)
    assert "Fix: upgrade genepool" in str(info.value)
    with pytest.raises(gp.CheckpointError, match="manifest format 3"):
        local.manifest(cid)


def test_foreign_directory_is_refused(local):
    foreign_id = "run/m0/s1-" + "ab" * 16
    path = Path(local.root, *foreign_id.split("/"))
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    with pytest.raises(gp.CheckpointError, match="is not a genepool checkpoint: it has no"):
        local.get(foreign_id)
    (path / "manifest.json").write_text(json.dumps({"name": "some other tool"}))
    with pytest.raises(gp.CheckpointError, match="is not a genepool checkpoint"):
        local.get(foreign_id)
    assert local.ids() == [foreign_id]  # it has a checkpoint's name, but cannot be read


def test_file_in_place_of_a_checkpoint_is_foreign(local):
    foreign_id = "run/m0/s1-" + "cd" * 16
    path = Path(local.root, *foreign_id.split("/"))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    with pytest.raises(gp.CheckpointError, match="not a directory"):
        local.get(foreign_id)
    assert local.ids() == []


def test_checkpoint_copied_to_another_place_is_foreign(local):
    cid = local.put("run", 0, 1, b"abc")
    other = "run/m1/s1-" + "0" * 32
    target = Path(local.root, *other.split("/"))
    target.parent.mkdir(parents=True)
    _dir(local, cid).rename(target)
    with pytest.raises(gp.CheckpointError, match=f"is for checkpoint '{cid}'"):
        local.get(other)


@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        "nope",
        "run/m0",
        "../../etc/s1-" + "0" * 32,
        "run/../s1-" + "0" * 32,
        "run/m0/../../x",
        "/abs/m0/s1-" + "0" * 32,
        "run/m0/s1-" + "0" * 31,
        "run/m0/s01-" + "0" * 32,
        "run/m0/s1-" + "0" * 32 + "/payload.bin",
        "run\\m0\\s1-" + "0" * 32,
    ],
)
def test_malformed_ids_are_refused_and_never_deleted(local, bad_id):
    keep = local.put("run", 0, 1, b"abc")
    for call in (local.get, local.manifest, local.delete):
        with pytest.raises(gp.CheckpointError, match="not a checkpoint id"):
            call(bad_id)
    assert local.get(keep) == b"abc"


# -- LocalCheckpoints: delete, fsync, processes ------------------------------------------


def test_delete_twice_and_concurrently(local):
    cid = local.put("run", 0, 1, b"abc")
    other = local.put("run", 0, 2, b"def")
    local.delete(cid)
    local.delete(cid)
    assert local.ids() == [other]
    errors: list[BaseException] = []

    def delete() -> None:
        try:
            local.delete(other)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=delete) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert local.ids() == []
    assert _member_dir_entries(Path(local.root)) == []  # no .tmp-del-* left


def test_fsync_writes_and_reads(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store = LocalCheckpoints(tmp_path / "new" / "ckpt", fsync=True)
    assert store.fsync
    assert len(synced) == 1  # the new root's entry in its parent
    first = store.put("run", 0, 1, b"abc", manifest={"score": 1.0})
    # the run and member directories' entries, two files, the temporary, the rename
    assert len(synced) == 1 + 6
    second = store.put("run", 0, 2, b"def")
    assert len(synced) == 1 + 6 + 4
    assert store.get(first) == b"abc"
    assert store.get(second) == b"def"
    store.delete(first)
    assert store.ids() == [second]
    assert LocalCheckpoints(store.root).get(second) == b"def"


def _put_many(root: str, worker: int, start: Any, out: Any) -> None:
    """In a child process: wait for the others, then write 50 checkpoints."""
    store = LocalCheckpoints(root)
    start.wait()
    out.put([store.put("run", 0, 7, f"{worker}-{i}".encode()) for i in range(50)])


def test_ids_are_unique_across_processes(tmp_path):
    root = str(tmp_path / "ckpt")
    ctx = spawn()
    start = ctx.Barrier(2)
    out = ctx.Queue()
    workers = [ctx.Process(target=_put_many, args=(root, w, start, out)) for w in range(2)]
    for w in workers:
        w.start()
    results = [out.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    ids = [cid for result in results for cid in result]
    assert len(ids) == len(set(ids)) == 100
    store = LocalCheckpoints(root)
    assert store.ids() == sorted(ids)
    payloads = {store.get(cid) for cid in ids}
    assert payloads == {f"{w}-{i}".encode() for w in range(2) for i in range(50)}


# -- discard: a deleted checkpoint's directory written into again -------------------------


def test_discard_contract(store):
    keep = store.put("run", 0, 1, b"keep")
    gone = store.put("run", 0, 2, b"gone")
    store.discard(gone)
    store.discard(gone)  # twice: a no-op
    assert store.ids() == [keep]
    with pytest.raises(gp.CheckpointError, match="No checkpoint"):
        store.get(gone)
    with pytest.raises(gp.CheckpointError, match="No checkpoint"):
        store.manifest(gone)
    again = store.put("run", 0, 2, b"again", manifest={"score": 2.0})
    assert again not in (keep, gone)
    store.drain()
    store.drain()
    assert store.ids() == sorted([keep, again])
    assert (store.get(keep), store.get(again)) == (b"keep", b"again")
    assert store.manifest(again)["fields"] == {"score": 2.0}


# -- rewrite: a payload in a newer format, same id (genepool migrate) ---------------------


def test_rewrite_contract(store):
    cid = store.put("run", 0, 3, b"old", manifest={"score": 1.5})
    other = store.put("run", 1, 3, b"other")
    before = store.manifest(cid)
    store.rewrite(cid, b"the new payload")
    assert store.get(cid) == b"the new payload"
    after = store.manifest(cid)
    assert after["payload"]["size"] == len(b"the new payload")
    assert after["payload"]["sha256"] == hashlib.sha256(b"the new payload").hexdigest()
    for key in ("id", "run", "member", "step", "fields", "store", "created", "format"):
        assert after[key] == before[key]
    store.rewrite(cid, b"again")  # twice
    assert store.get(cid) == b"again"
    assert store.ids() == sorted([cid, other])
    assert store.get(other) == b"other"
    store.discard(cid)  # a rewritten checkpoint goes as any other
    store.drain()
    assert store.ids() == [other]
    with pytest.raises(gp.CheckpointError, match="No checkpoint"):
        store.rewrite(cid, b"x")


def test_rewrite_leaves_one_payload_file_and_a_discarded_one_is_not_reused(local):
    cid = local.put("run", 0, 3, b"old")
    local.rewrite(cid, b"new")
    folder = Path(local.root, *cid.split("/"))
    payloads = sorted(p.name for p in folder.iterdir() if p.name != "manifest.json")
    assert len(payloads) == 1
    assert payloads[0].startswith("payload-")
    local.discard(cid)  # not kept as a spare: its files are not the usual two
    again = local.put("run", 0, 4, b"next")
    again_folder = Path(local.root, *again.split("/"))
    assert sorted(p.name for p in again_folder.iterdir()) == ["manifest.json", "payload.bin"]


def test_a_failed_rewrite_keeps_the_old_payload(local, monkeypatch):
    cid = local.put("run", 0, 3, b"old")
    real = os.replace

    def full(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(gp.CheckpointError, match="still holds its old payload"):
        local.rewrite(cid, b"new")
    monkeypatch.setattr(os, "replace", real)
    assert local.get(cid) == b"old"
    folder = Path(local.root, *cid.split("/"))
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "payload.bin"]


@pytest.mark.parametrize("name", ["../x.bin", "/etc/passwd", "payload-zz.bin", 5, "manifest.json"])
def test_a_manifest_naming_another_payload_file_is_torn(local, name):
    cid = local.put("run", 0, 3, b"old")
    manifest = Path(local.root, *cid.split("/"), "manifest.json")
    record = json.loads(manifest.read_text())
    record["payload"]["file"] = name
    manifest.write_text(json.dumps(record))
    with pytest.raises(gp.CheckpointError, match="names the payload file"):
        local.get(cid)


def test_ids_of_one_run_and_older_than(store):
    a = store.put("run", 0, 1, b"a")
    b = store.put("other", 0, 1, b"b")
    assert store.ids("run") == [a]
    assert store.ids("other") == [b]
    assert store.ids("none") == []
    assert store.ids(older_than=3600.0) == []  # both were just written
    assert store.ids("run", older_than=-1.0) == [a]


def test_older_than_reads_the_time_of_the_write(local):
    old, new = local.put("run", 0, 1, b"old"), local.put("run", 1, 1, b"new")
    then = time.time() - 100.0
    path = Path(local.root, old)
    for p in [*path.iterdir(), path]:
        os.utime(p, (then, then))
    assert local.ids("run", older_than=50.0) == [old]
    assert local.ids("run", older_than=200.0) == []
    assert local.ids("run") == sorted([old, new])


def _entries(member_dir: Path) -> list[str]:
    return sorted(p.name for p in member_dir.iterdir())


def test_a_discarded_directory_is_written_into_again(local):
    first = local.put("run", 0, 1, b"x" * 5000, manifest={"score": 1.0, "long": "y" * 500})
    path = Path(local.root, first)
    inode = path.stat().st_ino
    local.discard(first)
    member_dir = path.parent
    (spare,) = _entries(member_dir)
    assert spare.startswith(".tmp-spare-")
    assert local.ids() == []
    # the next write (a shorter payload, a shorter manifest) goes into that directory
    second = local.put("run", 0, 2, b"short", manifest={"score": 2.0})
    assert Path(local.root, second).stat().st_ino == inode
    assert _entries(member_dir) == [second.split("/")[-1]]
    assert local.get(second) == b"short"
    assert (Path(local.root, second) / "payload.bin").read_bytes() == b"short"
    manifest = local.manifest(second)
    assert manifest["fields"] == {"score": 2.0}
    assert manifest["payload"]["size"] == 5
    assert json.loads((Path(local.root, second) / "manifest.json").read_text()) == manifest
    with pytest.raises(gp.CheckpointError, match="No checkpoint"):
        local.get(first)  # never the new bytes under the old id


def test_a_spare_of_one_member_serves_another_of_the_run(local):
    a = local.put("run", 0, 1, b"a")
    local.put("other", 0, 1, b"o")
    inode = Path(local.root, a).stat().st_ino
    local.discard(a)
    o2 = local.put("other", 1, 1, b"o2")  # another run: a new directory
    assert Path(local.root, o2).stat().st_ino != inode
    b = local.put("run", 3, 5, b"b")  # the same run, another member: the spare
    assert Path(local.root, b).stat().st_ino == inode
    assert local.get(b) == b"b"
    assert _entries(Path(local.root, "run", "m0")) == []


def test_spares_are_bounded_and_drained(local):
    ids = [local.put("run", 0, i, b"z" * 100) for i in range(ck.SPARES_PER_RUN + 3)]
    for cid in ids:
        local.discard(cid)
    member_dir = Path(local.root, "run", "m0")
    spares = [e for e in _entries(member_dir) if e.startswith(".tmp-spare-")]
    assert len(spares) == ck.SPARES_PER_RUN  # the others were deleted for good
    assert not [e for e in _entries(member_dir) if not e.startswith(".tmp-spare-")]
    clone = pickle.loads(pickle.dumps(local))  # a worker process's copy owns no spare
    clone.drain()
    assert len(_entries(member_dir)) == ck.SPARES_PER_RUN
    local.drain()
    assert _entries(member_dir) == []
    cid = local.put("run", 0, 9, b"after")  # still usable
    assert local.get(cid) == b"after"


def test_a_large_checkpoint_is_deleted_not_kept(local, monkeypatch):
    monkeypatch.setattr(ck, "SPARE_MAX_BYTES", 100)
    small, large = local.put("run", 0, 1, b"s" * 100), local.put("run", 0, 2, b"L" * 101)
    local.discard(large)
    assert _entries(Path(local.root, "run", "m0")) == [small.split("/")[-1]]
    local.discard(small)
    (spare,) = _entries(Path(local.root, "run", "m0"))
    assert spare.startswith(".tmp-spare-")


def test_an_old_spare_is_removed_not_reused(local, monkeypatch):
    first = local.put("run", 0, 1, b"a")
    inode = Path(local.root, first).stat().st_ino
    local.discard(first)
    monkeypatch.setattr(ck, "SPARE_MAX_AGE_SECONDS", -1.0)
    second = local.put("run", 0, 2, b"b")
    assert local.get(second) == b"b"
    assert _entries(Path(local.root, "run", "m0")) == [second.split("/")[-1]]
    del inode  # a new directory may reuse the freed inode number: only the entries tell


def test_a_spare_swept_by_another_process_is_not_needed(local):
    first = local.put("run", 0, 1, b"a")
    local.discard(first)
    # another process takes the spare for stale and removes it
    assert LocalCheckpoints(local.root).sweep(grace_seconds=0) == 1
    second = local.put("run", 0, 2, b"b")
    assert local.get(second) == b"b"
    assert local.ids() == [second]
    assert _entries(Path(local.root, "run", "m0")) == [second.split("/")[-1]]


def test_a_spare_swept_while_it_is_written_into_is_replaced(local, monkeypatch):
    first = local.put("run", 0, 1, b"a")
    local.discard(first)
    original = ck._write_file
    swept: list[int] = []

    def swept_meanwhile(path: str, data: bytes, *, fsync: bool) -> None:
        if not swept and path.endswith("manifest.json"):
            swept.append(LocalCheckpoints(local.root).sweep(grace_seconds=0))
        original(path, data, fsync=fsync)

    monkeypatch.setattr(ck, "_write_file", swept_meanwhile)
    second = local.put("run", 0, 2, b"payload")
    assert swept == [1]
    assert local.get(second) == b"payload"
    assert local.ids() == [second]
    assert _entries(Path(local.root, "run", "m0")) == [second.split("/")[-1]]


class _RacingFile:
    """A file whose first read lets ``race`` run first (between open and read)."""

    def __init__(self, f: Any, race: Callable[[], None]) -> None:
        self.f, self.race = f, race

    def __enter__(self) -> _RacingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()

    def read(self) -> bytes:
        self.race()
        return self.f.read()  # type: ignore[no-any-return]


@pytest.mark.parametrize("when", ["before-open", "after-open"])
def test_a_reader_of_a_discarded_checkpoint_never_gets_the_new_bytes(local, monkeypatch, when):
    first = local.put("run", 0, 1, b"old" * 100)
    real_open = open
    reused: list[str] = []

    def reuse() -> None:
        # the checkpoint is discarded and its directory written into by the next put
        monkeypatch.setattr("builtins.open", real_open)
        local.discard(first)
        reused.append(local.put("run", 0, 2, b"new" * 99))

    def racing_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        # the reader has read the manifest and is about to read the payload
        if str(path).endswith("payload.bin") and not reused:
            if when == "before-open":
                reuse()
            else:
                return _RacingFile(real_open(path, *args, **kwargs), reuse)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", racing_open)
    with pytest.raises(gp.CheckpointError, match="No checkpoint"):
        local.get(first)
    assert reused
    assert Path(local.root, reused[0]).stat().st_ino is not None
    assert local.get(reused[0]) == b"new" * 99


# -- MemoryCheckpoints ---------------------------------------------------------------------


def test_memory_checkpoints_ids_are_sequential():
    store = MemoryCheckpoints()
    assert [store.put("run", 0, 3, b"x") for _ in range(3)] == [
        "run/m0/s3-0",
        "run/m0/s3-1",
        "run/m0/s3-2",
    ]
