"""The study's three toy tasks (benchmarks/paper.py), each behind the examples' interface.

- ``toy``: the paper's toy (examples/toy.py, Figure 2). theta starts at (0.9, 0.9); each
  step ascends the surrogate ``1.2 - h0 theta0^2 - h1 theta1^2``; the score is the true
  ``Q = 1.2 - |theta|^2``. h0, h1 in [0, 1].
- ``wave``: the learning-rate triangle wave of Ray Tune's PBT example
  (``ray/tune/examples/pbt_function.py``, the arithmetic in benchmarks/tune_workloads.py):
  accuracy grows fastest while ``lr`` follows a triangle wave in the accuracy.
  lr in [0.0001, 0.02]. Its noise comes from the member's own stream.
- ``deceptive``: a toy where the greedy schedule is not the best, after the deceptive toy
  of PBT-Zoo (Dushatskiy et al., "To Be Greedy, or Not to Be", TMLR 2024), written here:
  theta starts at 0.9 and ascends ``1.2 - theta^2`` at a speed ``2 - h - 0.2 d``, where
  ``d`` adds up, over the steps trained, how far h was from a schedule that falls linearly
  from 1 to 0 over 200 steps (divided by the ready interval). A smaller h is faster now,
  so a greedy search drives h to 0 at once, and the growing ``d`` stalls it later; the
  best final score follows the schedule. h in [0, 1].

Each task trains on both sides of the race with the same arithmetic: as a
``gp.Trainable`` here, and as a Ray Tune function trainable (benchmarks/race_tune.py).
Every method uses the same selection rule (truncation of the bottom quarter, Ray Tune's
``quantile_fraction`` default), the same ready interval and the same budget; the methods are
examples/_methods.py's. Runs are serial and in synchronous generations, so a seeded run is
exactly reproducible.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))
sys.path.insert(0, str(HERE))

import _methods  # noqa: E402
import tune_workloads as w  # noqa: E402

import genepool as gp  # noqa: E402

#: Truncation of the bottom quarter: Ray Tune's PBT default, on both sides.
QUANTILE = 0.25
#: The deceptive toy: the step size, and the weight of the distance from the schedule.
DECEPTIVE_LR = 0.005
DECEPTIVE_PENALTY = 0.2
DECEPTIVE_START = 0.9
#: The deceptive toy's ready interval, and the step where its best schedule reaches 0.
DECEPTIVE_READY = 4
DECEPTIVE_HORIZON = 200


class ToyTask:
    """One toy, with the module interface of the examples (``TASK``, ``METRIC``, ``MODE``,
    ``SIZES`` and ``run``)."""

    MODE = "max"

    def __init__(
        self,
        name: str,
        *,
        metric: str,
        space: gp.Space,
        ready: int,
        steps: Mapping[str, int],
        trainable: type[gp.Trainable],
    ) -> None:
        self.TASK = name
        self.METRIC = metric
        self.SPACE = space
        self.SIZES = {
            size: {"population": 4, "ready": ready, "steps": n} for size, n in steps.items()
        }
        self.trainable = trainable

    def run(
        self,
        *,
        method: str,
        seed: int,
        size: str = "full",
        workers: int = 1,
        storage: str | None = None,
        progress: bool = False,
        population: int | None = None,
    ) -> gp.Result:
        """One run of ``method`` (examples/_methods.py), as the examples' ``run``."""
        if size not in self.SIZES:
            raise ValueError(f"size must be one of {sorted(self.SIZES)}, got {size!r}")
        s = self.SIZES[size]
        return gp.run(
            self.trainable,
            self.SPACE,
            metric=self.METRIC,
            population=population or s["population"],
            ready=gp.Every(s["ready"]),
            budget=gp.Budget(steps=s["steps"]),
            **_methods.policy(method, select=gp.Truncation(QUANTILE)),
            seed=seed,
            synchronous=True,
            storage=storage,
            workers=workers,
            progress=progress,
        )


# -- the deceptive toy -----------------------------------------------------------------------
def deceptive_target(step: int) -> float:
    """The schedule that scores best: h falls linearly from 1 at step 0 to 0 at the horizon."""
    return max(1.0 - step / DECEPTIVE_HORIZON, 0.0)


def deceptive_step(theta: float, distance: float, h: float, step: int) -> tuple[float, float]:
    """One step of the deceptive toy: the new ``theta`` and the new ``distance``."""
    speed = max(2.0 - h - DECEPTIVE_PENALTY * distance, 0.0)
    theta = theta + DECEPTIVE_LR * (-2.0 * speed * theta)
    distance += abs(h - deceptive_target(step)) / DECEPTIVE_READY
    return theta, distance


def deceptive_q(theta: float) -> float:
    """The score: ``1.2 - theta^2``."""
    return 1.2 - theta * theta


class Deceptive(gp.Trainable):
    """The deceptive toy."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.theta = DECEPTIVE_START
        self.distance = 0.0
        self.t = 0
        self.apply_hparams(hparams)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.h = float(hparams["h"])

    def step(self) -> dict[str, float]:
        self.theta, self.distance = deceptive_step(self.theta, self.distance, self.h, self.t)
        self.t += 1
        return {"Q": deceptive_q(self.theta)}

    def save(self) -> dict[str, Any]:
        return {"theta": self.theta, "distance": self.distance, "t": self.t}

    def load(self, state: Mapping[str, Any]) -> None:
        self.theta = float(state["theta"])
        self.distance = float(state["distance"])
        self.t = int(state["t"])


TOY = ToyTask(
    "toy", metric="Q", space=w.TOY_SPACE, ready=4, steps={"smoke": 40, "full": 200}, trainable=w.Toy
)
WAVE = ToyTask(
    "wave",
    metric="mean_accuracy",
    space=w.WAVE_SPACE,
    ready=5,
    steps={"smoke": 40, "full": 300},
    trainable=w.Wave,
)
DECEPTIVE = ToyTask(
    "deceptive",
    metric="Q",
    space=gp.Space(h=gp.Float(0.0, 1.0)),
    ready=DECEPTIVE_READY,
    steps={"smoke": 40, "full": DECEPTIVE_HORIZON},
    trainable=Deceptive,
)
TOYS: dict[str, ToyTask] = {t.TASK: t for t in (TOY, WAVE, DECEPTIVE)}


def deceptive_final(h_at: Callable[[int], float], steps: int = DECEPTIVE_HORIZON) -> float:
    """The deceptive toy's final score when h follows ``h_at(step)`` for ``steps`` steps."""
    theta, distance = DECEPTIVE_START, 0.0
    for t in range(steps):
        theta, distance = deceptive_step(theta, distance, h_at(t), t)
    return deceptive_q(theta)
