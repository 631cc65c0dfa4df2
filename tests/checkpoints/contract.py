"""The checkpoint contract (:mod:`genepool.checkpoints._base`) as one class of tests.

Each backend's test module subclasses :class:`CheckpointContract` and gives its
``make_store`` fixture (a factory of stores that share one location), so that every test
written here runs on every backend (memory, a local folder, fsspec's ``memory://`` and S3)
with no list to update. The class's name does not start with ``Test``: pytest collects
only its subclasses.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import platform
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import genepool as gp
from genepool.checkpoints import MANIFEST_FORMAT, CheckpointStore, Owner, encode

#: Two datastores, as the ownership tests name them.
A = Owner("a" * 32, "SQLStore('sqlite:///a.db')")
B = Owner("b" * 32, "SQLStore('sqlite:///b.db')")


class CheckpointContract:
    """What every checkpoint store does; a backend's tests subclass it."""

    #: Whether a new store on the same location is a restart, which sees the checkpoints
    #: of the one before (not so in memory).
    durable: bool = True
    #: How many checkpoints each of four threads puts at once (fewer where a put is slow).
    concurrent_puts: int = 200

    @pytest.fixture
    def make_store(self) -> Callable[[], CheckpointStore]:
        """A factory of stores of the backend that share one location (each backend's
        subclass gives it)."""
        raise NotImplementedError(f"{type(self).__name__} gives no make_store fixture")

    @pytest.fixture
    def store(self, make_store: Callable[[], CheckpointStore]) -> CheckpointStore:
        return make_store()

    # -- put, get, delete, ids ---------------------------------------------------------------

    def test_put_get_delete(self, store):
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

    def test_get_unknown_id_raises_checkpoint_error(self, store):
        with pytest.raises(gp.CheckpointError, match="nope"):
            store.get("nope")

    def test_get_unknown_well_formed_id_raises_checkpoint_error(self, store):
        cid = store.put("run", 0, 1, b"x")
        store.delete(cid)
        with pytest.raises(gp.CheckpointError, match=r"No checkpoint .*run/m0/s1-"):
            store.get(cid)

    def test_ids_are_never_reused(self, make_store):
        store = make_store()
        seen = set()
        for _ in range(5):
            cid = store.put("run", 0, 4, b"x")
            assert cid not in seen
            seen.add(cid)
            store.delete(cid)  # even after a delete, the same (run, member, step) gets a new id
        other = make_store()
        assert other.put("run2", 0, 4, b"x") not in seen
        if self.durable:  # a restart on the same location
            assert other.put("run", 0, 4, b"x") not in seen

    def test_ids_are_unique_under_concurrent_puts(self, store):
        ids: list[str] = []
        guard = threading.Lock()

        def work() -> None:
            mine = [store.put("run", 0, 0, b"x") for _ in range(self.concurrent_puts)]
            with guard:
                ids.extend(mine)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(ids)) == len(ids) == 4 * self.concurrent_puts
        assert len(store) == 4 * self.concurrent_puts
        assert store.ids() == sorted(ids)

    def test_stored_bytes_are_immutable(self, store):
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

    def test_checkpoints_of_different_members_are_independent(self, store):
        a = store.put("run", 0, 4, b"a")
        b = store.put("run", 1, 4, b"b")
        assert a != b
        store.delete(a)
        assert store.get(b) == b"b"

    def test_is_a_checkpoint_store(self, store):
        assert isinstance(store, gp.CheckpointStore)
        assert isinstance(store, CheckpointStore)

    def test_empty_and_large_payloads(self, store):
        empty = store.put("run", 0, 0, b"")
        big = bytes(np.random.default_rng(0).integers(0, 256, size=3_000_000, dtype=np.uint8))
        large = store.put("run", 0, 1, big)
        assert store.get(empty) == b""
        assert store.get(large) == big
        assert store.manifest(large)["payload"]["size"] == len(big)

    def test_put_keeps_its_positional_signature(self, store):
        cid = store.put("run", 2, 6, b"x")  # what the worker calls today
        assert store.manifest(cid)["fields"] == {}
        cid = store.put(run="run", member=2, step=6, blob=b"y", manifest={"score": 1.0})
        assert store.manifest(cid)["fields"] == {"score": 1.0}
        with pytest.raises(TypeError):
            store.put("run", 2, 6, b"z", {"score": 1.0})  # manifest is keyword-only

    def test_manifest_round_trip(self, store):
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

    def test_manifest_is_a_copy(self, store):
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
    def test_manifest_that_is_not_json_raises_invalid_argument(self, store, fields):
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
    def test_bad_run_name_raises_invalid_argument(self, store, run):
        with pytest.raises(gp.InvalidArgumentError, match="'run' parameter"):
            store.put(run, 0, 1, b"x")
        assert len(store) == 0

    @pytest.mark.parametrize(("member", "step"), [(-1, 0), (0, -1), (1.0, 0), (0, "3"), (True, 0)])
    def test_bad_member_or_step_raises_invalid_argument(self, store, member, step):
        with pytest.raises(gp.InvalidArgumentError, match="must be an int >= 0"):
            store.put("run", member, step, b"x")

    def test_numpy_member_and_step_are_accepted(self, store):
        cid = store.put("run", np.int64(2), np.int32(5), b"x")
        assert cid.startswith("run/m2/s5-")
        assert type(store.manifest(cid)["member"]) is int

    def test_ids_of_one_run_and_older_than(self, store):
        a = store.put("run", 0, 1, b"a")
        b = store.put("other", 0, 1, b"b")
        assert store.ids("run") == [a]
        assert store.ids("other") == [b]
        assert store.ids("none") == []
        assert store.ids(older_than=3600.0) == []  # both were just written
        assert store.ids("run", older_than=-1.0) == [a]

    def test_discard_contract(self, store):
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

    def test_rewrite_contract(self, store):
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

    # -- ownership: a run's folder belongs to one datastore ------------------------------------

    def test_a_folder_is_owned_once_and_refused_to_another_datastore(self, store):
        assert store.owner("run") is None
        store.own("run", A)
        assert store.owner("run") == A
        store.own("run", A)  # again: it is A's already
        with pytest.raises(gp.StorageError) as info:
            store.own("run", B)
        message = str(info.value)
        assert A.shown in message
        assert B.shown in message
        assert A.store in message
        assert B.store in message
        assert "Fix:" in message
        assert store.owner("run") == A
        store.own("other", B)  # another run's folder is another folder
        assert store.owner("other") == B

    def test_a_bound_run_writes_its_datastore_into_each_manifest(self, store):
        unbound = store.put("run", 0, 1, b"x")
        store.own("run", A)
        bound = store.put("run", 0, 2, b"y")
        assert store.manifest(unbound)["store"] is None
        assert store.manifest(bound)["store"] == A.store
        assert store.put("other", 0, 1, b"z")  # another run: not bound
        assert store.manifest(store.ids("other")[0])["store"] is None

    def test_owned_by_keeps_only_the_datastores_checkpoints(self, store):
        unowned = store.put("run", 0, 1, b"before any owner")
        store.own("run", A, referenced=[unowned])  # adopted: A's members refer to it
        ours = store.put("run", 0, 2, b"a's")
        assert store.owned_by(A.store, [unowned, ours]) == [unowned, ours]
        assert store.owned_by(B.store, [unowned, ours]) == []

    def test_the_marker_is_no_checkpoint_and_no_leftover(self, store):
        store.own("run", A)
        kept = store.put("run", 0, 1, b"x")
        assert store.ids() == [kept]
        assert store.ids("run") == [kept]
        store.sweep(grace_seconds=0.0)
        store.sweep(run="run", grace_seconds=0.0, owner=A.store)
        assert store.owner("run") == A
        assert store.ids("run") == [kept]

    def test_an_unmarked_folder_of_unreferenced_old_checkpoints_stays_unmarked(self, store, caplog):
        old = store.put("run", 0, 1, b"an old run's")
        with caplog.at_level(logging.WARNING, logger="genepool.checkpoints"):
            store.own("run", A, referenced=["run/m0/s9-" + "0" * 32])
        assert "left untouched" in caplog.text
        assert store.owner("run") is None
        mine = store.put("run", 0, 2, b"a's")  # A's run goes on, writing its own
        assert store.owned_by(A.store, [old, mine]) == [mine]
