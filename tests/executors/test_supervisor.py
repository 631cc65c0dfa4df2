"""The supervisor of worker processes and Ray actors, over fake handles (no processes).

Each fake worker ends when the test says so (at its start, or when stopped); the fake
store says whether members are left to train.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

import genepool as gp
from genepool.executors._supervisor import Supervision, supervise
from genepool.policy import Policy
from genepool.worker import RunContext


class FakeStore:
    """The population of the run: all active, or all finished within the budget."""

    def __init__(self, members: int = 3) -> None:
        self.members = members
        self.active = True
        self.reads = 0

    def finish(self) -> None:
        self.active = False

    def population(self, run: str) -> list[gp.MemberView]:
        self.reads += 1
        if self.active:
            return [gp.MemberView(id=i, hparams={}) for i in range(self.members)]
        return [
            gp.MemberView(id=i, hparams={}, status="finished", stop_reason="budget")
            for i in range(self.members)
        ]


class FakeWorker:
    """A worker handle whose end the test decides."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.ended = False
        self.result: bool | Exception = True  # True: ended normally; False: died
        self.ends_when_stopped = True
        self.is_placed = True
        self.stops: list[str] = []
        self.killed = False
        self.closed = False

    def end(self, result: bool | Exception = True) -> None:
        self.ended, self.result = True, result

    def placed(self) -> bool:
        return self.is_placed

    def stop(self, reason: str) -> None:
        self.stops.append(reason)
        if self.ends_when_stopped:
            self.end()

    def kill(self) -> None:
        self.killed = True
        self.end(False)

    def outcome(self) -> bool:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result

    def close(self) -> None:
        self.closed = True


class FakeLauncher:
    """Starts fake workers; ``setup(n, worker)`` scripts the n-th one started."""

    def __init__(self, setup: Callable[[int, FakeWorker], None]) -> None:
        self.setup = setup
        self.started: list[FakeWorker] = []
        self.replaced: list[int] = []
        self.on_wait: Callable[[], None] = lambda: None

    def start(self, index: int) -> FakeWorker:
        worker = FakeWorker(index)
        self.setup(len(self.started), worker)
        self.started.append(worker)
        return worker

    def replace(self, dead: FakeWorker) -> FakeWorker:
        self.replaced.append(dead.index)
        return self.start(dead.index)

    def wait(self, handles: Sequence[FakeWorker], timeout: float) -> list[FakeWorker]:
        self.on_wait()
        ended = [h for h in handles if h.ended]
        if not ended:
            time.sleep(0.001)
        return ended


def context(store: FakeStore) -> RunContext:
    policy = Policy(
        space=gp.Space(lr=gp.Float(0.1, 1.0)),
        ready=gp.Every(4),
        exploit=None,
        explore=None,
        budget=gp.Budget(steps=8),
    )
    clock = gp.SystemClock()
    fake: Any = store  # only population() is read
    return RunContext(
        name="run",
        trainable=object,  # type: ignore[arg-type]
        policy=policy,
        metric="score",
        seed=0,
        store=fake,
        checkpoints=fake,
        clock=clock,
        started=clock.now(),
    )


def how(**options: Any) -> Supervision:
    settings: dict[str, Any] = {
        "workers": 2,
        "max_restarts": 5,
        "grace_seconds": 0.05,
        "check_every": 0.0,
    }
    settings.update(options)
    return Supervision(**settings)


def test_workers_that_end_normally_end_the_run_with_the_store_s_reason() -> None:
    store = FakeStore()
    store.finish()
    launcher = FakeLauncher(lambda n, w: w.end())
    assert supervise(context(store), launcher, how(workers=3)) == "budget"
    assert [w.index for w in launcher.started] == [0, 1, 2]
    assert launcher.replaced == []
    assert not any(w.killed or w.closed for w in launcher.started)


def test_a_dead_worker_is_replaced_while_members_are_left() -> None:
    store = FakeStore()

    def setup(n: int, worker: FakeWorker) -> None:
        if n == 0:
            worker.end(False)  # the first dies at once
        elif n == 2:  # its replacement trains the members left to the end
            store.finish()
            worker.end()

    launcher = FakeLauncher(setup)

    def worker_1_ends() -> None:  # once the replacement has finished the run
        if not store.active:
            launcher.started[1].end()

    launcher.on_wait = worker_1_ends
    assert supervise(context(store), launcher, how()) == "budget"
    assert launcher.replaced == [0]
    assert [w.index for w in launcher.started] == [0, 1, 0]


def test_a_dead_worker_is_not_replaced_once_no_member_is_left() -> None:
    store = FakeStore()

    def setup(n: int, worker: FakeWorker) -> None:
        if n == 0:
            store.finish()
            worker.end(False)  # it died after the last member ended
        else:
            worker.end()

    launcher = FakeLauncher(setup)
    assert supervise(context(store), launcher, how()) == "budget"
    assert launcher.replaced == []


def test_restarts_stop_at_max_restarts(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    launcher = FakeLauncher(lambda n, w: w.end(False))  # every worker dies at once
    caplog.set_level(logging.WARNING, logger="genepool.executors")
    assert supervise(context(store), launcher, how(max_restarts=3)) == "interrupted"
    assert len(launcher.replaced) == 3
    assert len(launcher.started) == 2 + 3
    assert sum("no restarts left" in r.getMessage() for r in caplog.records) == 2


def test_a_hung_worker_is_killed_a_grace_period_after_the_last_member_ended() -> None:
    store = FakeStore()

    def setup(n: int, worker: FakeWorker) -> None:
        if n == 0:
            store.finish()
            worker.end()
        # worker 1 hangs in user code: it never ends by itself

    launcher = FakeLauncher(setup)
    started = time.monotonic()
    assert supervise(context(store), launcher, how(grace_seconds=0.2)) == "budget"
    assert time.monotonic() - started >= 0.2
    hung = launcher.started[1]
    assert hung.killed
    assert hung.closed
    assert not launcher.started[0].killed


def test_a_stop_is_forwarded_to_every_worker_once() -> None:
    store = FakeStore()
    launcher = FakeLauncher(lambda n, w: None)  # they train until stopped
    ctx = context(store)

    def stop() -> None:  # as Ctrl-C in the driver does
        ctx.stop_reason = "user"
        ctx.stop_event.set()

    launcher.on_wait = stop
    assert supervise(ctx, launcher, how(workers=3)) == "user"
    assert [w.stops for w in launcher.started] == [["user"]] * 3
    assert launcher.replaced == []
    assert not any(w.killed for w in launcher.started)


@pytest.mark.parametrize("kill_after_stop", [True, False])
def test_after_a_stop_slow_workers_are_killed_only_where_the_executor_asks(
    kill_after_stop: bool,
) -> None:
    def setup(n: int, worker: FakeWorker) -> None:
        worker.ends_when_stopped = n == 0  # worker 1 takes long to checkpoint

    launcher = FakeLauncher(setup)
    ctx = context(FakeStore())
    ctx.stop_event.set()
    waits = 0

    def count() -> None:
        nonlocal waits
        waits += 1
        if waits == 300:  # it ends by itself in the end
            launcher.started[1].end()

    launcher.on_wait = count
    options = how(grace_seconds=0.01, kill_after_stop=kill_after_stop)
    assert supervise(ctx, launcher, options) == "interrupted"
    assert launcher.started[1].killed is kill_after_stop
    assert launcher.started[1].stops == ["interrupted"]


def test_a_storage_fault_stops_the_others_and_raises_the_error() -> None:
    store = FakeStore()
    fault = gp.StorageFaultError("disk full: /data")

    def setup(n: int, worker: FakeWorker) -> None:
        if n == 0:
            worker.end(fault)

    launcher = FakeLauncher(setup)
    ctx = context(store)
    with pytest.raises(gp.StorageFaultError) as info:
        supervise(ctx, launcher, how(workers=3))
    assert info.value is fault
    assert ctx.stop_reason == "storage"
    assert [w.stops for w in launcher.started[1:]] == [["storage"], ["storage"]]
    assert launcher.replaced == []  # a storage fault starts no other worker


def test_an_error_no_worker_can_get_past_ends_the_run_and_closes_the_others() -> None:
    store = FakeStore()

    def setup(n: int, worker: FakeWorker) -> None:
        if n == 0:
            worker.end(gp.TrainableError("broken trainable"))

    launcher = FakeLauncher(setup)
    with pytest.raises(gp.TrainableError, match="broken trainable"):
        supervise(context(store), launcher, how(workers=3))
    assert [w.closed for w in launcher.started] == [False, True, True]


def test_a_worker_still_waiting_for_room_is_dropped_once_no_member_is_left() -> None:
    store = FakeStore()

    def setup(n: int, worker: FakeWorker) -> None:
        if n == 0:
            store.finish()
            worker.end()
        else:
            worker.is_placed = False  # no node has room for it yet

    launcher = FakeLauncher(setup)
    assert supervise(context(store), launcher, how(grace_seconds=60.0)) == "budget"
    waiting = launcher.started[1]
    assert waiting.killed
    assert waiting.closed


def test_the_store_is_read_for_members_left_only_every_check_every_seconds() -> None:
    store = FakeStore()
    launcher = FakeLauncher(lambda n, w: None)
    waits = 0

    def count() -> None:
        nonlocal waits
        waits += 1
        if waits == 50:
            for worker in launcher.started:
                worker.end()

    launcher.on_wait = count
    supervise(context(store), launcher, how(check_every=60.0))
    # one look when the run started, one for the outcome (the workers ended normally)
    assert store.reads == 2
