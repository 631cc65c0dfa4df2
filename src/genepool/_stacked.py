"""A whole population in one process, as one stack of members: the round every such
driver runs (``genepool.vectorised`` on torch, ``genepool.integrations.jax`` on JAX).

:class:`StackedDriver` is PBT through :class:`genepool.AskTell` (synchronous): each round
it asks for every member that trains, brings each member's slice of the stack to its
claim's starting point (:meth:`~StackedDriver.plan`: nothing to do, a copy of a donor's
slice in place, a checkpoint to load, or a fresh start), steps them together until each is
ready (the framework's part), and tells every round, its checkpoint durable every
``checkpoint_every`` rounds and at the member's last. It knows no framework: a subclass
holds the stack and does the copying, loading, stepping and saving.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from genepool._errors import invalid
from genepool._redact import shown
from genepool.asktell import AskTell, Claim
from genepool.policy.ready import Every
from genepool.space import Space

__all__ = ["INITIAL", "StackedDriver", "check_settings", "steps_between_readies"]

#: What a slice holds before its member's first step: its initial weights.
INITIAL = "<initial>"


class StackedDriver(ABC):
    """The round of a stacked population; a subclass holds the stack.

    Args:
        pbt: The run (synchronous).
        n: How many members (slices).
        metric: The run's metric.
        checkpoint_every: Every how many rounds a member's checkpoint is durable.

    Attributes:
        held: Per slice: the checkpoint id it holds, :data:`INITIAL`, or ``None`` (trained
            since its last checkpoint).
        evaluated: Per member: its latest evaluation (``None``: none yet).
        resident_rounds: Per member: the rounds told since its last durable checkpoint.
    """

    def __init__(self, pbt: AskTell, *, n: int, metric: str, checkpoint_every: int) -> None:
        self.pbt, self.n, self.metric = pbt, n, metric
        self.held: list[str | None] = [INITIAL] * n
        self.evaluated: list[dict[str, float] | None] = [None] * n
        self.checkpoint_every = checkpoint_every
        self.resident_rounds = [0] * n

    def train(self) -> None:
        """Rounds until the run is over: ask, start, step until ready, tell."""
        while True:
            with contextlib.ExitStack() as open_claims:  # left untold: given back
                claims = self._ask(open_claims)
                if not claims:
                    return
                self.start(claims)
                failed = self.step_until_ready(claims)
                self._tell(claims, failed)

    def _ask(self, open_claims: contextlib.ExitStack) -> dict[int, Claim]:
        """A claim of every member that trains this round (none: the run is over)."""
        claims: dict[int, Claim] = {}
        timeout = math.inf  # the first waits for members another process held
        while (claim := self.pbt.ask(timeout=timeout)) is not None:
            claims[claim.member] = open_claims.enter_context(claim)
            timeout = 0.0
        return claims

    def plan(self, claims: Mapping[int, Claim]) -> tuple[dict[int, int], dict[int, Any], list[int]]:
        """How each claimed member's slice reaches its starting point: ``copies``
        (recipient -> donor, a slice another holds now), ``loads`` (member -> the state of
        a checkpoint no slice holds) and ``fresh`` (members back to their initial weights);
        a slice that holds its claim's checkpoint already is in none."""
        copies: dict[int, int] = {}
        loads: dict[int, Any] = {}
        fresh: list[int] = []
        for m, claim in claims.items():
            ck = claim.checkpoint
            if ck is None:
                if self.held[m] != INITIAL:
                    fresh.append(m)
            elif self.held[m] == ck.id:
                continue
            elif ck.member != m and self.held[ck.member] == ck.id:
                copies[m] = ck.member
            else:
                loads[m] = ck.load()
        return copies, loads, fresh

    def started(self, claims: Mapping[int, Claim]) -> None:
        """Note the checkpoint each claimed slice holds once brought to it."""
        for m, claim in claims.items():
            self.held[m] = claim.checkpoint.id if claim.checkpoint is not None else INITIAL

    @abstractmethod
    def start(self, claims: Mapping[int, Claim]) -> None:
        """Bring each claimed member's slice to its starting point (:meth:`plan`), set
        its hyperparameters and check them, seed its round; then :meth:`started`."""

    @abstractmethod
    def step_until_ready(self, claims: Mapping[int, Claim]) -> set[int]:
        """Step the claimed members together, each until its claim is ready, reporting
        each step; the members whose round failed (a score not a number)."""

    @abstractmethod
    def evaluations(self) -> Mapping[str, Any]:
        """Every member's evaluation now: each metric, indexed by member (a list or array)."""

    @abstractmethod
    def checkpoint_state(self, m: int, claim: Claim) -> dict[str, Any]:
        """Member ``m``'s checkpoint state at the end of ``claim``'s round."""

    def evaluate(self, members: Sequence[int], failed: set[int]) -> None:
        """Evaluate every member; keep the evaluation of ``members`` (one whose score is
        not a number fails its round)."""
        if not members:
            return
        values = self.evaluations()
        for m in members:
            mine = self.evaluated[m] = {name: float(value[m]) for name, value in values.items()}
            if not math.isfinite(mine.get(self.metric, 0.0)):
                failed.add(m)

    def report(self, claim: Claim, m: int, metrics: Mapping[str, float], *, ok: bool) -> None:
        """Report a step of member ``m``: its step's metrics and its latest evaluation; a
        step that was not finite reports the metric as NaN (its round fails)."""
        self.held[m] = None
        values = {**metrics, **(self.evaluated[m] or {})}
        if not ok:
            values[self.metric] = math.nan
        claim.report(values)

    def _tell(self, claims: Mapping[int, Claim], failed: set[int]) -> None:
        """Tell every round (the failed ones last, so that a decision taken at once for
        one sees the round's new checkpoints), then note the checkpoint each slice holds."""
        for m in sorted(claims, key=lambda m: (m in failed, m)):
            claim = claims[m]
            due = self.resident_rounds[m] + 1 >= self.checkpoint_every
            durable = due or claim.budget_used()
            state = functools.partial(self.checkpoint_state, m, claim)
            self.pbt.tell(claim, state=state, durable=durable)
            self.resident_rounds[m] = 0 if durable else self.resident_rounds[m] + 1
        ctx = self.pbt.ctx
        population = ctx.store.population(ctx.name)
        for m, claim in claims.items():
            ck = population[m].checkpoint
            written = m not in failed and ck is not None and (ck.member, ck.step) == (m, claim.step)
            self.held[m] = ck.id if written and ck is not None else None


def steps_between_readies(ready: Any, *, owner: str) -> int:
    """The steps between two readies of ``ready`` (``gp.Every(k)`` or ``k``): how a member
    of a stacked run, trained alone (replay), knows where its rounds end."""
    k: Any = ready.steps if isinstance(ready, Every) else ready
    plain = not isinstance(ready, Every) or (
        ready.counter == "steps" and ready.burn_in == 0 and ready.min_seconds == 0
    )
    number = isinstance(k, numbers.Real) and not isinstance(k, bool) and math.isfinite(k)
    if not (plain and number and k >= 1 and k == int(k)):
        fix = "Fix: pass the run's ready rule; one that is not every k steps is not retraced."
        must = "gp.Every(k) counting steps, k a whole number"
        raise invalid(owner, "ready", must, shown(ready), fix)
    return int(k)


def check_settings(
    *, owner: str, space: Any, checkpoint_every: Any, settings: Mapping[str, Any]
) -> None:
    """The arguments of a stacked run that need no computation: ``space`` a
    :class:`~genepool.Space`, ``checkpoint_every`` an int >= 1 and ``keep`` at least it,
    the run synchronous (its members step together)."""
    if not isinstance(space, Space):
        raise invalid(owner, "space", "a gp.Space", shown(space))
    if type(checkpoint_every) is not int or checkpoint_every < 1:
        must = "an int >= 1 (every how many ready rounds a member's checkpoint is durable)"
        raise invalid(owner, "checkpoint_every", must, shown(checkpoint_every))
    keep = settings.get("keep", checkpoint_every)
    if type(keep) is int and keep < checkpoint_every:
        fix = f"Fix: keep={checkpoint_every} or more (or leave it out): a member falls back "
        fix += "to its last durable checkpoint, which it must keep among its previous ones."
        must = f"at least checkpoint_every={checkpoint_every}"
        raise invalid(owner, "keep", must, shown(keep), fix)
    if settings.get("synchronous", True) is not True:
        fix = "Fix: leave it out: the members step together, round by round."
        raise invalid(owner, "synchronous", "True", shown(settings["synchronous"]), fix)
