"""Resident checkpoints: in this process's memory, in front of a durable store; missing
to any other reader, and deleted as any id gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from genepool._errors import CheckpointError
from genepool.checkpoints import LocalCheckpoints
from genepool.checkpoints._resident import ResidentCheckpoints


def test_a_resident_checkpoint_reads_here_and_is_missing_elsewhere(tmp_path: Path) -> None:
    tier = ResidentCheckpoints(LocalCheckpoints(tmp_path))
    rid = tier.put_resident("run", 2, 30, b"weights", manifest={"generation": 1})
    did = tier.put("run", 2, 30, b"durable", manifest={"generation": 1})
    assert tier.is_resident(rid)
    assert not tier.is_resident(did)
    assert tier.get(rid) == b"weights"
    assert tier.get(did) == b"durable"
    assert tier.manifest(rid)["fields"] == {"generation": 1}
    assert tier.manifest(rid)["member"] == 2
    assert tier.ids("run") == [did]  # listed: the durable ones only
    other = LocalCheckpoints(tmp_path)  # another process, or this one restarted
    with pytest.raises(CheckpointError, match="No checkpoint"):
        other.get(rid)
    other.delete(rid)  # a no-op, as for any id gone
    other.discard(rid)
    assert other.get(did) == b"durable"


@pytest.mark.parametrize("how", ["delete", "discard"])
def test_deleting_a_resident_checkpoint_frees_it(tmp_path: Path, how: str) -> None:
    tier = ResidentCheckpoints(LocalCheckpoints(tmp_path))
    rid = tier.put_resident("run", 0, 3, b"x")
    getattr(tier, how)(rid)
    assert not tier.is_resident(rid)
    with pytest.raises(CheckpointError, match="No checkpoint"):
        tier.get(rid)
    did = tier.put("run", 0, 3, b"y")
    getattr(tier, how)(did)
    assert tier.ids("run") == []


def test_its_repr_counts_what_it_holds(tmp_path: Path) -> None:
    tier = ResidentCheckpoints(LocalCheckpoints(tmp_path))
    tier.put_resident("run", 0, 3, b"x")
    assert repr(tier).endswith("1 resident)")
