"""checkpoint_every: durable checkpoints every few rounds, resident ones between; the same
run, fewer writes; a run killed between resumes from the durable ones, each member rolled
back to its last, and ends as the run that was not killed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import genepool as gp
from genepool import vectorised as gpv
from genepool.analysis._lineage import event_index
from genepool.checkpoints import LocalCheckpoints

from .test_population import final_models, settings

ROOT = Path(__file__).resolve().parents[2]


def test_fewer_durable_checkpoints_make_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[tuple[int, int]] = []
    put = LocalCheckpoints.put

    def counted(self: LocalCheckpoints, run: str, member: int, step: int, *a: Any, **k: Any) -> str:
        writes.append((member, step))
        return put(self, run, member, step, *a, **k)

    monkeypatch.setattr(LocalCheckpoints, "put", counted)
    runs = {}
    for every in (1, 3):
        writes.clear()
        runs[every] = gpv.run(
            **settings(storage=f"sqlite:///{tmp_path}/every{every}.db", checkpoint_every=every)
        )
        runs[every].durable_writes = sorted(writes)  # type: ignore[attr-defined]
    one, three = runs[1], runs[3]
    assert [(r.member, r.step, r.metrics) for r in one.reports] == [
        (r.member, r.step, r.metrics) for r in three.reports
    ]
    assert [(e.kind, e.member, e.step, e.data.get("donor")) for e in one.events] == [
        (e.kind, e.member, e.step, e.data.get("donor")) for e in three.events
    ]
    assert any(e.kind == "exploit" for e in one.events)
    a, b = final_models(one), final_models(three)  # durable at the last round: they load
    assert all(torch.equal(a[m][k], b[m][k]) for m in a for k in a[m])
    # 12 steps, ready every 3: 4 rounds; durable at rounds 3 and 4 (the budget's end)
    assert three.durable_writes == sorted((m, s) for m in range(4) for s in (9, 12))  # type: ignore[attr-defined]
    assert len(one.durable_writes) == 16  # type: ignore[attr-defined]


KILLED = """
import os, sys
import genepool as gp
from genepool import vectorised as gpv
from tests.vectorised.test_population import data, settings

calls = []

def dying(generator, member):
    calls.append(member)
    if len(calls) == int(sys.argv[2]):
        os._exit(3)  # a kill: nothing after it runs
    return data(generator, member)

gpv.run(**settings(data=dying, storage=sys.argv[1], checkpoint_every=3,
                   budget=gp.Budget(steps=24), exploit=gp.Truncation(0.5)))
"""


def test_a_killed_run_resumes_from_its_durable_checkpoints(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/pbt.db"
    # 4 members, ready every 3 steps: rounds 3 and 6 durable (steps 9, 18), round 7
    # resident (step 21); killed at the second step of round 8
    at = 4 * 22 + 2
    killed = subprocess.run(
        [sys.executable, "-c", KILLED, storage, str(at)], cwd=ROOT, capture_output=True, text=True
    )
    assert killed.returncode == 3, killed.stderr
    before = gp.Result.open(storage)
    at_kill = {m.id: m for m in before.population}
    assert {m.step for m in at_kill.values()} == {21}
    undone = [e for e in before.events if e.kind == "exploit" and e.step >= 18]
    before.close()

    result = gpv.run(
        **settings(storage=storage, checkpoint_every=3, budget=gp.Budget(steps=24),
                   exploit=gp.Truncation(0.5))
    )  # fmt: skip
    assert result.stop_reason == "budget"
    assert {m.step for m in result.members} == {24}
    fallbacks = [e for e in result.events if e.kind == "fallback"]
    assert sorted(e.member for e in fallbacks) == [0, 1, 2, 3]  # each lost round 7
    checkpoints = LocalCheckpoints(tmp_path / "pbt.db.checkpoints")
    kinds = set()
    for e in fallbacks:
        assert e.data["to"] == "previous"
        assert e.step == 18  # its last durable checkpoint
        owner = int(e.data["fallback"].split("/")[1][1:])
        if owner == e.member:  # its own: as its manifest says
            fields = checkpoints.manifest(e.data["fallback"])["fields"]
            expected = (fields["generation"], fields["hparams"])
        else:  # a donor's it had copied: as the exploit that copied it says
            copy = [
                x for x in result.events
                if x.kind == "exploit" and x.member == e.member
                and x.data["checkpoint"] == e.data["fallback"]
            ][-1]  # fmt: skip
            expected = (copy.data["generation"], copy.data["new_hparams"])
        assert (e.data["generation"], e.data["hparams"]) == expected
        kinds.add(owner == e.member)
    assert kinds == {True, False}  # both kinds of rollback happened
    # the exploits the rollback undid no longer count in anyone's line
    assert undone, "no exploit between the durable round and the kill: nothing to undo"
    standing = event_index(result.events)
    for m in result.members:
        exploits = [i for i in standing.get(m.id, []) if result.events[i].kind == "exploit"]
        assert len(exploits) == m.generation
        result.lineage(m.id)  # walks back without error
    # and the rounds redone are those lost: the run ends as if it had not been killed
    straight = gpv.run(
        **settings(storage=f"sqlite:///{tmp_path}/straight.db", checkpoint_every=3,
                   budget=gp.Budget(steps=24), exploit=gp.Truncation(0.5))
    )  # fmt: skip
    a, b = final_models(result), final_models(straight)
    assert all(torch.equal(a[m][k], b[m][k]) for m in a for k in a[m])

    def changes(run: gp.Result) -> list[tuple[Any, ...]]:
        kept = sorted(i for indices in event_index(run.events).values() for i in indices)
        return [(run.events[i].kind, run.events[i].member, run.events[i].step) for i in kept]

    assert changes(result) == changes(straight)
    assert [(m.generation, m.parent, m.score) for m in result.members] == [
        (m.generation, m.parent, m.score) for m in straight.members
    ]
