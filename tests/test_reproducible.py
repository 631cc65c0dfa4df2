"""Property: a seeded serial run is exactly reproducible (same lineage, same scores)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import genepool as gp

SPACE = gp.Space(
    lr=gp.Float(1e-3, 0.5, log=True),
    width=gp.Int(1, 8),
    kind=gp.Choice(["a", "b", "c"]),
    size=gp.Choice([16, 32, 64], ordered=True),
)


class Noisy(gp.Trainable):
    """Draws from its member stream every step, so any change of stream shows in scores."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.x = 0.0
        self.apply_hparams(hparams)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.lr = float(hparams["lr"]) * int(hparams["width"]) / 8
        self.bonus = {"a": 0.0, "b": 0.01, "c": 0.02}[hparams["kind"]]

    def step(self) -> dict[str, float]:
        self.x += self.lr * (1.0 - self.x) + 0.05 * float(self.member.rng.standard_normal())
        return {"score": self.x + self.bonus}

    def save(self) -> dict[str, float]:
        return {"x": self.x}

    def load(self, state: Mapping[str, float]) -> None:
        self.x = state["x"]


def noisy_function(member: gp.Member) -> None:
    state = member.restore()
    x = 0.0 if state is None else float(state)
    lr = float(member.hparams["lr"])
    while member.running:
        x += lr * (1.0 - x) + 0.05 * float(member.rng.standard_normal())
        member.report(score=x, state=x)


EXPLOITS: dict[str, Callable[[], gp.Select]] = {
    "truncation": lambda: gp.Truncation(0.25),
    "tournament": gp.Tournament,
    "welch": lambda: gp.WelchTTest(4),
}
EXPLORES: dict[str, Callable[[], gp.Explore]] = {
    "perturb": lambda: gp.Perturb(resample=0.2),
    "noise": lambda: gp.GaussianNoise(0.1),
    "resample": lambda: gp.Resample(0.5),
}


def _run(seed: int, population: int, exploit: str, explore: str, api: str, sync: bool) -> gp.Result:
    return gp.run(
        Noisy if api == "class" else noisy_function,
        SPACE,
        metric="score",
        population=population,
        ready=gp.Every(3),
        budget=gp.Budget(steps=24),
        exploit=EXPLOITS[exploit](),
        explore=EXPLORES[explore](),
        seed=seed,
        synchronous=sync,
        clock=gp.ManualClock(tick=0.001),
    )


def _fingerprint(result: gp.Result) -> tuple[Any, ...]:
    events = [(e.kind, e.member, e.step, sorted(e.data.items())) for e in result.events]
    reports = [(r.member, r.step, r.metrics["score"]) for r in result.reports]
    return events, reports


@given(
    seed=st.integers(0, 2**32 - 1),
    population=st.integers(2, 6),
    exploit=st.sampled_from(sorted(EXPLOITS)),
    explore=st.sampled_from(sorted(EXPLORES)),
    api=st.sampled_from(["class", "function"]),
    sync=st.booleans(),
)
def test_a_seeded_serial_run_is_exactly_reproducible(seed, population, exploit, explore, api, sync):
    first = _run(seed, population, exploit, explore, api, sync)
    second = _run(seed, population, exploit, explore, api, sync)
    assert _fingerprint(first) == _fingerprint(second)
    assert [m.hparams for m in first.members] == [m.hparams for m in second.members]


def test_another_seed_gives_another_run() -> None:
    a = _fingerprint(_run(1, 4, "truncation", "perturb", "class", False))
    b = _fingerprint(_run(2, 4, "truncation", "perturb", "class", False))
    assert a != b


def test_the_lineage_has_exploits_to_compare() -> None:
    # the property above would be weak if runs had no exploit at all
    result = _run(3, 6, "truncation", "perturb", "class", False)
    assert any(e.kind == "exploit" for e in result.events)
    score = result.best.score
    assert score is not None
    assert np.isfinite(score)
