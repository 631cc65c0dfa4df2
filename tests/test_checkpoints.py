"""Checkpoint bytes: the in-memory store, and the encode / decode format."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

import genepool as gp
from genepool.checkpoints import FORMAT_VERSION, MemoryCheckpoints, decode, encode

# -- MemoryCheckpoints -------------------------------------------------------------------


def test_put_get_delete():
    store = MemoryCheckpoints()
    cid = store.put("run", 3, 8, b"hello")
    assert isinstance(cid, str)
    assert store.get(cid) == b"hello"
    assert len(store) == 1
    store.delete(cid)
    assert len(store) == 0
    with pytest.raises(gp.CheckpointError, match="No checkpoint"):
        store.get(cid)
    store.delete(cid)  # deleting twice is a no-op


def test_get_unknown_id_raises_checkpoint_error():
    with pytest.raises(gp.CheckpointError, match="nope"):
        MemoryCheckpoints().get("nope")


def test_ids_are_never_reused():
    store = MemoryCheckpoints()
    seen = set()
    for _ in range(5):
        cid = store.put("run", 0, 4, b"x")
        assert cid not in seen
        seen.add(cid)
        store.delete(cid)  # even after a delete, the same (run, member, step) gets a new id
    other = MemoryCheckpoints()
    assert other.put("run2", 0, 4, b"x") not in seen


def test_ids_are_unique_under_concurrent_puts():
    store = MemoryCheckpoints()
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


def test_stored_bytes_are_immutable():
    store = MemoryCheckpoints()
    blob = bytearray(b"abc")
    cid = store.put("run", 0, 1, blob)  # type: ignore[arg-type]
    blob[0] = ord("z")  # the caller changes its buffer afterwards
    got = store.get(cid)
    assert got == b"abc"
    assert isinstance(got, bytes)
    view = memoryview(bytearray(b"def"))
    cid2 = store.put("run", 0, 2, view)  # type: ignore[arg-type]
    view[0] = ord("z")
    assert store.get(cid2) == b"def"


def test_checkpoints_of_different_members_are_independent():
    store = MemoryCheckpoints()
    a = store.put("run", 0, 4, b"a")
    b = store.put("run", 1, 4, b"b")
    assert a != b
    store.delete(a)
    assert store.get(b) == b"b"


def test_is_a_checkpoint_store():
    assert isinstance(MemoryCheckpoints(), gp.CheckpointStore)


# -- encode / decode ---------------------------------------------------------------------


def test_encode_decode_round_trip():
    rng = np.random.default_rng(0)
    payload = {
        "state": {"theta": rng.normal(size=(3, 2)), "step": 7, "names": ["a", "b"], "x": None},
        "rng": rng.bit_generator.state,
    }
    blob = encode(payload)
    assert isinstance(blob, bytes)
    back = decode(blob, checkpoint_id="c1")
    np.testing.assert_array_equal(back["state"]["theta"], payload["state"]["theta"])
    assert back["state"]["step"] == 7
    assert back["state"]["names"] == ["a", "b"]
    assert back["rng"] == payload["rng"]
    # decoding gives a copy: changing it does not change what is stored
    back["state"]["theta"][0, 0] = 99.0
    assert decode(blob)["state"]["theta"][0, 0] != 99.0


@pytest.mark.parametrize("payload", [None, 0, "text", [1, 2], {"a": (1, 2.5)}, b"raw"])
def test_encode_decode_plain_values(payload):
    assert decode(encode(payload)) == payload


def test_torn_blob_raises_checkpoint_error():
    blob = encode({"state": list(range(100))})
    for cut in (0, 1, len(blob) // 2, len(blob) - 1):
        with pytest.raises(gp.CheckpointError, match=r"Checkpoint c7 is torn") as info:
            decode(blob[:cut], checkpoint_id="c7")
        assert "not a genepool checkpoint" in str(info.value)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"hello world",
        b"\x00\x01\x02\x03" * 8,
        pickle.dumps({"a": 1}),
        pickle.dumps([1, 2, 3]),
        pickle.dumps(42),
    ],
    ids=["empty", "text", "binary", "dict", "list", "int"],
)
def test_foreign_blob_raises_checkpoint_error(blob):
    with pytest.raises(gp.CheckpointError, match=r"Checkpoint x/m0/s4-0"):
        decode(blob, checkpoint_id="x/m0/s4-0")


def test_other_format_version_raises_checkpoint_error():
    blob = pickle.dumps((FORMAT_VERSION + 1, {"state": 1}))
    with pytest.raises(gp.CheckpointError, match="format version") as info:
        decode(blob, checkpoint_id="c")
    assert str(FORMAT_VERSION + 1) in str(info.value)


def test_checkpoint_error_is_a_genepool_error():
    with pytest.raises(gp.GenepoolError):
        decode(b"garbage")


@pytest.mark.parametrize(
    "state",
    [lambda: 1, {"lock": threading.Lock()}, {"gen": (i for i in range(3))}],
    ids=["lambda", "lock", "generator"],
)
def test_unpicklable_state_raises_checkpoint_error(state):
    with pytest.raises(gp.CheckpointError, match="could not be serialised") as info:
        encode({"state": state})
    assert "Fix:" in str(info.value)
    assert info.value.__cause__ is not None
