"""``genepool migrate``: a run of genepool's first checkpoint format, rewritten once in the
safe format, reads and resumes without trust."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import genepool as gp
from genepool._migrate import migrate
from genepool.checkpoints._codec import MAGIC
from genepool.cli import main
from tests.test_trust_checkpoints import LEGACY, Climb, Gadget, checkpoint_dirs, plant, run_climb


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    """A copy of the saved run of the first format; its database."""
    shutil.copytree(LEGACY, tmp_path, dirs_exist_ok=True)
    return tmp_path / "legacy.db"


def payloads(db: Path) -> list[bytes]:
    folder = Path(f"{db}.checkpoints")
    found = []
    for manifest in sorted(folder.glob("*/m*/s*/manifest.json")):
        name = json.loads(manifest.read_text())["payload"].get("file", "payload.bin")
        found.append((manifest.parent / name).read_bytes())
    return found


def test_migrate_needs_the_word_of_trust(legacy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = payloads(legacy)
    assert main(["migrate", "--storage", f"sqlite:///{legacy}"]) == 2
    assert "trust" in capsys.readouterr().err
    with pytest.raises(gp.InvalidArgumentError, match="trust"):
        migrate(f"sqlite:///{legacy}", trust="yes")  # type: ignore[arg-type]
    assert payloads(legacy) == before  # nothing read, nothing written


def test_a_migrated_run_reads_and_resumes_without_trust(
    legacy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{legacy}"
    trusted = gp.load_best(url, "legacy", trust=True)
    assert main(["migrate", "--storage", url, "--trust-checkpoints"]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts == {"migrated": 2, "current": 0, "skipped": 0, "still_pickled": {}}
    assert all(p.startswith(MAGIC) for p in payloads(legacy))
    state = gp.load_best(url, "legacy")  # no trust needed now
    assert state["tag"] == trusted["tag"] == ("climb", 1)
    np.testing.assert_array_equal(state["w"], trusted["w"])
    assert state["x"] == trusted["x"]
    result = run_climb(legacy, allow_config_change=True)  # resumes, without trust
    assert all(m.step == 8 for m in result.members)
    # a second migration finds nothing to do
    again = migrate(url, trust=True)
    assert again.migrated == []
    assert len(again.current) == len(payloads(legacy))


def test_an_object_only_pickle_stores_stays_pickled_and_is_named(legacy: Path) -> None:
    url = f"sqlite:///{legacy}"
    folder = checkpoint_dirs(legacy)[0]
    plant(folder, pickle.dumps((1, {"state": {"x": 1.0, "cls": Climb}, "rng": None})))
    done = migrate(url, "legacy", trust=True)
    assert len(done.migrated) == 2
    (where,) = done.still_pickled.values()
    assert "state['cls']" in where
    assert all(p.startswith(MAGIC) for p in payloads(legacy))


def test_a_gadget_in_another_datastores_folder_is_not_read(legacy: Path, tmp_path: Path) -> None:
    """Migrating reads only the store's own checkpoints: a folder another datastore owns
    is refused before any payload is read."""
    url = f"sqlite:///{legacy}"
    migrate(url, trust=True)  # marks the folder as this datastore's
    flag = tmp_path / "pwned"
    plant(checkpoint_dirs(legacy)[0], pickle.dumps((1, {"state": Gadget(flag), "rng": None})))
    other = tmp_path / "other.db"
    run_climb(other)  # a run of the same name in another datastore, with its own folder
    with pytest.raises(gp.StorageError, match="belongs to another datastore"):
        migrate(f"sqlite:///{other}", checkpoints=f"{legacy}.checkpoints", trust=True)
    assert not flag.exists()
