"""Random streams derived from the run seed: one per member and generation, one per decision.

Streams are keyed, never shared, so that a seeded serial run is exactly reproducible and a
member's stream can be rebuilt after a resume without replaying anyone else's draws.
"""

from __future__ import annotations

import numpy as np

__all__ = ["decision_stream", "init_stream", "member_stream"]

_TRAIN, _DECIDE, _INIT = 0, 1, 2


def member_stream(seed: int, member: int, generation: int, attempt: int = 0) -> np.random.Generator:
    """The stream a member trains with, in a generation (and a retry after failures)."""
    key = (_TRAIN, member, generation, attempt)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def decision_stream(
    seed: int, member: int, ready_count: int, failures: int = 0
) -> np.random.Generator:
    """The stream of one decision: a member's after its ``ready_count``-th ready (and, for
    a failed round, its ``failures``-th failure in a row)."""
    key = (_DECIDE, member, ready_count, failures)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def init_stream(seed: int) -> np.random.Generator:
    """The stream that samples the starting population."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(_INIT,))))
