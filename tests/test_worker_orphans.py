"""Checkpoints that nothing refers to (written by a worker that died before it recorded
them) are deleted by ``collect_orphans``: never a current or pinned one, never another
run's, never another datastore's, and while the run is going on only once they are old.

The kill tests that leave such checkpoints behind for real are in
tests/executors/test_processes.py.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from genepool.checkpoints import (
    OWNER_FILE,
    CheckpointStore,
    LocalCheckpoints,
    MemoryCheckpoints,
    Owner,
)
from genepool.member import CheckpointRef
from genepool.policy import Policy
from genepool.store import MemoryStore, WorkerInfo
from genepool.worker import ORPHAN_GRACE_SECONDS, RunContext, collect_orphans


class Nothing(gp.Trainable):
    def setup(self, hparams: Mapping[str, Any]) -> None:
        pass

    def step(self) -> dict[str, float]:
        return {"score": 0.0}

    def save(self) -> None:
        return None

    def load(self, state: Any) -> None:
        pass

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        pass


@pytest.fixture(params=["memory", "local"])
def checkpoints(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStore:
    if request.param == "memory":
        return MemoryCheckpoints()
    return LocalCheckpoints(tmp_path / "ckpt")


def context(checkpoints: CheckpointStore) -> RunContext:
    store = MemoryStore()
    for run in ("run", "other"):
        store.create_run(
            run,
            config={"mode": "max"},
            members=[gp.MemberView(id=i, hparams={"lr": 0.5}) for i in range(3)],
        )
    policy = Policy(
        space=gp.Space(lr=gp.Float(0.1, 1.0)),
        ready=gp.Every(4),
        exploit=None,
        explore=None,
        budget=gp.Budget(steps=8),
    )
    checkpoints.own("run", Owner(store.identity, repr(store)))  # as gp.run does
    clock = gp.SystemClock()
    return RunContext(
        name="run",
        trainable=Nothing,
        policy=policy,
        metric="score",
        seed=0,
        store=store,
        checkpoints=checkpoints,
        clock=clock,
        started=clock.now(),
    )


def hold(ctx: RunContext, member: int) -> Any:
    """Claim ``member`` (and only it) and keep its lease (a worker training it); the lease."""
    info = WorkerInfo(name="holder")
    others = []
    while True:
        lease = ctx.store.claim("run", info, lease_seconds=60.0)
        assert lease is not None
        if lease.member == member:
            break
        others.append(lease)
    for other in others:
        ctx.store.commit(other, release=True)
    return lease


def commit(ctx: RunContext, member: int, **changes: Any) -> None:
    """Claim ``member`` and write ``changes`` to its row (``pin``: a pin), releasing it."""
    lease = hold(ctx, member)
    pin = changes.pop("pin", None)
    view = dataclasses.replace(ctx.store.population("run")[member], **changes)
    ctx.store.commit(lease, member=view, pin=pin, release=True)


def ref(checkpoint_id: str, member: int, step: int) -> CheckpointRef:
    return CheckpointRef(checkpoint_id, member, step, float(step), 0.5, {"lr": 0.5})


def age(checkpoints: CheckpointStore, checkpoint_id: str, seconds: float) -> None:
    """Make a checkpoint look ``seconds`` old."""
    then = time.time() - seconds
    if isinstance(checkpoints, LocalCheckpoints):
        path = Path(checkpoints.root, checkpoint_id)
        for p in [*path.iterdir(), path]:
            os.utime(p, (then, then))
    else:
        assert isinstance(checkpoints, MemoryCheckpoints)
        checkpoints._written[checkpoint_id] = then


def test_only_old_checkpoints_nothing_refers_to_go_while_the_run_is_going_on(checkpoints):
    ctx = context(checkpoints)
    put = checkpoints.put
    current = put("run", 0, 4, b"current")
    commit(ctx, 0, checkpoint=ref(current, 0, 4), step=4)
    donor = put("run", 2, 4, b"donor")
    commit(ctx, 2, checkpoint=ref(donor, 2, 4), step=4)
    newer = put("run", 2, 8, b"newer")
    commit(ctx, 2, checkpoint=ref(newer, 2, 8), step=8)
    commit(ctx, 1, pin=donor)  # pinned, no member's current checkpoint any more
    young = put("run", 1, 8, b"young orphan")
    old = put("run", 1, 4, b"old orphan")
    elsewhere = put("other", 1, 4, b"another run's")
    for checkpoint_id in (current, donor, newer, old, elsewhere):
        age(checkpoints, checkpoint_id, 2 * ORPHAN_GRACE_SECONDS)

    writer = hold(ctx, 1)  # a worker that wrote the young one may still record it
    assert collect_orphans(ctx) == [old]
    assert checkpoints.ids("run") == sorted([current, donor, newer, young])
    assert checkpoints.ids("other") == [elsewhere]
    assert collect_orphans(ctx) == []
    ctx.store.commit(writer, release=True)
    assert ctx.store.held("run") == frozenset()
    # nobody holds member 1 now: nobody can record the young one, which goes at once
    assert collect_orphans(ctx) == [young]
    assert checkpoints.ids("run") == sorted([current, donor, newer])
    young = put("run", 1, 12, b"young orphan")
    # with no grace, the young one goes too: never the current or the pinned ones
    assert collect_orphans(ctx, grace_seconds=0.0) == [young]
    assert checkpoints.ids("run") == sorted([current, donor, newer])
    assert [checkpoints.get(c) for c in (current, donor, newer)] == [b"current", b"donor", b"newer"]
    assert checkpoints.ids("other") == [elsewhere]


def test_once_no_member_is_active_every_checkpoint_nothing_refers_to_goes(checkpoints):
    ctx = context(checkpoints)
    kept = checkpoints.put("run", 0, 8, b"kept")
    commit(ctx, 0, checkpoint=ref(kept, 0, 8), step=8, status="finished")
    young = checkpoints.put("run", 1, 8, b"young orphan")
    writer = hold(ctx, 1)
    assert collect_orphans(ctx) == []  # the worker holding member 1 may still record it
    ctx.store.commit(writer, release=True)
    commit(ctx, 1, status="finished")
    commit(ctx, 2, status="failed")
    assert collect_orphans(ctx) == [young]
    assert checkpoints.ids("run") == [kept]
    assert checkpoints.get(kept) == b"kept"


def test_once_no_member_is_active_the_run_temporaries_go_too(tmp_path):
    checkpoints = LocalCheckpoints(tmp_path / "ckpt")
    ctx = context(checkpoints)
    kept = checkpoints.put("run", 0, 8, b"kept")
    gone = checkpoints.put("run", 0, 4, b"replaced")
    checkpoints.discard(gone)  # a spare directory, as a worker that died leaves it
    torn = Path(checkpoints.root, "run", "m1", ".tmp-s8-" + "0" * 32)
    torn.mkdir(parents=True)
    (torn / "payload.bin").write_bytes(b"half")
    other = Path(checkpoints.root, "other", "m1", ".tmp-s8-" + "1" * 32)
    other.mkdir(parents=True)
    commit(ctx, 0, checkpoint=ref(kept, 0, 8), step=8, status="finished")
    collect_orphans(ctx)
    assert torn.exists()  # a member is active: a write may be in progress
    for m in (1, 2):
        commit(ctx, m, status="finished")
    collect_orphans(ctx)
    assert sorted(p.name for p in Path(checkpoints.root, "run").rglob("*")) == sorted(
        ["m0", "m1", kept.split("/")[-1], "manifest.json", "payload.bin", OWNER_FILE]
    )
    assert other.exists()  # another run's are left alone


def test_another_datastores_checkpoints_and_temporaries_in_the_folder_are_left_alone(tmp_path):
    root = tmp_path / "ckpt"
    # another datastore's run of the same name wrote here first; its marker was lost
    theirs = LocalCheckpoints(root)
    theirs.own("run", Owner("b" * 32, "SQLStore('sqlite:///b.db')"))
    their_checkpoint = theirs.put("run", 1, 4, b"theirs")
    (root / "run" / OWNER_FILE).unlink()
    their_write = root / "run" / "m1" / (".tmp-s8-" + "2" * 32)  # in progress
    their_write.mkdir()
    ctx = context(LocalCheckpoints(root))  # it does not mark the folder then: theirs is in it
    assert not (root / "run" / OWNER_FILE).exists()
    checkpoints = ctx.checkpoints
    kept = checkpoints.put("run", 0, 8, b"kept")
    ours = checkpoints.put("run", 2, 8, b"our orphan")
    assert checkpoints.manifest(ours)["store"] == ctx.store.identity
    commit(ctx, 0, checkpoint=ref(kept, 0, 8), step=8, status="finished")
    for m in (1, 2):
        commit(ctx, m, status="finished")
    assert collect_orphans(ctx) == [ours]
    assert checkpoints.ids("run") == sorted([kept, their_checkpoint])
    assert checkpoints.get(their_checkpoint) == b"theirs"
    assert their_write.exists()  # not this datastore's folder: no sweep without a grace
