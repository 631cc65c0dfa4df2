"""A trainable whose step busy-works a fixed time: the workload of the process benchmark.

It lives in its own module (not in the script that runs the benchmark) so that worker
processes import it by name: ``benchmarks/`` is on the driver's ``sys.path``, which the
workers inherit.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import genepool as gp

#: The work one step does, in seconds of CPU (a spin, not a sleep).
STEP_SECONDS = 0.010

SPACE = gp.Space(lr=gp.Float(0.001, 0.5, log=True))


def spin(seconds: float) -> None:
    """Keep the CPU busy for ``seconds`` of wall time."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class Busy(gp.Trainable):
    """Each step spins :data:`STEP_SECONDS`, then moves ``x`` towards 1 at rate ``lr``.

    It reports ``score`` and ``work_s``, the wall time the step took.
    """

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x = 0.0
        self.apply_hparams(hparams)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.lr = float(hparams["lr"])

    def hparams_in_effect(self) -> Mapping[str, Any]:
        return {"lr": self.lr}

    def step(self) -> dict[str, float]:
        start = time.perf_counter()
        spin(STEP_SECONDS)
        self.x += self.lr * (1.0 - self.x)
        # the step's real duration: above STEP_SECONDS when the process lost its CPU
        return {"score": self.x, "work_s": time.perf_counter() - start}

    def save(self) -> dict[str, float]:
        return {"x": self.x}

    def load(self, state: Mapping[str, Any]) -> None:
        self.x = float(state["x"])
