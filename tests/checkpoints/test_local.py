"""LocalCheckpoints: the checkpoint contract (``contract.py``) in a local folder, and what
only a folder shows: the on-disk layout, atomicity under a crash, integrity checks,
concurrency across processes, the spare folders, and ``file://`` URLs, which are this
backend's.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from genepool import checkpoints as ck
from genepool.checkpoints import (
    MANIFEST_FORMAT,
    CheckpointStore,
    LocalCheckpoints,
    _files,
    _spares,
    decode,
    encode,
)
from tests.checkpoints.contract import CheckpointContract


class TestLocalCheckpoints(CheckpointContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Callable[[], CheckpointStore]:
        return lambda: LocalCheckpoints(tmp_path / "ckpt")


@pytest.fixture
def local(tmp_path: Path) -> LocalCheckpoints:
    return LocalCheckpoints(tmp_path / "ckpt")


def spawn() -> Any:
    return multiprocessing.get_context("spawn")


# -- the contract, over both backends ------------------------------------------------------


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


def test_a_checkpoint_folder_without_its_manifest_is_not_listed(local, tmp_path):
    kept = local.put("run", 0, 1, b"kept")
    damaged = local.put("run", 0, 2, b"damaged")
    manifest = next(tmp_path.rglob(f"{damaged.rsplit('/', 1)[1]}/manifest.json"))
    manifest.unlink()  # as damage would leave it: a write renames it in complete
    assert local.ids() == [kept]
    assert len(local) == 1
    with pytest.raises(gp.CheckpointError):
        local.get(damaged)


# -- LocalCheckpoints: atomicity ---------------------------------------------------------


def _member_dir_entries(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "run" / "m0").iterdir())


def test_failed_write_leaves_nothing(local, monkeypatch):
    original = _files.write_file

    def torn(path: str, data: bytes, *, fsync: bool) -> None:
        if path.endswith("payload.bin"):
            with open(path, "xb") as f:
                f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        original(path, data, fsync=fsync)

    monkeypatch.setattr(_files, "write_file", torn)
    # a storage fault (never the member's): the run stops, and says how to fix it
    with pytest.raises(gp.StorageError, match=r"No space left.*members active.*free space") as info:
        local.put("run", 0, 5, b"x" * 1000)
    assert isinstance(info.value.__cause__, OSError)
    assert local.ids() == []
    assert _member_dir_entries(Path(local.root)) == []  # the temporary was removed too
    monkeypatch.setattr(_files, "write_file", original)
    cid = local.put("run", 0, 5, b"x" * 1000)  # and the store still works
    assert local.get(cid) == b"x" * 1000


def _crash_mid_write(root: str) -> None:
    """In a child process: die (no clean-up at all) after writing half the payload."""
    original = _files.write_file

    def crash(path: str, data: bytes, *, fsync: bool) -> None:
        if path.endswith("payload.bin"):
            with open(path, "xb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
            os._exit(17)
        original(path, data, fsync=fsync)

    _files.write_file = crash
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
    original = _files.write_file

    def swept_meanwhile(path: str, data: bytes, *, fsync: bool) -> None:
        if path.endswith("manifest.json"):
            assert local.sweep(grace_seconds=0) == 1  # another process thinks it stale
        original(path, data, fsync=fsync)

    monkeypatch.setattr(_files, "write_file", swept_meanwhile)
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


# -- rewrite: a payload in a newer format, same id (genepool migrate) ---------------------


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
    monkeypatch.setattr(_spares, "SPARE_MAX_BYTES", 100)
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
    monkeypatch.setattr(_spares, "SPARE_MAX_AGE_SECONDS", -1.0)
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
    original = _files.write_file
    swept: list[int] = []

    def swept_meanwhile(path: str, data: bytes, *, fsync: bool) -> None:
        if not swept and path.endswith("manifest.json"):
            swept.append(LocalCheckpoints(local.root).sweep(grace_seconds=0))
        original(path, data, fsync=fsync)

    monkeypatch.setattr(_files, "write_file", swept_meanwhile)
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


# -- file:// URLs: this backend ------------------------------------------------------------


def test_a_file_url_is_the_local_backend(tmp_path):
    url = (tmp_path / "ckpt").as_uri()
    store: CheckpointStore = gp.FsspecCheckpoints(url)  # its type says FsspecCheckpoints
    assert isinstance(store, LocalCheckpoints)
    assert store.root == str(tmp_path / "ckpt")
    assert type(ck.open_checkpoints(url)) is LocalCheckpoints
    assert type(ck.open_checkpoints(str(tmp_path / "ckpt"))) is LocalCheckpoints
    cid = store.put("run", 1, 2, b"same layout", manifest={"score": 1.0})
    local = LocalCheckpoints(tmp_path / "ckpt")
    assert local.ids() == [cid]
    assert local.get(cid) == b"same layout"
    assert local.manifest(cid) == store.manifest(cid)
    other = local.put("run", 2, 3, b"and back")
    assert store.get(other) == b"and back"
    assert store.ids() == sorted([cid, other])
    copied = pickle.loads(pickle.dumps(store))  # executors send it to worker processes
    assert copied.get(other) == b"and back"
    read_only: CheckpointStore = gp.FsspecCheckpoints(url, read_only=True)
    assert isinstance(read_only, LocalCheckpoints)
    assert read_only.read_only


def test_fsync_on_a_file_url(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store: CheckpointStore = gp.FsspecCheckpoints((tmp_path / "new" / "ckpt").as_uri(), fsync=True)
    assert isinstance(store, LocalCheckpoints)
    assert store.fsync
    assert len(synced) == 1  # the new root's entry in its parent
    first = store.put("run", 0, 1, b"abc")
    # the run and member directories' entries, two files, the temporary, the rename
    assert len(synced) == 1 + 6
    store.put("run", 0, 2, b"def")
    assert len(synced) == 1 + 6 + 4
    assert store.get(first) == b"abc"


def _train(member: gp.Member) -> None:
    x = member.restore() or 0.0
    while member.running:
        x += member.hparams["lr"] * (1.0 - x)
        member.report(score=x, state=x)


def test_a_run_with_checkpoints_on_a_file_url(tmp_path):
    url = (tmp_path / "ckpt").as_uri()
    result = gp.run(
        _train,
        gp.Space(lr=gp.Float(0.01, 0.5, log=True)),
        metric="score",
        population=4,
        ready=gp.Every(4),
        budget=gp.Budget(steps=12),
        exploit=gp.Truncation(0.25),
        explore=gp.Perturb(),
        seed=0,
        checkpoints=url,
        keep=0,
    )
    assert result.stop_reason == "budget"
    assert result.load() == pytest.approx(result.best.score)
    store = LocalCheckpoints(tmp_path / "ckpt")
    ids = store.ids("run")
    # each member holds its last checkpoint; the ones nothing refers to were collected
    assert {m.checkpoint for m in result.members} == set(ids)
    assert len(ids) == 4
    assert result.best.checkpoint is not None
    assert store.manifest(result.best.checkpoint)["step"] == 12
