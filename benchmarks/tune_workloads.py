"""The workloads of benchmarks/vs_ray_tune.py, once for genepool and once for Ray Tune.

Three workloads, each written for both libraries with the same arithmetic:

- the paper's toy (examples/toy.py): gradient ascent on a surrogate of
  Q(theta) = 1.2 - |theta|^2, hyperparameters h0, h1;
- busy work: each step spins 10 ms of CPU (benchmarks/busywork.py);
- the learning-rate triangle wave of Ray Tune's shipped example
  (``ray/tune/examples/pbt_function.py``): accuracy grows fastest when ``lr`` follows a
  triangle wave in the accuracy; the target is an accuracy above 200. The Ray Tune side
  runs Ray's own function, imported from the installed package; the genepool side is the
  same objective written here, drawing its noise from the member's own random stream.

The Ray Tune trainables follow Ray's PBT guide: function trainables that checkpoint every
perturbation interval (``tune.report(..., checkpoint=...)``) and resume from
``tune.get_checkpoint()``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from busywork import STEP_SECONDS, spin
from toy import LR, START, q_true

import genepool as gp

TOY_SPACE = gp.Space(h0=gp.Float(0.0, 1.0), h1=gp.Float(0.0, 1.0))
BUSY_SPACE = gp.Space(lr=gp.Float(0.001, 0.5, log=True))
WAVE_SPACE = gp.Space(lr=gp.Float(0.0001, 0.02))
WAVE_TARGET = 200.0
WAVE_MIDPOINT = 100.0


# -- genepool ------------------------------------------------------------------------------
class Toy(gp.Trainable):
    """The paper's toy (as examples/toy.py)."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.theta = np.array(START)
        self.apply_hparams(hparams)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.h = np.array([hparams["h0"], hparams["h1"]])

    def step(self) -> dict[str, float]:
        self.theta = self.theta + LR * (-2.0 * self.h * self.theta)
        return {"Q": q_true(self.theta)}

    def save(self) -> dict[str, Any]:
        return {"theta": self.theta.copy()}

    def load(self, state: Mapping[str, Any]) -> None:
        self.theta = np.array(state["theta"])


class Busy(gp.Trainable):
    """Each step spins 10 ms."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x = 0.0
        self.apply_hparams(hparams)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.lr = float(hparams["lr"])

    def step(self) -> dict[str, float]:
        spin(STEP_SECONDS)
        self.x += self.lr * (1.0 - self.x)
        return {"score": self.x}

    def save(self) -> dict[str, float]:
        return {"x": self.x}

    def load(self, state: Mapping[str, Any]) -> None:
        self.x = float(state["x"])


def wave_optimal_lr(accuracy: float) -> float:
    """The best learning rate at an accuracy: the triangle wave, clipped to [0.001, 0.01]."""
    if accuracy < WAVE_MIDPOINT:
        best = 0.01 * accuracy / WAVE_MIDPOINT
    else:
        best = 0.01 - 0.01 * (accuracy - WAVE_MIDPOINT) / WAVE_MIDPOINT
    return min(0.01, max(0.001, best))


def wave_step(accuracy: float, lr: float, rng: np.random.Generator) -> float:
    """One step of the triangle-wave objective (the arithmetic of Ray's pbt_function)."""
    best = wave_optimal_lr(accuracy)
    q_err = max(lr, best) / min(lr, best)
    if q_err < 3.0:
        accuracy += (1.0 / q_err) * rng.random()
    elif lr > best:
        accuracy -= (q_err - 3.0) * rng.random()
    accuracy += 2.0 * rng.normal()
    return max(0.0, accuracy)


class Wave(gp.Trainable):
    """The triangle-wave objective; its noise from the member's stream."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.accuracy = 0.0
        self.apply_hparams(hparams)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.lr = float(hparams["lr"])

    def step(self) -> dict[str, float]:
        self.accuracy = wave_step(self.accuracy, self.lr, self.member.rng)
        return {"mean_accuracy": self.accuracy}

    def save(self) -> dict[str, float]:
        return {"accuracy": self.accuracy}

    def load(self, state: Mapping[str, Any]) -> None:
        self.accuracy = float(state["accuracy"])


# -- Ray Tune (function trainables, checkpoint every perturbation interval) ----------------
def _tune_restore() -> dict[str, Any] | None:
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory, open(os.path.join(directory, "state.json")) as f:
        state: dict[str, Any] = json.load(f)
    return state


def _tune_report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
    from ray import tune
    from ray.tune import Checkpoint

    if state is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        with open(os.path.join(directory, "state.json"), "w") as f:
            json.dump(state, f)
        tune.report(metrics, checkpoint=Checkpoint.from_directory(directory))


def tune_toy(config: dict[str, Any]) -> None:
    """The toy for Ray Tune; ``config["interval"]`` is the perturbation interval."""
    state = _tune_restore()
    theta = np.array(START) if state is None else np.array(state["theta"])
    step = 0 if state is None else int(state["step"])
    h = np.array([config["h0"], config["h1"]])
    interval, steps = int(config["interval"]), int(config["steps"])
    while step < steps:
        theta = theta + LR * (-2.0 * h * theta)
        step += 1
        keep = {"theta": theta.tolist(), "step": step} if step % interval == 0 else None
        # the h in effect, to count steps trained outside the declared bounds [0, 1]
        metrics = {"Q": q_true(theta), "step": step, "h_min": float(h.min())}
        _tune_report({**metrics, "h_max": float(h.max())}, keep)


def tune_busy(config: dict[str, Any]) -> None:
    """Busy work for Ray Tune."""
    state = _tune_restore()
    x = 0.0 if state is None else float(state["x"])
    step = 0 if state is None else int(state["step"])
    interval, steps = int(config["interval"]), int(config["steps"])
    while step < steps:
        spin(STEP_SECONDS)
        x += float(config["lr"]) * (1.0 - x)
        step += 1
        _tune_report(
            {"score": x, "step": step}, {"x": x, "step": step} if step % interval == 0 else None
        )
