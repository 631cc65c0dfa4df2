"""The PBT decision: ready, exploit (select a donor) and explore, composed into one pure rule.

:meth:`Policy.decide` reads a frozen :class:`~genepool.member.Population` snapshot and a
member and returns data (:mod:`genepool.decision`): :class:`Continue`, :class:`Exploit`,
``decision.Explore`` (new hyperparameters on the member's own weights) or :class:`Stop`. It never
touches a process, a file or a database; the worker carries the decision out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from genepool import decision
from genepool._errors import invalid
from genepool.decision import Continue, Decision, Exploit, Stop
from genepool.member import MemberView, Population
from genepool.policy.explore import (
    Explore,
    ExploreFunction,
    GaussianNoise,
    Perturb,
    Resample,
)
from genepool.policy.greedy import BestOf, Calm, MovingAverage
from genepool.policy.pb2 import PB2, PB2Mix
from genepool.policy.ready import Every, Ready
from genepool.policy.select import Select, Tournament, Truncation, WelchTTest
from genepool.policy.stop import Budget, PlateauTracker, run_stop_reason
from genepool.space import Space

__all__ = [
    "PB2",
    "BestOf",
    "Budget",
    "Calm",
    "Continue",
    "Decision",
    "Every",
    "Exploit",
    "Explore",
    "ExploreFunction",
    "GaussianNoise",
    "MovingAverage",
    "PB2Mix",
    "Perturb",
    "PlateauTracker",
    "Policy",
    "Ready",
    "Resample",
    "Select",
    "Stop",
    "Tournament",
    "Truncation",
    "WelchTTest",
    "run_stop_reason",
]


class Policy:
    """Ready + exploit + explore + the member's budget, as one pure decision.

    Args:
        space: The search space (explore keeps values inside it).
        ready: When a member may be compared.
        exploit: How a donor is chosen; ``None`` never copies (the toy's "explore only").
        explore: How copied hyperparameters change; ``None`` copies them unchanged. With
            ``exploit=None`` it applies at every ready instead.
        budget: The member's step budget (``budget.steps``, in the ready counter's units).
        max_failures: Consecutive failed rounds after which a member is stopped.
        population: The run's population, if known (an explore strategy that reads the
            members' intervals keeps enough of them a member for its window).
        aligned: Compare members at the same point of training (see
            :attr:`Population.aligned`): for asynchronous runs, where a member that
            decides may be a round ahead of, or behind, the others.
    """

    def __init__(
        self,
        *,
        space: Space,
        ready: Ready,
        exploit: Select | None,
        explore: Explore | None,
        budget: Budget,
        max_failures: int = 3,
        aligned: bool = False,
        population: int | None = None,
    ) -> None:
        if not isinstance(space, Space):
            raise invalid("Policy", "space", "a gp.Space", repr(space))
        if not isinstance(ready, Ready):
            raise invalid("Policy", "ready", "a ready rule such as gp.Every(4)", repr(ready))
        if exploit is not None and not isinstance(exploit, Select):
            raise invalid(
                "Policy",
                "exploit",
                "gp.Truncation(), gp.Tournament(), gp.WelchTTest(), gp.Calm(rule) or None",
                repr(exploit),
            )
        if explore is not None and not isinstance(explore, Explore):
            raise invalid(
                "Policy",
                "explore",
                "gp.Perturb(), gp.Resample(), gp.GaussianNoise(), gp.ExploreFunction(fn) or None",
                repr(explore),
            )
        if explore is not None:
            explore.check(space)
        if not isinstance(budget, Budget):
            raise invalid("Policy", "budget", "a gp.Budget", repr(budget))
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
            raise invalid("Policy", "max_failures", "an integer >= 1", repr(max_failures))
        if isinstance(exploit, Calm) and exploit.explore_own and explore is None:
            raise invalid(
                "Policy",
                "explore",
                "an explore rule when the exploit rule is gp.Calm(..., explore_own=True)",
                "None",
                "Fix: give an explore rule (gp.Perturb(), ...), or explore_own=False.",
            )
        self.population = population
        self.space = space
        self.ready = ready
        self.exploit = exploit
        self.explore = explore
        if type(aligned) is not bool:
            raise invalid("Policy", "aligned", "True or False", repr(aligned))
        self.budget = budget
        self.max_failures = max_failures
        self.aligned = aligned

    def budget_reached(self, counter: float) -> bool:
        """Whether a member whose ready counter is ``counter`` has used its budget."""
        return self.budget.steps is not None and counter >= self.budget.steps

    def decide(
        self, population: Population, member: MemberView, rng: np.random.Generator
    ) -> Decision:
        """The decision for a ready ``member``: pure, deterministic for a given ``rng``."""
        return self.decide_with(population, member, lambda: rng)

    def decide_with(
        self,
        population: Population,
        member: MemberView,
        make_rng: Callable[[], np.random.Generator],
    ) -> Decision:
        """:meth:`decide`, with the generator made by ``make_rng`` only if a draw is
        needed (the same decision: a generator is made at most once, before any draw)."""
        if member.failures >= self.max_failures:
            return Stop("failed")
        if (
            not member.failed
            and member.checkpoint is not None
            and self.budget_reached(member.checkpoint.counter)
        ):
            return Stop("budget")
        if self.exploit is None:
            if self.explore is None or member.failed:
                return Continue()
            new_hp, explored = self._explore(population, member, member.hparams, make_rng())
            return decision.Explore(new_hp, explored=explored)
        if self.aligned and not population.aligned:
            population = population.as_aligned()
        if self.exploit.never_selects(population, member):
            return Continue()
        rng = make_rng()
        judgement = None
        if isinstance(self.exploit, Calm):  # a greediness control: a clear lead, or none
            verdict = self.exploit.verdict(population, member, rng)
            if verdict.explore_own:  # no donor clearly better: explore from its own weights
                if self.explore is None or member.failed:
                    return Continue()
                new_hp, explored = self._explore(population, member, member.hparams, rng)
                return decision.Explore(new_hp, judgement=verdict.judgement, explored=explored)
            donor, judgement = verdict.donor, verdict.judgement
        else:
            donor = self.exploit.select(population, member, rng)
        if donor is None or donor.checkpoint is None:
            return Continue()
        inherited = donor.checkpoint.hparams
        new, explored = self._explore(population, member, inherited, rng)
        return Exploit(
            donor=donor.id,
            checkpoint=donor.checkpoint,
            hparams=new,
            donor_generation=donor.generation,
            judgement=judgement,
            explored=explored,
        )

    def _explore(
        self,
        population: Population,
        member: MemberView,
        hparams: Mapping[str, Any],
        rng: np.random.Generator,
    ) -> tuple[dict[str, Any], Mapping[str, Any] | None]:
        """``explore`` of ``hparams`` for ``member`` in ``population``, and what chose them
        (without an explore rule: ``hparams`` unchanged)."""
        if self.explore is None:
            return dict(hparams), None
        return self.explore.explore_in(
            self.space, hparams, rng, population=population, member=member
        )

    @property
    def intervals(self) -> int:
        """How many of its latest intervals each member keeps for the explore strategy."""
        return self.explore.intervals_for(self.population) if self.explore is not None else 0
