"""A torn or missing checkpoint never costs a member: it falls back to its previous
checkpoint, else the best other member's current one, else a fresh start, with a
``"fallback"`` event, and the run goes on (serial and worker processes).

The runs are durable (SQLite in a temporary directory, as in tests/test_resume.py); a run
is interrupted from inside the trainable, then a byte of a member's checkpoint is flipped
on disk (its sha256 no longer matches: the checkpoint is torn) and the run resumed.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from genepool.checkpoints import MANIFEST_FILE, PAYLOAD_FILE
from genepool.member import CheckpointRef
from tests.executors import _trainables as M
from tests.test_resume import SPREAD, interrupt_at, run

#: The member whose checkpoint is torn, and the step its run is interrupted at.
MEMBER, AT = 2, 10
OPTIONS: dict[str, Any] = {"budget": gp.Budget(steps=16), "exploit": None}


def checkpoint_dir(tmp_path: Path, checkpoint_id: str) -> Path:
    return tmp_path / "pbt.db.checkpoints" / checkpoint_id


def tear(tmp_path: Path, checkpoint_id: str) -> None:
    """Flip one byte in the middle of a checkpoint's payload."""
    payload = checkpoint_dir(tmp_path, checkpoint_id) / PAYLOAD_FILE
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0xFF
    payload.write_bytes(bytes(data))


def interrupted(tmp_path: Path, **options: Any) -> gp.MemberView:
    """Run until member ``MEMBER`` trains step ``AT``, and return its view then."""
    interrupt_at(tmp_path, MEMBER, AT)
    first = run(tmp_path, **{**OPTIONS, **options})
    assert first.stop_reason == "interrupted"
    view = first.population[MEMBER]
    assert view.checkpoint is not None
    return view


def current(view: gp.MemberView) -> CheckpointRef:
    """The member's current checkpoint (it has one)."""
    assert view.checkpoint is not None
    return view.checkpoint


def fallbacks(result: gp.Result) -> list[gp.Event]:
    return [e for e in result.events if e.kind == "fallback"]


def test_a_torn_current_checkpoint_falls_back_to_the_previous_one(tmp_path: Path):
    view = interrupted(tmp_path)
    # an interrupted member checkpoints where it stopped; keep=1 by default
    assert (current(view).step, [p.step for p in view.previous]) == (AT, [8])
    torn = current(view).id
    tear(tmp_path, torn)
    result = run(tmp_path, **OPTIONS)
    assert result.stop_reason == "budget"
    assert all(m.status == "finished" and m.step == 16 for m in result.members)
    (event,) = fallbacks(result)
    assert event.member == MEMBER
    assert event.data["checkpoint"] == torn
    assert "torn" in event.data["reason"]
    assert event.data["to"] == "previous"
    assert event.data["fallback"] == view.previous[0].id
    assert event.step == 8  # it went on from step 8, its previous checkpoint
    assert not checkpoint_dir(tmp_path, torn).exists()  # the torn one is deleted


def test_a_missing_checkpoint_falls_back_too(tmp_path: Path):
    view = interrupted(tmp_path)
    shutil.rmtree(checkpoint_dir(tmp_path, current(view).id))
    result = run(tmp_path, **OPTIONS)
    assert result.stop_reason == "budget"
    (event,) = fallbacks(result)
    assert (event.data["to"], event.data["fallback"]) == ("previous", view.previous[0].id)


def test_with_current_and_previous_torn_it_takes_the_best_donor(tmp_path: Path):
    view = interrupted(tmp_path, initial=SPREAD)
    tear(tmp_path, current(view).id)
    tear(tmp_path, view.previous[0].id)
    result = run(tmp_path, **OPTIONS, initial=SPREAD)
    assert result.stop_reason == "budget"
    assert result.population[MEMBER].status == "finished"
    (event,) = fallbacks(result)
    assert event.data["to"] == "donor"
    donor = result.population[MEMBER].parent
    assert donor is not None
    assert donor != MEMBER
    assert event.data["fallback"].split("/")[-2] == f"m{donor}"  # the donor's checkpoint
    assert set(event.data["unreadable"]) == {current(view).id, view.previous[0].id}


def test_with_nothing_to_fall_back_to_it_starts_afresh(tmp_path: Path):
    interrupt_at(tmp_path, 0, 6)
    options = {**OPTIONS, "population": 1}
    first = run(tmp_path, **options)
    assert first.stop_reason == "interrupted"
    view = first.population[0]
    assert view.checkpoint is not None
    for checkpoint in (current(view), *view.previous):  # all it has
        tear(tmp_path, checkpoint.id)
    M.mark(str(tmp_path / "log.txt"))
    result = run(tmp_path, **options)
    assert result.stop_reason == "budget"
    assert result.population[0].step == 16
    (event,) = fallbacks(result)
    assert (event.data["to"], event.data["fallback"], event.step) == ("fresh", None, 0)
    lines = M.after_mark(M.read_log(str(tmp_path / "log.txt")))
    starts = [step for kind, _, step, _ in lines if kind == "start"]
    assert starts[0] == 0  # trained again from scratch


def needs_trust(folder: Path) -> None:
    """Make the checkpoint in ``folder`` a payload in genepool's first format (a pickle),
    its manifest matching: refused without trust, not torn."""
    path = folder / PAYLOAD_FILE
    blob = pickle.dumps((1, {"state": {}, "rng": None}))
    path.write_bytes(blob)
    manifest = folder / MANIFEST_FILE
    record = json.loads(manifest.read_text(encoding="utf-8"))
    record["payload"].update(size=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    manifest.write_text(json.dumps(record), encoding="utf-8")


def test_a_checkpoint_that_needs_trust_still_stops_the_run(tmp_path: Path):
    view = interrupted(tmp_path)
    needs_trust(checkpoint_dir(tmp_path, current(view).id))
    with pytest.raises(gp.CheckpointError, match="trust"):
        run(tmp_path, **OPTIONS)


def test_two_worker_processes_do_not_fail_the_member(tmp_path: Path):
    view = interrupted(tmp_path)
    tear(tmp_path, current(view).id)
    result = run(tmp_path, **OPTIONS, workers=2)
    assert result.stop_reason == "budget"
    assert all(m.status == "finished" and m.step == 16 for m in result.members)
    (event,) = fallbacks(result)
    assert (event.member, event.data["to"]) == (MEMBER, "previous")
    assert [e for e in result.events if e.kind == "failure"] == []
