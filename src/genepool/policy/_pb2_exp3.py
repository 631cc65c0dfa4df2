"""PB2-Mix's bandit over categories: a time-varying EXP3 with multiple plays.

Each distinct time of the window is one round of the bandit: its rows are the round's
plays (``k`` a round: the median over rounds), each arm a category (or a combination of
them), the reward the improvement scaled to [0, 1] over the window. With fewer plays than
arms the plays are distinct, as in Exp3.M (Uchiya, Nakamura and Kudo, 2010: weights capped
so that no arm's chance of being played in a round exceeds 1); with more, they are draws
with replacement (Exp3 with ``k`` plays a round). After each round comes the fixed share of
Exp3.S (Auer et al., 2002): a part of the total weight flows back to every arm, so an arm
that was bad long ago can come back (the "time-varying" part; the window itself is a hard
reset). PB2-Mix (Parker-Holder et al., 2021) uses this pair. The weights are replayed from
the window at every decision, so the decision stays a pure function of its inputs.

One decision draws one arm. The members already given an arm this round (pending) use up
their share of the batch: the arm is drawn in proportion to each arm's expected plays in a
batch of ``pending + 1`` minus its pending plays, so a batch spreads as a multiple-play draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["draw_arm"]

Array = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


def _single(weights: Array, gamma: float, k: int) -> tuple[Array, npt.NDArray[np.bool_]]:
    """The probability of each arm for one play of a round of ``k`` (summing to 1), and
    which arms are capped. With ``k`` below the number of arms the plays are distinct
    (Exp3.M): weights are capped so that no arm's chance of being in the round, ``k``
    times its probability, exceeds 1; capped arms are not updated. With more plays than
    arms they are draws with replacement (Exp3 with ``k`` plays a round)."""
    n = weights.size
    capped = np.zeros(n, dtype=bool)
    w = weights.copy()
    if k < n and gamma < 1.0:
        share = (1.0 / k - gamma / n) / (1.0 - gamma)
        if w.max() >= share * w.sum():
            order = np.argsort(-w, kind="stable")
            ranked = w[order]
            tail = np.cumsum(ranked[::-1])[::-1]  # tail[s]: the sum of ranked[s:]
            for s in range(1, n):
                alpha = share * tail[s] / (1.0 - s * share)
                if ranked[s - 1] >= alpha > ranked[s]:
                    capped[order[:s]] = True
                    w[order[:s]] = alpha
                    break
    p = (1.0 - gamma) * w / w.sum() + gamma / n
    if k < n:
        p = np.minimum(p, 1.0 / k)
    return p / p.sum(), capped


def _gamma(n_arms: int, k: int, n_rounds: int) -> float:
    """The exploration rate for ``n_rounds`` rounds of ``k`` plays (Exp3.M's, Uchiya et
    al. Theorem 2, for distinct plays; Exp3's over ``k * n_rounds`` plays otherwise)."""
    if k < n_arms:
        bound = n_arms * math.log(n_arms / k) / ((math.e - 1.0) * k * n_rounds)
    else:
        bound = n_arms * math.log(n_arms) / ((math.e - 1.0) * k * n_rounds)
    return min(1.0, math.sqrt(bound))


def _replay(arms: Ints, rounds: Ints, rewards: Array, n_arms: int, k: int, gamma: float) -> Array:
    """The weights after replaying every round of the window, normalised to sum 1.

    Each round, an arm's reward estimate is its total reward over its expected number of
    plays (``k`` times its probability): unbiased, and the importance weighting of Exp3.
    The fixed share (``0.1 / rounds`` of the total weight, times e, spread evenly) after
    each round is Exp3.S's, as PB2-Mix uses it."""
    n_rounds = int(rounds.max()) + 1
    share = math.e * 0.1 / n_rounds
    weights = np.full(n_arms, 1.0 / n_arms)
    starts = np.searchsorted(rounds, np.arange(n_rounds + 1))
    for r in range(n_rounds):
        played, got = arms[starts[r] : starts[r + 1]], rewards[starts[r] : starts[r + 1]]
        if played.size == 0:
            continue
        p, capped = _single(weights, gamma, k)
        total = np.bincount(played, weights=got, minlength=n_arms)
        estimate = np.where(capped, 0.0, total / (k * p))
        logw = np.log(weights) + k * gamma * estimate / n_arms
        weights = np.exp(logw - logw.max())
        weights /= weights.sum()
        weights = (weights + share / n_arms) / (1.0 + share)
    return weights


def draw_arm(
    *,
    arms: Ints,
    rounds: Ints,
    rewards: Array,
    n_arms: int,
    pending: Sequence[int],
    rng: np.random.Generator,
) -> tuple[int, dict[str, Any]]:
    """Draw one arm for the next play.

    Args:
        arms: The arm of each row of the window (``0 <= arm < n_arms``).
        rounds: The round of each row (0, 1, ...: the rank of its time), non-decreasing.
        rewards: Each row's reward in [0, 1].
        n_arms: How many arms there are.
        pending: The arms already drawn this round for members that have not reported.
        rng: The generator of the draw.

    Returns:
        The arm, and what chose it: each arm's probability for this draw, ``gamma``, the
        batch size ``k`` and the number of rounds replayed.
    """
    if n_arms == 1:
        return 0, {"probabilities": [1.0], "gamma": 0.0, "k": 1, "rounds": 0}
    n_rounds = int(rounds.max()) + 1
    per_round = np.bincount(rounds)
    k = max(1, round(float(np.median(per_round[per_round > 0]))))
    gamma = _gamma(n_arms, k, n_rounds)
    weights = _replay(arms, rounds, rewards, n_arms, k, gamma)
    single, _ = _single(weights, gamma, k)
    batch = len(pending) + 1
    used = np.bincount(np.asarray(pending, dtype=np.int64), minlength=n_arms)
    left = np.maximum(batch * single - used, 0.0)
    draw = left / left.sum() if left.sum() > 0 else single
    arm = int(rng.choice(n_arms, p=draw))
    info = {
        "probabilities": [float(x) for x in draw],
        "gamma": float(gamma),
        "k": k,
        "rounds": n_rounds,
    }
    return arm, info
