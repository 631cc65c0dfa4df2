"""Retention in a checkpoint folder without an owner marker (written before markers, and
not the run's: left unmarked): every member's current checkpoint and the previous ones it
keeps stay on disk, readable, and so do the old run's checkpoints, also once the old run
resumes, adopts the folder and collects its own orphans.

A regression test for a misread failure: the run of seed 5 below exploits, after which
two members keep the same previous checkpoint; an expectation built as a list of every
member's checkpoints names it twice, and looks as if one were missing on disk.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import genepool as gp
from genepool.checkpoints import OWNER_FILE, LocalCheckpoints
from tests.test_ownership import DATA, ORPHAN, run


def held(result: gp.Result) -> set[str]:
    """The checkpoints the run's members hold: current and kept previous ones."""
    return {r.id for m in result.population for r in (m.checkpoint, *m.previous) if r is not None}


@pytest.mark.parametrize("keep", [1, 2])
def test_an_unmarked_folder_keeps_every_members_previous_checkpoints(tmp_path: Path, keep: int):
    shutil.copytree(DATA, tmp_path, dirs_exist_ok=True)
    folder = tmp_path / "old.db.checkpoints"
    legacy = set(LocalCheckpoints(folder).ids("old"))
    other = f"sqlite:///{tmp_path / 'other.db'}"

    result = run(storage=other, name="old", checkpoints=folder, seed=5, keep=keep)
    assert not (folder / "old" / OWNER_FILE).exists()  # left unmarked
    assert all(m.previous for m in result.population)  # (a run of 4 steps: one each)
    ours = held(result)
    assert set(LocalCheckpoints(folder).ids("old")) == legacy | ours
    store = LocalCheckpoints(folder, read_only=True)
    for checkpoint_id in ours:
        store.get(checkpoint_id)  # whole: a member could fall back to it

    # the old run adopts the folder and deletes its own orphan, nothing of the other's
    old = f"sqlite:///{tmp_path / 'old.db'}"
    result_old = run(storage=old, name="old", keep=keep)
    remaining = set(LocalCheckpoints(folder).ids("old"))
    assert ORPHAN not in remaining
    assert ours | held(result_old) <= remaining
