"""Trainables for the process and kill tests: importable by worker processes.

Each one appends a line to the file named by its ``log`` hyperparameter (a fixed value)
whenever it starts (with the step it starts from) and at each step, and kills a process
when a trigger file says so, so kills come from inside the trainable, never from sleeps.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import genepool as gp

SPACE_SPEC = {"lr": gp.Float(0.01, 0.5, log=True)}


def space(log: str, kill: str = "") -> gp.Space:
    """The test space: one real hyperparameter, and the log and kill files, fixed."""
    return gp.Space(lr=gp.Float(0.01, 0.5, log=True), log=log, kill=kill)


def _note(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()


def _maybe_kill(kill: str, member: int, step: int, log: str = "") -> None:
    """``kill`` names a file of 'who member step' lines: each fires once, the first time
    that member trains a step at or past that step (an exploit may jump over it)."""
    if not kill or not os.path.exists(kill):
        return
    lines = Path(kill).read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        parts = line.split()
        if (
            len(parts) == 3
            and parts[0] in ("worker", "driver")
            and int(parts[1]) == member
            and step >= int(parts[2])
        ):
            lines[i] = "#" + line  # fire once
            Path(kill).write_text("\n".join(lines), encoding="utf-8")
            if log:
                _note(log, f"kill {member} {step}")
            target = os.getpid() if parts[0] == "worker" else os.getppid()
            os.kill(target, signal.SIGKILL)


class Climber(gp.Trainable):
    """x climbs towards 1 at rate lr; the score is x."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x = 0.0
        self.steps = 0
        self.hp = dict(hparams)
        self.fresh = True  # log the step training (re)starts from at the first step

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.hp = dict(hparams)

    def step(self) -> dict[str, float]:
        if self.fresh:
            _note(self.hp["log"], f"start {self.member.id} {self.steps}")
            self.fresh = False
        self.steps += 1
        _maybe_kill(self.hp["kill"], self.member.id, self.steps, self.hp["log"])
        self.x += float(self.hp["lr"]) * (1.0 - self.x)
        _note(self.hp["log"], f"step {self.member.id} {self.steps}")
        return {"score": self.x}

    def save(self) -> dict[str, float]:
        return {"x": self.x, "steps": self.steps}

    def load(self, state: Mapping[str, float]) -> None:
        self.x = float(state["x"])
        self.steps = int(state["steps"])
        self.fresh = True


def climber_function(member: gp.Member) -> None:
    """The same through the function API."""
    state = member.restore()
    x = 0.0 if state is None else float(state["x"])
    steps = 0 if state is None else int(state["steps"])
    hp = member.hparams
    _note(hp["log"], f"start {member.id} {steps}")
    while member.running:
        steps += 1
        _maybe_kill(hp["kill"], member.id, steps, hp["log"])
        x += float(hp["lr"]) * (1.0 - x)
        _note(hp["log"], f"step {member.id} {steps}")
        member.report(score=x, state={"x": x, "steps": steps})


def read_log(path: str) -> list[tuple[str, int, int]]:
    """The log's lines as (kind, member, step)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        kind, member, step = line.split()
        out.append((kind, int(member), int(step)))
    return out


class TornSaver(Climber):
    """Dies half-way through writing its checkpoint's payload when the kill file says
    'torn member step' (member ``*``: any): the write is torn where a crash would tear it."""

    def save(self) -> dict[str, float]:
        kill = self.hp["kill"]
        if kill and os.path.exists(kill):
            lines = Path(kill).read_text(encoding="utf-8").split("\n")
            for i, line in enumerate(lines):
                parts = line.split()
                if (
                    len(parts) == 3
                    and parts[0] == "torn"
                    and parts[1] in ("*", str(self.member.id))
                    and self.steps >= int(parts[2])
                ):
                    lines[i] = "#" + line
                    Path(kill).write_text("\n".join(lines), encoding="utf-8")
                    _note(self.hp["log"], f"kill {self.member.id} {self.steps}")
                    _arm_torn_write()
        return super().save()


def _arm_torn_write() -> None:
    """The next checkpoint payload written in this process stops half-way: SIGKILL."""
    from genepool import checkpoints

    original = checkpoints._write_file

    def torn(path: str, data: bytes, *, fsync: bool) -> None:
        if not path.endswith(checkpoints.PAYLOAD_FILE):
            original(path, data, fsync=fsync)
            return
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoints._write_file = torn


def environment_reporter(member: gp.Member) -> None:
    """Reports the worker's thread cap and device as metrics (for the executor's tests)."""
    threads = float(os.environ.get("OMP_NUM_THREADS", "-1"))
    device = float(os.environ.get("CUDA_VISIBLE_DEVICES", "-1"))
    while member.running:
        member.report(score=float(member.hparams["lr"]), threads=threads, device=device, state=0)
