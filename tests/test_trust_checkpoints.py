"""Reading a run's checkpoints never runs code, unless the reading code says it trusts them."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import genepool as gp

LEGACY = Path(__file__).parent / "data" / "legacy-v1"


class Gadget:
    """Makes the directory ``flag`` when unpickled: the proof that reading ran code."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self) -> Any:
        return (os.mkdir, (str(self.flag),))


class Climb(gp.Trainable):
    """The trainable that wrote tests/data/legacy-v1 (with genepool's first format); it
    interrupts its run once (Ctrl-C) at step 4 when ``interrupt`` is set."""

    interrupt = False

    def setup(self, hparams: Any) -> None:
        self.x, self.lr = 0.0, hparams["lr"]
        self.w = np.zeros(3)

    def apply_hparams(self, hparams: Any) -> None:
        self.lr = hparams["lr"]

    def step(self) -> dict[str, float]:
        self.x += self.lr
        self.w += self.lr
        if Climb.interrupt and self.member.step == 4:
            Climb.interrupt = False
            os.kill(os.getpid(), signal.SIGINT)
        return {"score": self.x}

    def save(self) -> Any:
        return {"x": self.x, "w": self.w.copy(), "tag": ("climb", 1)}

    def load(self, state: Any) -> None:
        self.x = state["x"]
        self.w = state["w"].copy()


def run_climb(db: Path, **kwargs: Any) -> gp.Result:
    return gp.run(
        Climb,
        gp.Space(lr=gp.Float(0.1, 1.0)),
        metric="score",
        population=2,
        ready=gp.Every(2),
        budget=gp.Budget(steps=8),
        seed=0,
        storage=f"sqlite:///{db}",
        name="legacy",
        **kwargs,
    )


def plant(checkpoint_dir: Path, payload: bytes) -> None:
    """Replace a checkpoint's payload and re-hash its manifest, as an attacker with write
    access to the folder would."""
    (checkpoint_dir / "payload.bin").write_bytes(payload)
    manifest_file = checkpoint_dir / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["payload"]["size"] = len(payload)
    manifest["payload"]["sha256"] = hashlib.sha256(payload).hexdigest()
    manifest_file.write_text(json.dumps(manifest))


def checkpoint_dirs(db: Path) -> list[Path]:
    return sorted(p.parent for p in Path(f"{db}.checkpoints").glob("*/m*/s*/manifest.json"))


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    """An interrupted run whose every checkpoint an attacker replaced with a pickle gadget."""
    db = tmp_path / "pbt.db"
    Climb.interrupt = True
    assert run_climb(db).stop_reason == "interrupted"
    flag = tmp_path / "pwned"
    for folder in checkpoint_dirs(db):
        plant(folder, pickle.dumps((1, {"state": Gadget(flag), "rng": None})))
    return db, flag


def test_load_best_runs_no_planted_code(planted: tuple[Path, Path]) -> None:
    db, flag = planted
    with pytest.raises(gp.CheckpointError, match="first format"):
        gp.load_best(f"sqlite:///{db}", "legacy")
    assert not flag.exists()


def test_result_load_runs_no_planted_code(planted: tuple[Path, Path]) -> None:
    db, flag = planted
    result = gp.Result.open(f"sqlite:///{db}", "legacy")
    for member in (None, 0, 1):
        with pytest.raises(gp.CheckpointError, match="trust"):
            result.load(member)
    assert not flag.exists()


def test_a_resumed_run_runs_no_planted_code(planted: tuple[Path, Path]) -> None:
    db, flag = planted
    with pytest.raises(gp.CheckpointError, match="first format"):
        run_climb(db)
    assert not flag.exists()


def test_trusting_code_does_read_what_it_trusts(planted: tuple[Path, Path]) -> None:
    db, flag = planted
    gp.load_best(f"sqlite:///{db}", "legacy", trust=True)
    assert flag.exists()  # the gadget was real


def test_a_checkpoint_in_the_first_format_is_read_only_with_trust(tmp_path: Path) -> None:
    shutil.copytree(LEGACY, tmp_path, dirs_exist_ok=True)
    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    with pytest.raises(gp.CheckpointError, match="genepool migrate") as info:
        gp.load_best(url, "legacy")
    assert "trust=True" in str(info.value)
    state = gp.load_best(url, "legacy", trust=True)
    assert state["tag"] == ("climb", 1)
    np.testing.assert_allclose(state["w"], [state["x"]] * 3)
    # and a trusting resume goes on from it, writing the new format
    result = run_climb(tmp_path / "legacy.db", allow_config_change=True, trust_checkpoints=True)
    assert all(m.step == 8 for m in result.members)
    assert gp.load_best(url, "legacy")["tag"] == ("climb", 1)  # no trust needed now


class Holder(Climb):
    """Saves an object that only pickle stores."""

    def save(self) -> Any:
        return {"x": self.x, "w": self.w.copy(), "tag": ("climb", 1), "fn": Climb}


def test_a_state_holding_another_type_is_refused_at_the_first_checkpoint(tmp_path: Path) -> None:
    run = {
        "metric": "score",
        "population": 2,
        "ready": gp.Every(2),
        "budget": gp.Budget(steps=4),
        "seed": 0,
    }
    with pytest.raises(gp.CheckpointError, match=r"state\['fn'\]") as info:
        gp.run(Holder, gp.Space(lr=gp.Float(0.1, 1.0)), **run)  # type: ignore[arg-type]
    assert "trust_checkpoints=True" in str(info.value)
    db = tmp_path / "pbt.db"
    result = gp.run(
        Holder,
        gp.Space(lr=gp.Float(0.1, 1.0)),
        storage=f"sqlite:///{db}",
        trust_checkpoints=True,
        **run,  # type: ignore[arg-type]
    )
    assert result.load()["fn"] is Climb  # the run's own Result trusts as the run did
    with pytest.raises(gp.CheckpointError, match="pickled"):
        gp.Result.open(f"sqlite:///{db}").load()
    assert gp.Result.open(f"sqlite:///{db}", trust=True).load()["fn"] is Climb


@pytest.mark.parametrize("value", ["yes", "False", 1, None])
def test_trust_is_true_or_false_and_nothing_else(tmp_path: Path, value: Any) -> None:
    with pytest.raises(gp.InvalidArgumentError, match="trust_checkpoints"):
        gp.run(
            Climb,
            gp.Space(lr=gp.Float(0.1, 1.0)),
            metric="score",
            population=2,
            ready=gp.Every(2),
            budget=gp.Budget(steps=4),
            trust_checkpoints=value,
        )
    shutil.copytree(LEGACY, tmp_path, dirs_exist_ok=True)
    with pytest.raises(gp.InvalidArgumentError, match="trust"):
        gp.Result.open(f"sqlite:///{tmp_path / 'legacy.db'}", "legacy", trust=value)
