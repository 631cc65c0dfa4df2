"""Trainables for the Ray executor's tests: they run inside Ray actors.

Each one appends lines to the file named by its ``log`` hyperparameter (a fixed value):
``start <member> <step> <node> <threads>`` when training (re)starts and
``step <member> <step> <node>`` at each step, ``<node>`` being the Ray node it runs on.

Nothing here waits for time to pass: the first steps meet at a rendezvous (every worker
has started training, so that all take part whatever the start-up order), and
a node is killed by the test once a trainable on it has written a marker file, the
trainable then waiting to be killed, and the others waiting until the test lets them go
on (once the driver has started a worker in place of the lost one).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import genepool as gp

#: Longest wait for the other node, or for the test to kill this one (a safety net only:
#: the tests never depend on it).
PATIENCE = 300.0


def space(
    log: str,
    meet: str = "",
    workers: int = 2,
    marker: str = "",
    at: int = 0,
    doom: str = "",
    hold: str = "",
) -> gp.Space:
    """One real hyperparameter; the rest are the test's fixed settings: the log file, the
    rendezvous directory and how many workers meet there, the marker file and the step
    ``at`` which it is written, the node (``doom``, its id) whose trainable writes it and
    then waits to be killed, and the file (``hold``) that trainables on other nodes wait
    for once the marker is written."""
    return gp.Space(
        lr=gp.Float(0.01, 0.5, log=True),
        log=log,
        meet=meet,
        workers=workers,
        marker=marker,
        at=at,
        doom=doom,
        hold=hold,
    )


def node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def _note(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _rendezvous(meet: str, workers: int, node: str) -> None:
    """Wait until ``workers`` worker processes have started training (each on its own
    node when each node has room for one worker only)."""
    if not meet:
        return
    Path(meet, f"{node}-{os.getpid()}").touch()
    deadline = time.monotonic() + PATIENCE
    while len(os.listdir(meet)) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {os.listdir(meet)} of {workers} workers came to train")
        time.sleep(0.02)


def _wait_for(path: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.02)


def _write_marker(path: str, text: str) -> None:
    tmp = path + ".tmp"
    Path(tmp).write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class NodeClimber(gp.Trainable):
    """x climbs towards 1 at rate lr; the score is x. Logs where it runs."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x = 0.0
        self.steps = 0
        self.hp = dict(hparams)
        self.node = node_id()
        self.fresh = True

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.hp = dict(hparams)

    def step(self) -> dict[str, float]:
        hp = self.hp
        if self.fresh:
            threads = os.environ.get("OMP_NUM_THREADS", "-")
            _note(hp["log"], f"start {self.member.id} {self.steps} {self.node} {threads}")
            _rendezvous(hp["meet"], int(hp["workers"]), self.node)
            self.fresh = False
        self.steps += 1
        _note(hp["log"], f"step {self.member.id} {self.steps} {self.node}")
        if hp["doom"] == self.node and self.steps >= int(hp["at"]):
            _write_marker(hp["marker"], f"{self.member.id} {self.steps}")
            deadline = time.monotonic() + PATIENCE
            while time.monotonic() < deadline:  # the test kills this node now
                time.sleep(0.05)
            raise RuntimeError("the node was not killed")
        if hp["hold"] and os.path.exists(hp["marker"]):
            _wait_for(hp["hold"])
        self.x += float(hp["lr"]) * (1.0 - self.x)
        return {"score": self.x}

    def save(self) -> dict[str, float]:
        return {"x": self.x, "steps": self.steps}

    def load(self, state: Mapping[str, float]) -> None:
        self.x = float(state["x"])
        self.steps = int(state["steps"])
        self.fresh = True


class Marker(NodeClimber):
    """Writes the marker file the first time any member trains step ``at`` and goes on:
    the test then interrupts the driver."""

    def step(self) -> dict[str, float]:
        out = super().step()
        hp = self.hp
        if self.steps >= int(hp["at"]) and not os.path.exists(hp["marker"]):
            _write_marker(hp["marker"], f"{self.member.id} {self.steps}")
        return out


def read_log(path: str) -> list[list[str]]:
    """The log's lines, split."""
    return [line.split() for line in Path(path).read_text(encoding="utf-8").splitlines()]
