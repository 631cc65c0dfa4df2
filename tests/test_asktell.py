"""Ask/tell (genepool.asktell): the same PBT as gp.run, with the caller training."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import genepool as gp
import genepool.asktell
from genepool.decision import Continue, Exploit
from tests._golden import _close, snapshot

SPACE = gp.Space(lr=gp.Float(0.01, 0.2, log=True), noise=gp.Float(0.0, 0.5))
SETTINGS: dict[str, Any] = {
    "metric": "score",
    "population": 6,
    "ready": gp.Every(3),
    "budget": gp.Budget(steps=24),
    "exploit": gp.Truncation(0.34),
    "explore": gp.Perturb(),
}


def climb(x: float, hparams: Mapping[str, Any], rng: np.random.Generator) -> float:
    """One step of a noisy climb towards 1: the same for both drivers."""
    step = float(hparams["lr"]) * (1.0 - x)
    return x + step + float(hparams["noise"]) * 0.01 * float(rng.normal())


class Climb(gp.Trainable):
    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x, self.hp = 0.0, dict(hparams)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.hp = dict(hparams)

    def step(self) -> dict[str, float]:
        self.x = climb(self.x, self.hp, self.member.rng)
        return {"score": self.x}

    def save(self) -> dict[str, float]:
        return {"x": self.x}

    def load(self, state: Mapping[str, Any]) -> None:
        self.x = state["x"]


def train_round(pbt: gp.AskTell, claim: gp.asktell.Claim) -> Any:
    """The caller's training of one claim: from its checkpoint, until ready; the decision."""
    with claim:
        x = claim.checkpoint.load()["x"] if claim.checkpoint else 0.0
        while not claim.ready:
            x = climb(x, claim.hparams, claim.rng)
            claim.report(score=x)
        return pbt.tell(claim, state={"x": x})


def train(pbt: gp.AskTell) -> list[Any]:
    """The caller's loop; the decisions it was told."""
    decisions = []
    while (claim := pbt.ask()) is not None:
        decisions.append(train_round(pbt, claim))
    return decisions


@pytest.mark.parametrize("synchronous", [False, True])
def test_an_ask_tell_run_makes_the_lineage_and_scores_of_gp_run(synchronous: bool) -> None:
    settings = {**SETTINGS, "seed": 7, "synchronous": synchronous}
    ran = gp.run(Climb, SPACE, **settings)
    with gp.AskTell(SPACE, **settings) as pbt:
        decisions = train(pbt)
        told = pbt.result()
    assert pbt.stop_reason == ran.stop_reason == "budget"
    expected, got = snapshot(ran, "score"), snapshot(told, "score")
    assert sum(e["kind"] == "exploit" for e in expected["events"]) >= 3
    assert not _close(expected, got, "run", 1e-12)
    if not synchronous:  # a synchronous round decides later: told Continue()
        exploits = sum(isinstance(d, Exploit) for d in decisions)
        assert exploits == sum(e["kind"] == "exploit" for e in expected["events"])


def test_after_an_exploit_the_next_claim_starts_from_the_donors_checkpoint(
    tmp_path: Path,
) -> None:
    told: dict[int, tuple[Any, int]] = {}  # member: its last decision, its generation then
    seen = 0
    with gp.AskTell(SPACE, **SETTINGS, seed=1, storage=f"sqlite:///{tmp_path}/pbt.db") as pbt:
        while (claim := pbt.ask()) is not None:
            with claim:
                last = told.get(claim.member)
                if last is not None and isinstance(last[0], Exploit):
                    decision, generation = last
                    seen += 1
                    assert claim.checkpoint is not None
                    assert claim.checkpoint.member == decision.donor
                    assert claim.checkpoint.id == decision.checkpoint.id
                    assert dict(claim.hparams) == dict(decision.hparams)
                    assert claim.generation == generation + 1
                if claim.checkpoint is not None:  # a local folder: its path is given
                    assert claim.checkpoint.path is not None
                    assert Path(claim.checkpoint.path).is_dir()
                x = claim.checkpoint.load()["x"] if claim.checkpoint else 0.0
                while not claim.ready:
                    x = climb(x, claim.hparams, claim.rng)
                    claim.report(score=x)
                told[claim.member] = (pbt.tell(claim, state=lambda x=x: {"x": x}), claim.generation)
        assert seen >= 2
        assert all(m.step == 24 for m in pbt.result().population)
    with gp.AskTell(SPACE, **SETTINGS) as pbt:  # in memory: no path
        claim = pbt.ask()
        assert claim is not None
        with claim:
            while not claim.ready:
                claim.report(score=0.5)
            pbt.tell(claim, state={"x": 0.5})
        again = pbt.ask()
        while again is not None and again.checkpoint is None:
            again = pbt.ask()
        assert again is not None
        assert again.checkpoint is not None
        assert again.checkpoint.path is None


def test_a_claim_whose_lease_was_lost_records_nothing() -> None:
    clock = gp.ManualClock()
    store = gp.MemoryStore(clock=clock)
    settings = {**SETTINGS, "storage": store, "clock": clock, "lease_seconds": 5.0, "seed": 0}
    first, second = gp.AskTell(SPACE, **settings), gp.AskTell(SPACE, **settings)
    claim = first.ask()
    assert claim is not None
    claim.report(score=0.1)
    clock.advance(10.0)  # its lease runs out (no `with`: nothing renews it)
    taken = [second.ask() for _ in range(SETTINGS["population"])]
    assert claim.member in [c.member for c in taken if c is not None]
    before = len(store.history("run").reports)
    with pytest.raises(gp.StaleLeaseError, match=f"member {claim.member}"):
        first.tell(claim, state={"x": 0.1})
    assert len(store.history("run").reports) == before


def test_ask_returns_none_at_a_synchronous_barrier_and_waits_with_a_timeout() -> None:
    with gp.AskTell(SPACE, **{**SETTINGS, "population": 2, "synchronous": True}) as pbt:
        a = pbt.ask()
        assert a is not None
        b = pbt.ask()
        assert b is not None
        assert b.member != a.member
        for claim in (a,):
            while not claim.ready:
                claim.report(score=0.5)
            assert pbt.tell(claim, state={"x": 0.5}) == Continue()
        assert pbt.ask() is None  # a waits at the barrier, b is held by this caller
        assert pbt.ask(timeout=0.2) is None
        while not b.ready:
            b.report(score=0.4)
        pbt.tell(b, state={"x": 0.4})
        assert pbt.ask() is not None  # past the barrier


def test_a_claim_left_without_tell_goes_back_untouched() -> None:
    with gp.AskTell(SPACE, **SETTINGS) as pbt:
        claim = pbt.ask()
        assert claim is not None
        with claim:
            claim.report(score=0.3)
        view = pbt.result().population[claim.member]
        assert view.step == 0
        assert view.checkpoint is None
        again = [pbt.ask() for _ in range(SETTINGS["population"])]
        assert claim.member in [c.member for c in again if c is not None]


def test_wrong_uses_get_clear_answers() -> None:
    with pytest.raises(gp.InvalidArgumentError, match="'trainable'"):
        gp.AskTell(SPACE, **SETTINGS, trainable=Climb)
    with pytest.raises(gp.InvalidArgumentError, match="did you mean 'population'"):
        gp.AskTell(SPACE, **SETTINGS, populaton=3)
    with pytest.raises(gp.InvalidArgumentError, match="'metric'"):
        gp.AskTell(SPACE, ready=gp.Every(3), budget=gp.Budget(steps=3))
    with pytest.raises(gp.InvalidArgumentError, match="'lease_seconds'"):
        gp.AskTell(SPACE, **SETTINGS, lease_seconds=0)
    with gp.AskTell(SPACE, **SETTINGS) as pbt:
        claim = pbt.ask()
        assert claim is not None
        with pytest.raises(gp.TrainableError, match="'score'"):
            claim.report(loss=1.0)
        pbt.tell(claim, state={"x": 0.0}, metrics=[{"score": 0.1}])
        with pytest.raises(gp.InvalidArgumentError, match="told once"):
            pbt.tell(claim, state={"x": 0.0})


def _caller(url: str, seed: int, out: Any, both_hold: Any) -> None:
    with gp.AskTell(SPACE, **SETTINGS, seed=seed, storage=url) as pbt:
        first = pbt.ask(timeout=60)
        assert first is not None
        both_hold.wait(60)  # neither trains on before the other holds a claim
        out.put(len(train_waiting(pbt, first=first)))


def train_waiting(pbt: gp.AskTell, *, first: Any = None) -> list[Any]:
    """The caller's loop, waiting for members held by the other caller."""
    decisions = [] if first is None else [train_round(pbt, first)]
    while pbt.stop_reason is None:
        claim = pbt.ask(timeout=0.5)
        if claim is not None:
            decisions.append(train_round(pbt, claim))
    return decisions


def test_two_processes_ask_and_tell_one_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/pbt.db"
    gp.AskTell(SPACE, **SETTINGS, seed=5, storage=url).close()  # created once
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    both_hold = ctx.Barrier(2)
    procs = [ctx.Process(target=_caller, args=(url, 5, out, both_hold)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rounds = [out.get(timeout=5) for _ in procs]
    assert all(r > 0 for r in rounds)  # both trained
    result = gp.Result.open(url)
    assert all(m.step == 24 and m.status == "finished" for m in result.population)
    exploits = [e for e in result.events if e.kind == "exploit"]
    assert exploits
    assert all(e.data["donor"] != e.member for e in exploits)
    assert sum(rounds) == sum(m.ready_count for m in result.population)


def _open_files() -> int:
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def test_the_result_after_close_owns_the_store_it_reopens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/pbt.db"
    with gp.AskTell(SPACE, **SETTINGS, seed=3, storage=url) as pbt:
        train(pbt)
        during = pbt.result()
        assert during.reports  # read while the ask/tell is open
    before = _open_files()
    after = pbt.result()  # the store ask/tell opened is closed: reading reopens it
    assert len(after.reports) == len(during.reports) > 0
    assert after.best.step == 24
    after.close()  # and closes it again
    assert _open_files() == before


def test_open_claims_share_one_heartbeat_thread_that_keeps_their_leases(tmp_path: Path) -> None:
    """Twenty claims open at once: one thread renews all their leases (a thread each would
    not scale to a vectorised population); while they are open nobody else gets one."""
    storage = f"sqlite:///{tmp_path}/pbt.db"
    settings = {**SETTINGS, "population": 20, "storage": storage, "lease_seconds": 0.3}
    before = threading.active_count()
    with gp.AskTell(SPACE, **settings) as mine, gp.AskTell(SPACE, **settings) as theirs:
        asked = [mine.ask() for _ in range(20)]
        claims = [claim for claim in asked if claim is not None]
        assert len(claims) == 20
        with contextlib.ExitStack() as open_claims:
            for claim in claims:
                open_claims.enter_context(claim)
            assert threading.active_count() <= before + 1
            for _ in range(10):  # 1 s: more than three leases long
                time.sleep(0.1)
                for claim in claims:
                    claim._beat.progress()
                assert theirs.ask() is None  # every lease renewed meanwhile
            for claim in claims:
                while not claim.ready:
                    claim.report(score=1.0)
                mine.tell(claim, state={"x": 1.0})
    assert threading.active_count() <= before
