"""Small real runs for the report tests (serial, in memory, seconds at most)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import genepool as gp
from genepool.store import WorkerInfo

#: A hyperparameter name, run names and category values that would be markup if unescaped.
HOSTILE_HP = "<script>alert(1)</script>"
#: Any store takes this run name; a checkpoint directory does not (``"<>`` are refused).
HOSTILE_RUN = "run \"quoted\" 'single' & <b>bold</b> \u0394\u2603 </script><!--"
#: A run name that ``gp.run`` takes (checkpoint stores refuse ``/ \\ : * ? " < > |``).
RUNNABLE_RUN = "run 'single' & \u0394\u2603 &amp; &lt;p"
HOSTILE_OPTIONS = ("<img src=x onerror=alert(2)>", 'say "hi" & <i>bye</i>')


class Climb(gp.Trainable):
    """Climbs towards 1 at a rate set by its hyperparameters; fails once if asked to."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x = 0.0
        self.apply_hparams(hparams)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.hp = dict(hparams)

    def step(self) -> dict[str, float]:
        rate = float(self.hp["lr"])
        for name, value in self.hp.items():
            if isinstance(value, str) and name != "lr":
                rate *= 1.0 + 0.1 * (len(value) % 3)
            elif isinstance(value, bool):
                rate *= 1.1 if value else 1.0
        self.x += rate * (1.0 - self.x)
        return {"score": self.x}

    def save(self) -> dict[str, float]:
        return {"x": self.x}

    def load(self, state: Mapping[str, Any]) -> None:
        self.x = float(state["x"])


class Fails(Climb):
    """A member with ``fail=True`` reports NaN at its 7th step in a process (a failed round)."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        super().setup(hparams)
        self.n = 0

    def step(self) -> dict[str, float]:
        out = super().step()
        self.n += 1
        if self.n == 7 and self.hp.get("fail"):
            return {"score": math.nan}
        return out


def failing_run() -> gp.Result:
    """Some members fail a round (NaN score): failure events, scores with holes."""
    space = gp.Space(lr=gp.Float(0.01, 0.3), fail=gp.Choice([True, False]))
    return gp.run(
        Fails,
        space,
        metric="score",
        population=4,
        ready=gp.Every(5),
        budget=gp.Budget(steps=20),
        seed=2,
    )


def small_run(*, population: int = 6, steps: int = 40, seed: int = 0) -> gp.Result:
    """A plain run: a log-scale learning rate, an optimizer name and a flag."""
    space = gp.Space(
        lr=gp.Float(0.01, 0.3, log=True),
        optimizer=gp.Choice(["sgd", "adam", "rmsprop"]),
        nesterov=gp.Choice([True, False]),
        width=gp.Int(8, 64),
        tag="fixed",
    )
    return gp.run(
        Climb,
        space,
        metric="score",
        population=population,
        ready=gp.Every(5),
        budget=gp.Budget(steps=steps),
        exploit=gp.Truncation(0.3),
        explore=gp.Perturb(resample=0.3),
        seed=seed,
    )


def hostile_run() -> gp.Result:
    """Names and values that are HTML, quotes and unicode."""
    space = gp.Space(
        {
            HOSTILE_HP: gp.Float(0.01, 0.3),
            "lr": gp.Float(0.01, 0.3, log=True),
            "opt \"'&<>": gp.Choice(list(HOSTILE_OPTIONS)),
        }
    )
    return gp.run(
        Climb,
        space,
        metric="score",
        population=4,
        ready=gp.Every(5),
        budget=gp.Budget(steps=30),
        exploit=gp.Truncation(0.3),
        explore=gp.Perturb(resample=0.5),
        seed=1,
        name=RUNNABLE_RUN,
    )


def synthetic_result(name: str = HOSTILE_RUN) -> gp.Result:
    """A run written straight through the store API, under any name: three members with
    hostile hyperparameter names and values; member 2 copies member 0 at step 4 and
    explores; member 1 explores at step 4 and is copied by member 0 at step 8."""
    space = gp.Space(
        {HOSTILE_HP: gp.Float(0.1, 1.0, log=True), "opt": gp.Choice(list(HOSTILE_OPTIONS))}
    )
    store = gp.MemoryStore()
    start = [
        {HOSTILE_HP: 0.5, "opt": HOSTILE_OPTIONS[0]},
        {HOSTILE_HP: 0.2, "opt": HOSTILE_OPTIONS[1]},
        {HOSTILE_HP: 0.1, "opt": HOSTILE_OPTIONS[0]},
    ]
    config = {"metric": "score", "mode": "max", "seed": 7, "space": repr(space)}
    store.create_run(
        name, config=config, members=[gp.MemberView(id=i, hparams=h) for i, h in enumerate(start)]
    )
    worker = WorkerInfo("test")
    hp = [dict(h) for h in start]
    score = [0.0, 0.0, 0.0]
    rate = [0.3, 0.2, 0.1]
    clock = 0.0

    def commit(member: int, steps: range, event: gp.Event | None, **changes: Any) -> None:
        nonlocal clock
        lease = store.claim(name, worker, lease_seconds=60.0)
        while lease is not None and lease.member != member:
            held.append(lease)
            lease = store.claim(name, worker, lease_seconds=60.0)
        assert lease is not None
        reports = []
        for s in steps:
            clock += 1.0
            score[member] += rate[member] * (1.0 - score[member])
            reports.append(gp.Report(member, s, {"score": score[member]}, clock))
        view = store.population(name)[member]
        last = steps[-1] if len(steps) else view.step
        ckpt = gp.CheckpointRef(f"c{member}-{last}", member, last, last, score[member], hp[member])
        new = dataclasses.replace(
            view,
            hparams=dict(hp[member]),
            step=last,
            checkpoint=ckpt,
            score=score[member],
            **changes,
        )
        store.commit(
            lease, member=new, reports=reports, events=[event] if event else [], release=True
        )
        for other in held:
            store.commit(other, release=True)
        held.clear()

    held: list[Any] = []
    for m in range(3):
        commit(m, range(1, 5), None)
    # member 2 copies member 0 at step 4, with an explored value
    old, hp[2] = hp[2], {**hp[0], HOSTILE_HP: 0.6}
    score[2], rate[2] = score[0], 0.35
    exploit = {
        "donor": 0,
        "donor_step": 4,
        "old_step": 4,
        "old_hparams": old,
        "new_hparams": dict(hp[2]),
        "generation": 1,
    }
    clock += 0.5
    commit(2, range(5, 9), gp.Event("exploit", 2, 4, exploit, clock), generation=1, parent=0)
    # member 1 explores at step 4
    old, hp[1] = hp[1], {**hp[1], "opt": HOSTILE_OPTIONS[0]}
    clock += 0.5
    explore = {"old_hparams": old, "new_hparams": dict(hp[1])}
    commit(1, range(5, 9), gp.Event("explore", 1, 4, explore, clock))
    commit(0, range(5, 9), None)
    # member 0 copies member 2 at step 8
    old, hp[0] = hp[0], {**hp[2], HOSTILE_HP: 0.7}
    score[0], rate[0] = score[2], 0.4
    exploit = {
        "donor": 2,
        "donor_step": 8,
        "old_step": 8,
        "old_hparams": old,
        "new_hparams": dict(hp[0]),
        "generation": 1,
    }
    clock += 0.5
    commit(0, range(9, 13), gp.Event("exploit", 0, 8, exploit, clock), generation=1, parent=2)
    commit(1, range(9, 13), None)
    commit(2, range(9, 13), None)
    return gp.Result(
        name=name,
        seed=7,
        metric="score",
        stop_reason="budget",
        store=store,
        checkpoints=gp.MemoryCheckpoints(),
    )
