"""The heartbeat judges only the lease the worker holds now (a regression test).

A renewal of a lease the loop has just released fails as stale; that failure must not
mark the loop's *next* lease as lost (it once did: the next member's round was thrown
away, its lease never released, and a crash counted against it).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import genepool as gp
from genepool.checkpoints import MemoryCheckpoints
from genepool.policy import Policy
from genepool.store import Lease, MemoryStore, WorkerInfo
from genepool.worker import RunContext, Worker


class SlowRenewal(MemoryStore):
    """Holds the first renewal until the worker has claimed another member (or 1 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0
        self.next_claimed = threading.Event()
        self.held_once = False

    def claim(self, run: str, worker: WorkerInfo, **kw: Any) -> Lease | None:
        lease = super().claim(run, worker, **kw)
        if lease is not None:
            self.claims += 1
            if self.claims >= 2:
                self.next_claimed.set()
        return lease

    def renew(self, lease: Lease, *, lease_seconds: float) -> Lease:
        if not self.held_once:
            self.held_once = True
            self.next_claimed.wait(1.0)
        return super().renew(lease, lease_seconds=lease_seconds)


class Slow(gp.Trainable):
    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x = 0.0
        self.pause = threading.Event()

    def step(self) -> dict[str, float]:
        self.pause.wait(0.03)  # long enough for a heartbeat to start within the round
        self.x += 1.0
        return {"score": self.x}

    def save(self) -> float:
        return self.x

    def load(self, state: float) -> None:
        self.x = state

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        pass


def test_a_stale_renewal_of_a_released_lease_does_not_lose_the_next_one() -> None:
    store = SlowRenewal()
    space = gp.Space(lr=gp.Float(0.1, 1.0))
    policy = Policy(
        space=space, ready=gp.Every(2), exploit=None, explore=None, budget=gp.Budget(steps=4)
    )
    store.create_run(
        "run",
        config={"mode": "max"},
        members=[gp.MemberView(id=i, hparams={"lr": 0.5}) for i in range(3)],
    )
    clock = gp.SystemClock()
    ctx = RunContext(
        name="run",
        trainable=Slow,
        policy=policy,
        metric="score",
        seed=0,
        store=store,
        checkpoints=MemoryCheckpoints(),
        clock=clock,
        started=clock.now(),
        lease_seconds=0.15,
        heartbeat=True,
        idle_wait=0.01,
    )
    assert Worker(ctx).run() == "budget"
    assert store.held_once, "the heartbeat never renewed: the test proves nothing"
    population = store.population("run")
    assert all(m.status == "finished" and m.step == 4 for m in population)
    assert all(m.crashes == 0 for m in population), [m.crashes for m in population]
