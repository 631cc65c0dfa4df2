"""Ray Tune's PBT and PB2 on the study's toys (benchmarks/race_toys.py), for the race.

Each toy is written again as a Ray Tune function trainable with the same arithmetic (the
functions of race_toys.py and tune_workloads.py), checkpointing every ready interval and
resuming from ``tune.get_checkpoint()``, as Ray's PBT guide advises. The schedulers are
configured as genepool's side of the race: the same population, budget (steps per trial)
and ready interval (``perturbation_interval``), truncation of the bottom quarter
(``quantile_fraction=0.25``), synchronous generations (``synch=True``); PBT perturbs by
x0.8 / x1.2 or resamples with probability 0.25 (Ray's defaults, and genepool's ``pbt``),
and its values are put back inside the declared bounds after each explore (Ray's PBT
otherwise leaves them, where a toy's h above 1 descends faster: not the same task). PB2 is
Ray's own, with the space's bounds.

What is not the same: Ray Tune draws its initial values and its explores from Python's and
NumPy's global streams (seeded here before the run) and runs trials in its own order, so a
Tune run is not exactly reproducible; genepool's runs are (serial, synchronous).
"""

from __future__ import annotations

import hashlib
import math
import random
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import race_toys as toys  # noqa: E402
import tune_workloads as w  # noqa: E402
from vs_ray_tune import run_tune  # noqa: E402

METHODS = ("tune_pbt", "tune_pb2")


# -- the toys as Ray Tune function trainables ------------------------------------------------
def _stream(config: Mapping[str, Any], step: int) -> np.random.Generator:
    """A trial's noise from the run seed, the trial and the step it (re)starts at."""
    from ray import tune

    key = f"{config['seed']}/{tune.get_context().get_trial_id()}/{step}"
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8]))


def tune_wave(config: dict[str, Any]) -> None:
    """The triangle wave for Ray Tune (its noise from :func:`_stream`)."""
    state = w._tune_restore()
    accuracy = 0.0 if state is None else float(state["accuracy"])
    step = 0 if state is None else int(state["step"])
    rng = _stream(config, step)
    interval, steps, lr = int(config["interval"]), int(config["steps"]), float(config["lr"])
    while step < steps:
        accuracy = w.wave_step(accuracy, lr, rng)
        step += 1
        keep = {"accuracy": accuracy, "step": step} if step % interval == 0 else None
        w._tune_report({"mean_accuracy": accuracy, "step": step}, keep)


def tune_deceptive(config: dict[str, Any]) -> None:
    """The deceptive toy for Ray Tune."""
    state = w._tune_restore()
    theta = toys.DECEPTIVE_START if state is None else float(state["theta"])
    distance = 0.0 if state is None else float(state["distance"])
    step = 0 if state is None else int(state["step"])
    interval, steps, h = int(config["interval"]), int(config["steps"]), float(config["h"])
    while step < steps:
        theta, distance = toys.deceptive_step(theta, distance, h, step)
        step += 1
        keep = (
            {"theta": theta, "distance": distance, "step": step} if step % interval == 0 else None
        )
        w._tune_report({"Q": toys.deceptive_q(theta), "step": step}, keep)


TRAINABLES: dict[str, Callable[[dict[str, Any]], None]] = {
    "toy": w.tune_toy,
    "wave": tune_wave,
    "deceptive": tune_deceptive,
}


# -- one run ---------------------------------------------------------------------------------
def _bounds(space: Any) -> dict[str, tuple[float, float]]:
    return {name: (float(d.low), float(d.high)) for name, d in space.items()}


def _clipper(bounds: Mapping[str, tuple[float, float]]) -> Callable[[dict[str, Any]], Any]:
    def clip(config: dict[str, Any]) -> dict[str, Any]:
        for name, (lo, hi) in bounds.items():
            config[name] = min(hi, max(lo, float(config[name])))
        return config

    return clip


def run(task: str, method: str, *, seed: int, size: str, population: int) -> dict[str, Any]:
    """One Ray Tune run of ``method`` on the toy ``task``: the fields of its record."""
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.schedulers.pb2 import PB2

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    spec = toys.TOYS[task]
    s = spec.SIZES[size]
    bounds = _bounds(spec.SPACE)
    interval, steps = int(s["ready"]), int(s["steps"])

    def scheduler() -> Any:
        if method == "tune_pb2":
            return PB2(
                time_attr="training_iteration",
                perturbation_interval=interval,
                hyperparam_bounds={n: list(b) for n, b in bounds.items()},
                quantile_fraction=toys.QUANTILE,
                synch=True,
            )
        return PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=interval,
            hyperparam_mutations={n: tune.uniform(*b) for n, b in bounds.items()},
            quantile_fraction=toys.QUANTILE,
            resample_probability=0.25,
            custom_explore_fn=_clipper(bounds),
            synch=True,
        )

    random.seed(seed)
    np.random.seed(seed)
    out = run_tune(
        TRAINABLES[task],
        metric=spec.METRIC,
        population=population,
        mutations={},
        param_space={
            **{n: tune.uniform(*b) for n, b in bounds.items()},
            "interval": interval,
            "steps": steps,
            "seed": seed,
        },
        interval=interval,
        steps=steps,
        seed=seed,
        scheduler=scheduler,
    )
    frames = out["frames"]
    finals = [float(f[spec.METRIC].iloc[-1]) for f in frames if len(f)]
    curve: dict[int, float] = {}
    for f in frames:
        for step, value in zip(f["training_iteration"], f[spec.METRIC], strict=True):
            if math.isfinite(float(value)):
                curve[int(step)] = max(curve.get(int(step), -math.inf), float(value))
    record = {
        "best_score": max(finals) if finals else None,
        "final_scores": finals,
        "budget_steps": max(
            (int(f["training_iteration"].max()) for f in frames if len(f)), default=0
        ),
        "exploits": out["perturbations"],
        "population_curve": sorted([k, v] for k, v in curve.items()),
        "timed_out": out["timed_out"],
        "trials_finished": out["trials_finished"],
        "wall_s": round(out["wall_s"], 2),
        "settings": {**s, "population": population, "bounds": bounds, "ray": _ray_version()},
    }
    return record


def _ray_version() -> str:
    import ray

    return str(ray.__version__)
