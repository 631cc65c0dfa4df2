"""A worker keeps a bounded number of members' sessions resident (issue 13, item 3).

Time-sharing a population over fewer workers once kept every member a worker had ever
trained alive in it (its model, and a function trainable's thread): 16 live sessions per
worker for a population of 16 over 2 workers. Now each worker keeps at most
``max_resident`` (default ``min(ceil(population / workers), 32)``), closes the least
recently used first, and drops a member another worker trained meanwhile. A member closed
starts again from its checkpoint, so a seeded serial run gives the same result whatever
the bound.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from genepool.checkpoints import MemoryCheckpoints
from genepool.policy import Policy
from genepool.store import MemoryStore
from genepool.worker import RunContext, Worker

POPULATION = 16
READY = 4
BUDGET = 12

#: The live instances of :class:`Counting` in this process.
LIVE: weakref.WeakSet[object] = weakref.WeakSet()
#: The most instances (class API) / member threads (function API) seen alive at a step.
PEAK = {"live": 0, "threads": 0}


def _note(log: str) -> None:
    """Record, at a step, how many sessions this process holds (and, in a worker process,
    append it to ``log``: ``<pid> <live instances> <threads>``)."""
    threads = sum(t.name.startswith("genepool-member-") for t in threading.enumerate())
    PEAK["live"] = max(PEAK["live"], len(LIVE))
    PEAK["threads"] = max(PEAK["threads"], threads)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {len(LIVE)} {threads}\n")


class Counting(gp.Trainable):
    """Climbs with noise from its member's stream; counts its live instances."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        LIVE.add(self)
        self.x = 0.0
        self.apply_hparams(hparams)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.lr = float(hparams["lr"])
        self.log = str(hparams.get("log", ""))

    def step(self) -> dict[str, float]:
        self.x += self.lr * (1.0 - self.x) + 0.05 * float(self.member.rng.standard_normal())
        _note(self.log)
        return {"score": self.x}

    def save(self) -> dict[str, float]:
        return {"x": self.x}

    def load(self, state: Mapping[str, float]) -> None:
        self.x = state["x"]


def counting_function(member: gp.Member) -> None:
    """The same in the function API (each session a thread)."""
    state = member.restore()
    x = 0.0 if state is None else float(state)
    lr = float(member.hparams["lr"])
    log = str(member.hparams.get("log", ""))
    while member.running:
        x += lr * (1.0 - x) + 0.05 * float(member.rng.standard_normal())
        _note(log)
        member.report(score=x, state=x)


TRAINABLES = {"class": Counting, "function": counting_function}


def _reset() -> None:
    PEAK.update(live=0, threads=0)


def _serial(api: str, **options: Any) -> gp.Result:
    _reset()
    return gp.run(
        TRAINABLES[api],  # type: ignore[arg-type]
        gp.Space(lr=gp.Float(0.01, 0.5, log=True)),
        metric="score",
        population=POPULATION,
        ready=gp.Every(READY),
        budget=gp.Budget(steps=BUDGET),
        exploit=gp.Truncation(0.25),
        explore=gp.Perturb(),
        seed=3,
        **options,
    )


def _outcome(result: gp.Result) -> tuple[Any, ...]:
    """Scores and lineage, without checkpoint ids or times."""
    members = [
        (m.id, m.score, m.step, m.generation, m.parent, m.status, sorted(m.hparams.items()))
        for m in result.members
    ]
    events = [
        (e.kind, e.member, e.step, sorted((k, v) for k, v in e.data.items() if k != "checkpoint"))
        for e in result.events
    ]
    reports = [(r.member, r.step, r.metrics["score"]) for r in result.reports]
    return members, events, reports


@pytest.mark.parametrize("api", ["class", "function"])
def test_a_serial_worker_keeps_at_most_max_resident_sessions(api: str) -> None:
    result = _serial(api, max_resident=4)
    assert result.stop_reason == "budget"
    assert all(m.step == BUDGET for m in result.members)
    peak = PEAK["live"] if api == "class" else PEAK["threads"]
    assert peak == 4  # never more, and the bound is reached (the count sees sessions)


@pytest.mark.parametrize("api", ["class", "function"])
def test_the_bound_does_not_change_a_seeded_serial_run(api: str) -> None:
    default = _serial(api)
    peak_default = PEAK["live"] if api == "class" else PEAK["threads"]
    one = _serial(api, max_resident=1)
    peak_one = PEAK["live"] if api == "class" else PEAK["threads"]
    assert peak_default == POPULATION  # serially, every member stays resident by default
    assert peak_one == 1
    assert any(e.kind == "exploit" for e in default.events)  # lineage to compare
    assert _outcome(one) == _outcome(default)


@pytest.mark.parametrize("api", ["class", "function"])
def test_two_worker_processes_each_keep_at_most_their_share(tmp_path: Path, api: str) -> None:
    log = tmp_path / "live.txt"
    result = gp.run(
        TRAINABLES[api],  # type: ignore[arg-type]
        gp.Space(lr=gp.Float(0.01, 0.5, log=True), log=str(log)),
        metric="score",
        population=POPULATION,
        ready=gp.Every(READY),
        budget=gp.Budget(steps=2 * READY),
        exploit=None,
        seed=0,
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        executor=gp.ProcessExecutor(workers=2),
        lease_seconds=10.0,
    )
    assert result.stop_reason == "budget"
    peaks: dict[str, int] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        pid, live, threads = line.split()
        peaks[pid] = max(peaks.get(pid, 0), int(live) if api == "class" else int(threads))
    assert peaks  # the workers trained
    assert max(peaks.values()) <= POPULATION // 2, peaks  # ceil(16 / 2) each


@pytest.mark.parametrize("value", [0, -1, 1.5, "4", True])
def test_an_invalid_max_resident_is_refused(value: object) -> None:
    with pytest.raises(gp.InvalidArgumentError, match="max_resident") as info:
        _serial("class", max_resident=value)
    assert repr(value) in str(info.value)
    assert "Fix:" in str(info.value)


# -- the cache itself ------------------------------------------------------------------


def _context(store: MemoryStore, checkpoints: MemoryCheckpoints, **options: Any) -> RunContext:
    policy = Policy(
        space=gp.Space(lr=gp.Float(0.01, 0.5, log=True)),
        ready=gp.Every(READY),
        exploit=None,
        explore=None,
        budget=gp.Budget(steps=BUDGET),
    )
    clock = gp.SystemClock()
    return RunContext(
        name="run",
        trainable=counting_function,
        policy=policy,
        metric="score",
        seed=0,
        store=store,
        checkpoints=checkpoints,
        clock=clock,
        started=clock.now(),
        **options,
    )


def _one_round(worker: Worker) -> int:
    """Claim a member and train one ready round of it; return the member."""
    lease = worker._claim()
    assert lease is not None
    worker._trainer.round(lease)
    worker._flush_last()
    return lease.member


def _member_threads() -> list[str]:
    """The live member threads' names, sorted (each member's session runs in one)."""
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("genepool-member-"))


def test_the_least_recently_used_session_is_closed_first() -> None:
    store, checkpoints = MemoryStore(), MemoryCheckpoints()
    store.create_run(
        "run",
        config={"mode": "max"},
        members=[gp.MemberView(id=i, hparams={"lr": 0.1}) for i in range(4)],
    )
    worker = Worker(_context(store, checkpoints, max_resident=3))
    try:
        trained = [_one_round(worker) for _ in range(3)]
        assert trained == [0, 1, 2]
        assert worker._residents.members() == [0, 1, 2]
        worker._trainer.loader.session_for(
            store.population("run")[0]
        )  # member 0 used again: now newest
        assert worker._residents.members() == [1, 2, 0]
        assert _one_round(worker) == 3  # a fourth session closes the least recently used: 1
        assert worker._residents.members() == [2, 0, 3]
        assert _member_threads() == [f"genepool-member-{m}" for m in (0, 2, 3)]
    finally:
        worker.close()
    assert len(worker._residents) == 0
    assert not _member_threads()


def test_a_member_another_worker_trained_is_dropped() -> None:
    store, checkpoints = MemoryStore(), MemoryCheckpoints()
    store.create_run(
        "run",
        config={"mode": "max"},
        members=[gp.MemberView(id=i, hparams={"lr": 0.1}) for i in range(2)],
    )
    a = Worker(_context(store, checkpoints, idle_wait=0.01), name="a")
    b = Worker(_context(store, checkpoints, idle_wait=0.01), name="b")
    try:
        assert _one_round(a) == 0
        assert _one_round(b) == 1
        assert _one_round(b) == 0  # b takes member 0 on: a's session of it is stale
        assert 0 in a._residents
        assert _one_round(a) == 1  # a sees member 0's checkpoint moved on: it closes it
        assert a._residents.members() == [1]
        assert b._residents.members() == [1, 0]
        # a's thread of member 0 has ended; b runs both members
        assert _member_threads() == ["genepool-member-0", "genepool-member-1", "genepool-member-1"]
    finally:
        a.close()
        b.close()
    assert not _member_threads()


# -- a trainable asks for fewer: a model on a CUDA device ------------------------------


class OnePerDevice(Counting):
    """Asks its worker to keep one member resident, as a model on a GPU does."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        super().setup(hparams)
        self.member.resident_limit = 1


def test_a_trainable_that_asks_for_one_resident_gets_it_unless_the_run_says() -> None:
    _reset()
    options: dict[str, Any] = {
        "metric": "score",
        "population": POPULATION,
        "ready": gp.Every(READY),
        "budget": gp.Budget(steps=BUDGET),
        "seed": 3,
    }
    space = gp.Space(lr=gp.Float(0.01, 0.5, log=True))
    gp.run(OnePerDevice, space, **options)
    assert PEAK["live"] == 1
    _reset()
    gp.run(OnePerDevice, space, max_resident=4, **options)  # the user's bound wins
    assert PEAK["live"] == 4


def test_a_torch_state_on_a_cuda_device_asks_for_one_resident() -> None:
    torch = pytest.importorskip("torch")
    import numpy as np

    from genepool.integrations import torch as gpt

    def state(device: str | None) -> gpt.TorchState:
        return gpt.TorchState(models={"m": torch.nn.Linear(2, 1)}, device=device)

    assert state("cuda").resident_limit == 1
    assert state("cuda:0").resident_limit == 1
    assert state("cpu").resident_limit is None
    assert state(None).resident_limit is None  # parameters on the CPU

    member = gp.Member(id=0, hparams={}, rng=np.random.default_rng(0))
    assert member.resident_limit is None
    state("cuda").restore(member)  # the function API tells the member
    assert member.resident_limit == 1

    class Net(gpt.TorchTrainable):
        def build(self, hparams: Mapping[str, Any]) -> gpt.TorchState:
            return state(str(hparams["device"]))

        def step(self) -> dict[str, float]:
            return {"score": 0.0}

    for device, limit in (("cuda", 1), ("cpu", None)):
        net = Net()
        net.member = gp.Member(id=0, hparams={}, rng=np.random.default_rng(0))
        net.setup({"device": device})  # the class API tells the member
        assert net.member.resident_limit == limit


def test_on_a_gpu_a_worker_keeps_one_torch_member_on_the_device() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from genepool.integrations import torch as gpt

    width = 1024
    model_bytes = (width * width + width) * 4
    live: list[int] = []
    allocated: list[int] = []

    class OnGpu(gpt.TorchTrainable):
        def build(self, hparams: Mapping[str, Any]) -> gpt.TorchState:
            LIVE.add(self)
            model = torch.nn.Linear(width, width).to("cuda")
            return gpt.TorchState(models={"model": model}, device="cuda", rng=False)

        def step(self) -> dict[str, float]:
            model = self.state.models["model"]
            with torch.no_grad():
                score = float(model(torch.ones(1, width, device="cuda")).sum().item())
            live.append(len(LIVE))
            allocated.append(torch.cuda.memory_allocated())
            return {"score": score}

    def run(**options: Any) -> int:
        """The run's most device memory at a step, over what was held before it."""
        live.clear()
        allocated.clear()
        with torch.no_grad():  # cuBLAS's workspace, made by the first product, stays
            torch.nn.Linear(width, width).to("cuda")(torch.ones(1, width, device="cuda"))
        before = torch.cuda.memory_allocated()
        result = gp.run(
            OnGpu,
            gp.Space(lr=gp.Float(0.01, 0.5, log=True)),
            metric="score",
            population=6,
            ready=gp.Every(2),
            budget=gp.Budget(steps=6),
            seed=0,
            **options,
        )
        assert result.stop_reason == "budget"
        return int(max(allocated) - before)

    used = run()
    assert max(live) == 1
    assert used < 2 * model_bytes, (used, model_bytes)  # one model's weights at a time
    used = run(max_resident=6)  # the user's bound wins: every member on the device
    assert max(live) == 6
    assert used >= 6 * model_bytes, (used, model_bytes)
