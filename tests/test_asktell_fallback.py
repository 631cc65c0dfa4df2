"""Ask/tell falls back from a torn or missing checkpoint as the worker does
(tests/test_fallback.py): at ``ask``, to the member's previous checkpoint, else the best
other member's current one, else a fresh start, with the same ``"fallback"`` event, and
the claim says what it really starts from.

A run is trained through ask/tell until every member has two checkpoints (its current one
and, ``keep=1``, its previous one), closed, a checkpoint torn on disk (a byte of its
payload flipped: its sha256 no longer matches) or deleted, and the run resumed.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from tests._golden import _close, snapshot
from tests.test_asktell import SETTINGS, SPACE, Climb, train_round
from tests.test_fallback import checkpoint_dir, current, fallbacks, needs_trust, tear

#: The member whose checkpoint is torn; every member has trained to ``AT`` (two rounds of
#: 3 steps) when the run is closed.
MEMBER, AT = 2, 6
#: No exploits: each member's checkpoints are its own.
OPTIONS: dict[str, Any] = {**SETTINGS, "exploit": None, "seed": 3}


def url(folder: Path) -> str:
    return f"sqlite:///{folder / 'pbt.db'}"


def trained(folder: Path, **options: Any) -> gp.MemberView:
    """Train a run in ``folder`` until every member is at step ``AT``; ``MEMBER``'s view
    (member 0's in a population of one)."""
    with gp.AskTell(SPACE, **{**OPTIONS, **options}, storage=url(folder)) as pbt:
        while min(m.step for m in pbt.result().population) < AT:
            claim = pbt.ask()
            assert claim is not None
            train_round(pbt, claim)
        population = pbt.result().population
        view = population[MEMBER if len(population) > MEMBER else 0]  # 0: alone
    assert view.step == AT
    assert [p.step for p in view.previous] == [AT // 2]
    return view


def first_claims(pbt: gp.AskTell) -> dict[int, tuple[int, str | None, Any]]:
    """Train the run to its end; each member's first claim: its step, its checkpoint's id
    and the state loaded from it."""
    first: dict[int, tuple[int, str | None, Any]] = {}
    while (claim := pbt.ask()) is not None:
        if claim.member not in first:
            ckpt = claim.checkpoint
            loaded = ckpt.load() if ckpt is not None else None
            first[claim.member] = (claim.step, ckpt.id if ckpt else None, loaded)
        train_round(pbt, claim)
    return first


def test_a_torn_checkpoint_falls_back_to_the_previous_one_at_ask(tmp_path: Path) -> None:
    view = trained(tmp_path)
    torn, previous = current(view).id, view.previous[0]
    with gp.Result.open(url(tmp_path)) as before:  # the state the previous one holds
        assert before.population[MEMBER].previous[0].id == previous.id
    tear(tmp_path, torn)
    with gp.AskTell(SPACE, **OPTIONS, storage=url(tmp_path)) as pbt:
        first = first_claims(pbt)
        result = pbt.result()
        assert pbt.stop_reason == "budget"
    # the claim named the checkpoint it really started from, at its step
    step, started_from, loaded = first[MEMBER]
    assert (step, started_from) == (previous.step, previous.id)
    assert isinstance(loaded, dict)
    assert set(loaded) == {"x"}
    assert all(first[m][0] == AT for m in first if m != MEMBER)
    (event,) = fallbacks(result)
    assert event.member == MEMBER
    assert event.step == previous.step
    assert event.data["checkpoint"] == torn
    assert "torn" in event.data["reason"]
    assert (event.data["to"], event.data["fallback"]) == ("previous", previous.id)
    assert event.data["unreadable"] == [torn]
    assert all(m.status == "finished" and m.step == 24 for m in result.population)
    assert not checkpoint_dir(tmp_path, torn).exists()  # the torn one is deleted
    assert result.lineage(MEMBER)  # the analysis reads the run as any other


def test_a_missing_checkpoint_falls_back_too(tmp_path: Path) -> None:
    view = trained(tmp_path)
    shutil.rmtree(checkpoint_dir(tmp_path, current(view).id))
    with gp.AskTell(SPACE, **OPTIONS, storage=url(tmp_path)) as pbt:
        first = first_claims(pbt)
        (event,) = fallbacks(pbt.result())
    assert first[MEMBER][:2] == (view.previous[0].step, view.previous[0].id)
    assert (event.data["to"], event.data["fallback"]) == ("previous", view.previous[0].id)


def normalised(result: gp.Result, folder: Path) -> dict[str, Any]:
    """The run's snapshot, with its folder left out of the fallback's reason and the
    checkpoints named by member and step (those written after the copy differ in id)."""
    plain = snapshot(result, "score")
    text = json.dumps(plain).replace(str(folder), "<folder>")
    loaded: dict[str, Any] = json.loads(re.sub(r"(run/m\d+/s\d+)-[0-9a-f]+", r"\1", text))
    return loaded


@pytest.mark.parametrize(
    ("population", "tears", "to"),
    [(6, 1, "previous"), (6, 2, "donor"), (1, 2, "fresh")],
    ids=["previous", "donor", "fresh"],
)
def test_the_fallback_and_the_run_after_it_are_the_workers(
    tmp_path: Path, population: int, tears: int, to: str
) -> None:
    """The same torn checkpoints, resumed by gp.run and by ask/tell: the same fallback
    event, and the same lineage and scores after it."""
    worker, asktell = tmp_path / "worker", tmp_path / "asktell"
    worker.mkdir()
    view = trained(worker, population=population)
    shutil.copytree(worker, asktell)
    for folder in (worker, asktell):
        for checkpoint in (current(view), *view.previous)[:tears]:
            tear(folder, checkpoint.id)
    options = {**OPTIONS, "population": population}
    ran = gp.run(Climb, SPACE, **options, storage=url(worker))
    with gp.AskTell(SPACE, **options, storage=url(asktell)) as pbt:
        first = first_claims(pbt)
        told = pbt.result()
    (event,) = fallbacks(told)
    assert event.data["to"] == to
    assert first[view.id][:2] == (event.step, event.data["fallback"])
    if to == "fresh":
        assert first[view.id] == (0, None, None)
    expected, got = normalised(ran, worker), normalised(told, asktell)
    assert [e for e in expected["events"] if e["kind"] == "fallback"] == [
        e for e in got["events"] if e["kind"] == "fallback"
    ]
    assert not _close(expected, got, "run", 1e-12)


def test_a_checkpoint_that_needs_trust_raises_at_ask_and_is_given_back(tmp_path: Path) -> None:
    view = trained(tmp_path)
    needs_trust(checkpoint_dir(tmp_path, current(view).id))
    with gp.AskTell(SPACE, **OPTIONS, storage=url(tmp_path)) as pbt:
        held = [pbt.ask() for _ in range(MEMBER)]  # the members claimed before it
        assert [c.member for c in held if c is not None] == list(range(MEMBER))
        for _ in range(2):  # given back each time: the next ask claims it again
            with pytest.raises(gp.CheckpointError, match="trust"):
                pbt.ask()
        result = pbt.result()
        assert fallbacks(result) == []
        assert result.population[MEMBER].checkpoint == view.checkpoint
