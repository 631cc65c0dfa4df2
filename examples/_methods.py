"""The methods every example (and benchmarks/paper.py's study) can run, by name.

A method is what a run does at ``ready``: which member exploits which (``exploit=``) and
how it explores (``explore=``). Every method trains the same population, space, ready
interval and budget, so they spend the same compute; only the decision differs. The task
brings its own selection rule (``select``: the paper's t-test for RL, a tournament for the
GAN and translation, truncation for the toys), so the methods differ in nothing else.

- ``random``: random search. Values sampled from the space and kept; no exploit, no explore.
- ``pbt``: PBT. The task's rule exploits; explore perturbs each value (x0.8 or x1.2), or
  resamples it from the space with probability 0.25 (Ray Tune's default, so the toys run
  the same PBT on both sides).
- ``pb2``: PB2 (Parker-Holder et al. 2020). The same exploit; explore picks the new values
  with a time-varying Gaussian-process bandit over the run's past rounds.
- ``pb2mix``: PB2-Mix, PB2 with unordered choices drawn by a bandit (it equals ``pb2`` on a
  space without them).
- ``pbt_calm``: PBT made less greedy (``gp.Calm``): a member copies a donor only when the
  donor's moving average leads by half a spread of the population; otherwise it explores
  from its own weights.
- ``exploit_only`` and ``explore_only``: the paper's ablations. Exploit copies a donor and keeps
  the donor's values; explore perturbs the member's own values on its own weights,
  copying nothing.
"""

from __future__ import annotations

from typing import Any

import genepool as gp

METHODS = ("random", "pbt", "pb2", "pb2mix", "pbt_calm", "exploit_only", "explore_only")
#: PBT's explore: perturb, or resample with this probability.
RESAMPLE = 0.25
#: gp.Calm's settings for ``pbt_calm``: fixed before any result of the study was seen.
CALM_LEAD = 0.5
CALM_ALPHA = 0.5


def check(method: str) -> str:
    """``method`` if it is one of :data:`METHODS`; else a ValueError that lists them."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    return method


def policy(method: str, *, select: gp.Select) -> dict[str, Any]:
    """The ``exploit=`` and ``explore=`` arguments of ``gp.run`` for ``method``.

    Example:
        >>> sorted(policy("random", select=gp.Tournament()).items())
        [('exploit', None), ('explore', None)]
    """
    perturb = gp.Perturb(resample=RESAMPLE)
    match check(method):
        case "random":
            return {"exploit": None, "explore": None}
        case "pbt":
            return {"exploit": select, "explore": perturb}
        case "pb2":
            return {"exploit": select, "explore": gp.PB2()}
        case "pb2mix":
            return {"exploit": select, "explore": gp.PB2Mix()}
        case "pbt_calm":
            calm = gp.Calm(
                select,
                lead=CALM_LEAD,
                smoothing=gp.MovingAverage(CALM_ALPHA),
                explore_own=True,
            )
            return {"exploit": calm, "explore": perturb}
        case "exploit_only":
            return {"exploit": select, "explore": None}
        case "explore_only":
            return {"exploit": None, "explore": perturb}
    raise AssertionError(method)  # unreachable: check() refused every other name
