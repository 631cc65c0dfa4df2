"""The synchronous barrier has two sides: a member waits for its decision until every active
member has finished the round, and none trains the next round while a decision of this one
is still to be made, so each decision sees that round's checkpoints and none of the next.

A regression test: with several workers, a worker slow to decide a member once let another
worker train a member it had decided into the next round, and the slow decision then saw
(and copied) a donor a round ahead.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import genepool as gp
from genepool.checkpoints import MemoryCheckpoints, encode
from genepool.member import CheckpointRef, Event, Report
from genepool.policy import Policy
from genepool.store import Lease, MemoryStore, WorkerInfo
from genepool.worker import RunContext, Worker

READY = 4


class Counter(gp.Trainable):
    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x = 0.0

    def step(self) -> dict[str, float]:
        self.x += 1.0
        return {"score": self.x}

    def save(self) -> float:
        return self.x

    def load(self, state: float) -> None:
        self.x = state

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        pass


class Watching(MemoryStore):
    """Tells when a worker gave a member back untrained, or trained one."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = threading.Event()
        self.given_back: list[int] = []

    def commit(
        self,
        lease: Lease,
        *,
        member: gp.MemberView | None = None,
        reports: Sequence[Report] = (),
        events: Sequence[Event] = (),
        pin: str | None = None,
        release: bool = False,
    ) -> gp.Population:
        out = super().commit(
            lease, member=member, reports=reports, events=events, pin=pin, release=release
        )
        if member is None and release and not reports:
            self.given_back.append(lease.member)
            self.seen.set()
        if reports:
            self.seen.set()
        return out


def test_no_member_trains_the_next_round_while_a_decision_of_this_one_is_to_be_made():
    store, checkpoints = Watching(), MemoryCheckpoints()
    rows = []
    for i in range(3):  # every member has done round 1 (step 4)
        cid = checkpoints.put("run", i, READY, encode({"state": float(READY), "rng": None}))
        ckpt = CheckpointRef(cid, i, READY, float(READY), 4.0 + i, {"lr": 0.5})
        rows.append(
            gp.MemberView(
                id=i,
                hparams={"lr": 0.5},
                step=READY,
                checkpoint=ckpt,
                score=4.0 + i,
                ready_count=1,
                ready_counter=float(READY),
                pending=(i == 0),  # member 0 waits for its decision; 1 and 2 were decided
            )
        )
    store.create_run("run", config={"mode": "max"}, members=rows)
    slow = store.claim("run", WorkerInfo(name="slow"), lease_seconds=60.0)
    assert slow is not None
    assert slow.member == 0  # a slow worker is deciding member 0
    policy = Policy(
        space=gp.Space(lr=gp.Float(0.1, 1.0)),
        ready=gp.Every(READY),
        exploit=None,
        explore=None,
        budget=gp.Budget(steps=3 * READY),
    )
    clock = gp.SystemClock()
    ctx = RunContext(
        name="run",
        trainable=Counter,
        policy=policy,
        metric="score",
        seed=0,
        store=store,
        checkpoints=checkpoints,
        clock=clock,
        started=clock.now(),
        synchronous=True,
        idle_wait=0.005,  # one of several workers
    )
    worker = Worker(ctx, name="fast")
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(worker.run()))
    thread.start()
    try:
        assert store.seen.wait(30.0), "the worker neither trained nor gave a member back"
        assert store.history("run").reports == (), (
            "a member trained round 2 before member 0 was decided"
        )
        assert store.given_back[0] in (1, 2)
    finally:
        # the slow worker decides member 0 (it goes on): now everyone trains round 2
        view = dataclasses.replace(store.population("run")[0], pending=False)
        store.commit(slow, member=view, release=True)
        thread.join(60.0)
    assert outcome == ["budget"]
    population = store.population("run")
    assert all(m.status == "finished" and m.step == 3 * READY for m in population)
    reports = store.history("run").reports
    assert sorted((r.member, r.step) for r in reports) == [
        (m, s) for m in range(3) for s in range(READY + 1, 3 * READY + 1)
    ]
