"""A whole JAX population in one process: every member stepped by one ``vmap``.

:func:`run` trains every member of a PBT run at once: the members live as one stacked
params pytree and one stacked optimizer state (:class:`~genepool.integrations.jax._stack.
Stack`), and a step is one compiled call of ``vmap`` over the user's own update. PBT itself
is ask/tell's (:class:`genepool.AskTell`, synchronous), as for the torch vectorised driver
(:mod:`genepool.vectorised`): each round the driver asks for every member, brings each
member's slice to its claim's starting point, steps the members together until each is
ready, and tells each round with the member's state; decisions, the store, lineage,
events, the report, export and replay are those of any run.

A member's starting point, each round:

- no checkpoint: a fresh member (its initial key the first draw of its stream);
- its own checkpoint, which its slice holds still: nothing to do;
- another's checkpoint (an exploit) that the donor's slice still holds: the donor's
  params and optimizer state copied into the member's slice by index, every donor read
  before any slice is written;
- else the checkpoint's payload, loaded into the slice.

Then the claim's hyperparameters are written into the member's entries of the stacked
``opt_state.hyperparams`` and read back (:class:`~genepool.HyperparameterNotAppliedError`
if one differs), and the member's round key is drawn from the claim's stream
(:attr:`genepool.Claim.rng`: the run seed, the member, its generation; kept in its
checkpoints, reseeded by an exploit).

A member whose loss, new parameters or score are not finite keeps its slice and reports a
score that is not a number: its round fails, and the policy decides for it. Every ready
round checkpoints every member, durably every ``checkpoint_every`` rounds and in memory
between; a run stopped resumes from the durable ones with the same call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from genepool._errors import invalid, missing_dependency
from genepool._redact import shown
from genepool._stacked import StackedDriver, check_settings
from genepool.asktell import AskTell, Claim
from genepool.integrations.jax._hparams import Hyperparams
from genepool.integrations.jax._member import initial_key
from genepool.integrations.jax._program import OWNER, Program
from genepool.integrations.jax._program import program as make_program
from genepool.integrations.jax._stack import Stack
from genepool.integrations.jax._state import read
from genepool.integrations.jax._tree import key_data
from genepool.result import Result
from genepool.round import check_applied
from genepool.space import Space

try:
    import jax  # noqa: F401
except ImportError as _err:  # pragma: no cover - exercised only without jax
    raise missing_dependency("jax", "jax", "genepool.integrations.jax") from _err

__all__ = ["run"]

log = logging.getLogger("genepool.integrations.jax")


def run(
    *,
    init: Callable[[Any], Any],
    update: Callable[[Any, Any, Any], Any],
    optimizer: Any,
    space: Space,
    metric: str,
    ready: Any,
    budget: Any,
    population: int | None = None,
    evaluate: Callable[[Any], Any] | None = None,
    hparams: Mapping[str, str] | None = None,
    checkpoint_every: int = 1,
    **settings: Any,
) -> Result:
    """Train a population with PBT, every member at once in one ``jax.vmap``.

    Args:
        init: ``init(key) -> params``: one member's initial parameters (any pytree).
        update: ``update(params, opt_state, key) -> (params, opt_state, metrics)``: one
            training step of one member in plain JAX (draw its batch with ``key``; the
            loss, its gradients, ``optimizer.update``, ``optax.apply_updates``), as
            ``jax.jit`` would take it; ``metrics`` the loss (reported as ``"loss"``) or
            ``{name: scalar}``.
        optimizer: The optax optimizer ``update`` uses, built with
            :func:`optax.inject_hyperparams`: each member's hyperparameters are its
            entries of the stacked ``opt_state.hyperparams``.
        space: The hyperparameters: keys of ``opt_state.hyperparams``
            (``learning_rate``, ``momentum``, ``b1``, ...), or names ``hparams`` maps.
        metric: The metric that ranks members: one of ``update``'s or ``evaluate``'s.
        ready: When a member may compare itself with the population (``gp.Every(50)``).
        budget: When the run ends (``gp.Budget(steps=1000)``).
        population: How many members.
        evaluate: ``evaluate(params) -> {name: scalar}``: one member's evaluation, run
            for every member at once at the step that ends its round.
        hparams: The space's names that differ from the keys they set:
            ``{"lr": "learning_rate"}`` (``"1/learning_rate"`` for the
            ``inject_hyperparams`` at ``1`` of an ``optax.chain``).
        checkpoint_every: Every how many of a member's ready rounds its checkpoint is
            durable (and at its last round); those between are kept in memory. A run
            killed between resumes from the durable ones, each member rolled back to its
            last. ``keep`` is at least this (default: this).
        **settings: As for :class:`genepool.AskTell`: ``mode``, ``seed``, ``storage``,
            ``checkpoints``, ``exploit``, ``explore``, ``name``, ``initial``, ... The run
            is synchronous.

    Returns:
        The run's :class:`~genepool.Result`; ``result.load()`` is the best member's state
        (an :class:`~genepool.integrations.jax.OptaxState` layout: ``"params"`` and
        ``"opt_state"`` by pytree path; :func:`~genepool.integrations.jax.from_plain`
        rebuilds the pytree).

    Raises:
        InvalidArgumentError: An argument is wrong (each function traced once, on shapes,
            before the run is created or resumed).

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import genepool as gp
        >>> from genepool.integrations import jax as gpj
        >>> opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
        >>> def update(params, opt_state, key):
        ...     target = 1.0 + 0.1 * jax.random.normal(key, (3,))
        ...     loss, grads = jax.value_and_grad(lambda p: ((p - target) ** 2).sum())(params)
        ...     updates, opt_state = opt.update(grads, opt_state, params)
        ...     return params + updates, opt_state, loss
        >>> result = gpj.run(init=lambda key: jnp.zeros(3), update=update, optimizer=opt,
        ...     space=gp.Space(learning_rate=gp.Float(0.01, 0.3)), metric="loss", mode="min",
        ...     population=4, ready=gp.Every(5), budget=gp.Budget(steps=20), seed=0)
        >>> result.best.step, sorted(result.load()["params"])
        (20, [''])
    """
    program = make_program(init=init, update=update, optimizer=optimizer, evaluate=evaluate)
    check_settings(owner=OWNER, space=space, checkpoint_every=checkpoint_every, settings=settings)
    _, opt_state, names = program.check()
    targets = Hyperparams(opt_state, space, mapping=hparams, owner=OWNER)
    config = space.sample(np.random.default_rng(0))
    for name in targets.names:
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(OWNER, "space", f"numbers for {name!r}", f"{name}={shown(value)}")
    if metric not in names:
        fix = "Fix: return it from update as {name: value}, or from evaluate."
        raise invalid(OWNER, "metric", f"one of the reported metrics {names}", shown(metric), fix)
    settings = {"keep": checkpoint_every, **settings, "synchronous": True}
    with AskTell(
        space, metric=metric, ready=ready, budget=budget, population=population, **settings
    ) as pbt:
        members = _Members(
            pbt, program=program, targets=targets, metric=metric, checkpoint_every=checkpoint_every
        )
        log.info("JAX population run %r: %d members", pbt.name, members.n)
        members.train()
    return pbt.result()  # closed: a store it opened is the result's, reopened if asked


class _Members(StackedDriver):
    """The population's slices, in the round of :class:`~genepool._stacked.StackedDriver`."""

    def __init__(
        self,
        pbt: AskTell,
        *,
        program: Program,
        targets: Hyperparams,
        metric: str,
        checkpoint_every: int = 1,
    ) -> None:
        ctx = pbt.ctx
        configs = [m.hparams for m in ctx.store.population(ctx.name)]
        n = len(configs)
        super().__init__(pbt, n=n, metric=metric, checkpoint_every=checkpoint_every)
        self.program = program
        keys = np.stack([initial_key(ctx.seed, i) for i in range(n)])
        self.stack = Stack(program, keys, targets)
        self.stack.set_hparams(dict(enumerate(configs)))
        #: Per member: the key data of its round (drawn from its claim's stream).
        self.round_keys = keys.copy()

    def start(self, claims: Mapping[int, Claim]) -> None:
        """Bring each claimed member's slice to its starting point, write its
        hyperparameters and check them, draw its round key."""
        copies, loads, fresh = self.plan(claims)
        evaluated = list(self.evaluated)  # every donor's read before any is written
        self.stack.copy(copies)  # first: the loads below may overwrite a donor's slice
        for d, s in copies.items():
            self.evaluated[d] = evaluated[s]
        where = {m: f"member {m}'s checkpoint {_id(claims[m])!r}" for m in loads}
        self.stack.load(loads, where=where)
        for m, state in loads.items():
            metrics = read(state, where=where[m]).get("metrics")
            self.evaluated[m] = dict(metrics) if isinstance(metrics, Mapping) and metrics else None
        self.stack.fresh(fresh)
        for m in fresh:
            self.evaluated[m] = None
        self.stack.set_hparams({m: claim.hparams for m, claim in claims.items()})
        in_effect = self.stack.hparams()
        self.started(claims)
        for m, claim in claims.items():
            check_applied(
                in_effect[m],
                claim.hparams,
                who=f"Member {m}",
                fix="a value the optimizer state cannot hold (an int leaf given a fraction?): "
                "give inject_hyperparams a float for it.",
            )
            self.round_keys[m] = key_data(claim.rng)

    def step_until_ready(self, claims: Mapping[int, Claim]) -> set[int]:
        """Step the claimed members together, each until its claim is ready, reporting
        each step; returns the members whose round failed (a score not a number)."""
        metric, n = self.metric, self.n
        stepping = [m for m in sorted(claims) if not claims[m].ready]
        failed: set[int] = set()
        evaluates = self.program.evaluate is not None
        if evaluates:
            self.evaluate([m for m in stepping if self.evaluated[m] is None], failed)
        steps = np.zeros(n, dtype=np.int64)
        while stepping:
            active = np.zeros(n, dtype=bool)
            active[stepping] = True
            for m in stepping:
                steps[m] = claims[m].step
            metrics, finite = self.stack.step(self.round_keys, steps, active)
            if metric in metrics:
                finite = finite & np.isfinite(metrics[metric])
            due = [m for m in stepping if finite[m] and claims[m].ends_next()]
            if evaluates:
                self.evaluate(due, failed)
            for m in stepping:
                report = {name: float(value[m]) for name, value in metrics.items()}
                self.report(claims[m], m, report, ok=bool(finite[m]))
                if not finite[m]:
                    failed.add(m)
            stepping = [m for m in stepping if not claims[m].ready]
        return failed

    def evaluations(self) -> Mapping[str, Any]:
        return self.stack.evaluated()

    def checkpoint_state(self, m: int, claim: Claim) -> dict[str, Any]:
        owner = (m, claim.generation)
        keys = self.round_keys[m]
        return self.stack.member_state(m, self.evaluated[m], step=claim.step, key=keys, owner=owner)


def _id(claim: Claim) -> str | None:
    return claim.checkpoint.id if claim.checkpoint is not None else None
