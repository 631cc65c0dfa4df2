"""A whole population in one process: the round's third driver, on stacked members.

:func:`run` trains every member of a PBT run at once: the members live as one
:class:`~genepool.vectorised.StackedMembers` (parameters with a population axis) and one
vectorised optimizer (hyperparameters as per-member columns), and a step is one batched
forward and backward for all of them. PBT itself is ask/tell's (:class:`genepool.AskTell`,
synchronous): each round the driver asks for every member, brings each member's slice to
its claim's starting point, steps the members together until each is ready, and tells
each round with the member's state. Decisions, the store, lineage, events, the report and
export are therefore those of any run.

A member's starting point, each round:

- no checkpoint: a fresh member, its initial weights drawn from the run seed and its id;
- its own checkpoint, which its slice holds still (it was told, and has not trained or
  been overwritten since): nothing to do;
- another's checkpoint (an exploit) that the donor's slice still holds: the donor's
  parameters, buffers and optimizer state copied into the member's slice in place, every
  donor read before any slice is overwritten;
- else the checkpoint's payload, loaded into the slice.

Then the claim's hyperparameters are set and checked (an explore), and the member's
random stream for the round (its batches, its dropout masks) is seeded from the claim's
own stream (:attr:`genepool.Claim.rng`: the run seed, the member, its generation; kept in
its checkpoints, reseeded by an exploit and by a retry after a failure).

A member whose loss, gradients or score are not finite is masked out of the optimizer
step, so the others' numbers are bit-identical to a run without it, and reports a score
that is not a number: ask/tell records the failed round and the policy decides for it
(an exploit, typically). Every ready round checkpoints every member, durably every
``checkpoint_every`` rounds and in memory between (a resident checkpoint,
:mod:`genepool.checkpoints._resident`); a run stopped (its budget, an error, a kill)
resumes from the durable ones with the same call, each member rolled back to its last.

The evaluation (``evaluate``) runs batched at the step that ends a member's round
(:meth:`genepool.Claim.ends_next`), and at the start of a round for a member with no
evaluation yet; the reports between carry the member's latest evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from genepool._capacity import size_text
from genepool._errors import InvalidArgumentError, missing_dependency
from genepool._stacked import INITIAL, StackedDriver
from genepool.asktell import AskTell, Claim
from genepool.result import Result
from genepool.round import check_applied
from genepool.space import Space
from genepool.vectorised._inputs import Probed, Steps, check, probe, refused
from genepool.vectorised._member import STATE_FORMAT, initial_seed, load_member, member_state
from genepool.vectorised._memory import check_fits
from genepool.vectorised._stack import StackedMembers

try:
    import torch
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_dependency("torch", "torch", "genepool.vectorised") from _err

__all__ = ["STATE_FORMAT", "initial_seed", "run"]

log = logging.getLogger("genepool.vectorised")


def run(
    *,
    model: Callable[[], Any],
    loss: Callable[[Any, Any], Any],
    data: Callable[[Any, int], Any],
    space: Space,
    metric: str,
    ready: Any,
    budget: Any,
    population: int | None = None,
    evaluate: Callable[[Any, Any], Any] | None = None,
    eval_data: Any = None,
    optimizer: str = "sgd",
    optimizer_options: Mapping[str, Any] | None = None,
    device: Any = None,
    checkpoint_every: int = 1,
    **settings: Any,
) -> Result:
    """Train a population with PBT, every member at once in one batched computation.

    Args:
        model: A function of no arguments returning one member's ``nn.Module`` (its
            dropouts :class:`genepool.vectorised.Dropout`); member ``i``'s initial
            weights are drawn under a seed of the run seed and ``i``
            (:func:`initial_seed`).
        loss: ``loss(model, batch) -> loss`` or ``(loss, {name: scalar})`` for one
            member: ``model(*inputs)`` is its forward pass, ``batch`` one of its batches.
            The loss is reported as ``"loss"``, the metrics by their names.
        data: ``data(generator, member) -> batch``: a training batch (tensors, or a
            tuple, list or dict of them; the same shapes for every member) drawn with
            ``generator``, the member's own ``torch.Generator``; or
            :class:`~genepool.vectorised.Sample` (batches drawn from tensors in memory,
            every member's gathered at once: faster).
        space: The hyperparameters: names of the optimizer's hyperparameters (``lr``,
            ``momentum``, ``beta1``, ``beta2``, ``eps``, ``weight_decay``, ...),
            ``max_norm`` (gradient clipping), ``dropout`` or ``dropout.<module>``, and
            ``loss_weight`` (see :mod:`genepool.vectorised._hparams`).
        metric: The metric that ranks members: ``"loss"``, a metric of ``loss``, or one
            of ``evaluate``'s.
        ready: When a member may compare itself with the population (``gp.Every(50)``).
        budget: When the run ends (``gp.Budget(steps=1000)``).
        population: How many members.
        evaluate: ``evaluate(model, batch) -> {name: scalar}`` for one member in
            evaluation mode, run for all at once on ``eval_data``.
        eval_data: The evaluation batch every member is scored on (not copied per
            member), or a function of no arguments returning it.
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"`` (genepool's vectorised ones).
        optimizer_options: Fixed optimizer arguments: ``{"nesterov": True}``,
            ``{"amsgrad": True}``, or a hyperparameter the space does not name
            (``{"momentum": 0.9}``), the same for every member.
        device: Where the members live (``"cuda"``); default the CPU.
        checkpoint_every: Every how many of a member's ready rounds its checkpoint is
            durable (and at its last round); the rounds between are checkpointed in
            memory (resident: decisions and exploits use them as any). A run killed
            between resumes from the durable ones, each member rolled back to its last
            (step, hyperparameters, generation) with a ``"fallback"`` event: it loses at
            most that many rounds. ``keep`` is at least this (default: this).
        **settings: As for :class:`genepool.AskTell` (and :func:`genepool.run`): ``mode``,
            ``seed``, ``storage``, ``checkpoints``, ``exploit``, ``explore``, ``name``,
            ``initial``, ``max_failures``, ``keep``, ... The run is synchronous.

    Returns:
        The run's :class:`~genepool.Result`; ``result.load()`` is the best member's
        state: ``{"format": 1, "model": its state_dict, "optimizer": ..., "metrics": ...}``.

    Raises:
        InvalidArgumentError: An argument is wrong (checked with one step and one
            evaluation of one member before the run is created or resumed).

    Example:
        >>> import torch
        >>> import genepool as gp
        >>> from genepool import vectorised as gpv
        >>> x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
        >>> y = x.sum(1, keepdim=True)
        >>> def data(generator, member):
        ...     idx = torch.randint(0, 64, (8,), generator=generator)
        ...     return x[idx], y[idx]
        >>> def loss(model, batch):
        ...     return torch.nn.functional.mse_loss(model(batch[0]), batch[1])
        >>> result = gpv.run(
        ...     model=lambda: torch.nn.Linear(3, 1), loss=loss, data=data, metric="loss",
        ...     mode="min", space=gp.Space(lr=gp.Float(0.01, 0.3, log=True)),
        ...     population=4, ready=gp.Every(5), budget=gp.Budget(steps=20), seed=0)
        >>> result.best.step, sorted(result.load()["model"])
        (20, ['bias', 'weight'])
    """
    steps = Steps(loss=loss, data=data, evaluate=evaluate, eval_data=eval_data, metric=metric)
    check(model=model, space=space, checkpoint_every=checkpoint_every, settings=settings)
    options = {} if optimizer_options is None else optimizer_options
    probed = probe(model, device, steps, space, optimizer, options)
    initial = settings.get("initial")
    n = len(initial) if population is None and isinstance(initial, Sequence) else population
    if isinstance(n, int):  # else AskTell refuses it
        check_fits(n, probed.member_bytes, probed.device)
    settings = {"keep": checkpoint_every, **settings, "synchronous": True}
    with AskTell(
        space, metric=metric, ready=ready, budget=budget, population=population, **settings
    ) as pbt:
        members = _Members(
            pbt, model=model, probed=probed, steps=steps, checkpoint_every=checkpoint_every
        )
        share = size_text(probed.member_bytes)
        log.info("vectorised run %r: %d members on %s, about %s each", pbt.name, members.n,
                 members.device, share)  # fmt: skip
        members.train()
        if members.stack.fallbacks:
            log.info("evaluation looped over the members for %s", members.stack.fallbacks)
    return pbt.result()  # closed: a store it opened is the result's, reopened if asked


class _Members(StackedDriver):
    """The population's slices and its optimizer, in the round of
    :class:`~genepool._stacked.StackedDriver`."""

    def __init__(
        self,
        pbt: AskTell,
        *,
        model: Any,
        probed: Probed,
        steps: Steps,
        checkpoint_every: int = 1,
    ) -> None:
        ctx = pbt.ctx
        configs = [m.hparams for m in ctx.store.population(ctx.name)]
        n = len(configs)
        super().__init__(pbt, n=n, metric=steps.metric, checkpoint_every=checkpoint_every)
        self.model, self.targets, self.steps = model, probed.targets, steps
        check_fits(n, probed.member_bytes, probed.device)
        self.seeds = [initial_seed(ctx.seed, i) for i in range(n)]
        self.stack = StackedMembers(model, seeds=self.seeds, device=probed.device)
        self.device = self.stack.device
        self.opt = self.targets.optimizer(self.stack.params, configs)
        self.fresh_opt = self.opt.member_state(0)  # before any step: a fresh start's
        self.weights = torch.ones(n, dtype=torch.float64, device=self.device)

    # -- starting points ----------------------------------------------------------------
    def start(self, claims: Mapping[int, Claim]) -> None:
        """Bring each claimed member's slice to its starting point, set its
        hyperparameters and its random stream for the round."""
        copies, loads, fresh = self.plan(claims)
        loads.update(dict.fromkeys(fresh, INITIAL))
        self._copy(copies, loads)
        for m, state in loads.items():
            ck = claims[m].checkpoint
            self._load(m, state, where=f"member {m}'s checkpoint {ck.id if ck else None!r}")
        self.started(claims)
        for m, claim in claims.items():
            self._apply(m, claim)

    def _copy(self, copies: dict[int, int], loads: dict[int, Any]) -> None:
        """Copy each donor's slice into its recipient's (``copies``: recipient -> donor),
        in place, every slice read before it is overwritten: a recipient first when no
        copy reads it; in a cycle, one donor's state is kept aside for its recipients to
        load (added to ``loads``)."""
        while copies:
            free = [d for d in copies if d not in copies.values()]
            if not free:
                donor = next(iter(copies.values()))
                kept = self._state(donor)
                for d in [d for d, s in copies.items() if s == donor]:
                    loads[d] = kept
                    del copies[d]
                continue
            for d in free:
                s = copies.pop(d)
                self.stack.copy_member(dst=d, src=s)
                self.opt.copy_member(dst=d, src=s, hparams=False)
                self.evaluated[d] = self.evaluated[s]

    def _load(self, m: int, state: Any, *, where: str = "a state") -> None:
        """Write a checkpoint's state (or, for ``INITIAL``, a fresh member) into slice ``m``.

        Raises:
            CheckpointError: The state is not a member's of this run's model and optimizer.
        """
        if state is INITIAL:
            initial = StackedMembers(self.model, seeds=[self.seeds[m]], device=self.device)
            self.stack.load_member_state(m, initial.member_state(0))
            self.opt.load_member_state(m, self.fresh_opt)
            self.evaluated[m] = None
            return
        self.evaluated[m] = load_member(self.stack, self.opt, m, state, where=where)

    def _apply(self, m: int, claim: Claim) -> None:
        """Set member ``m``'s hyperparameters and check them; seed its stream."""
        stack, opt, weights = self.stack, self.opt, self.weights
        self.targets.apply(m, claim.hparams, stack=stack, optimizer=opt, weights=weights)
        check_applied(
            self.targets.in_effect(m, stack=stack, optimizer=opt, weights=weights),
            claim.hparams,
            who=f"Member {m}",
            fix="this is a bug of genepool.vectorised: please report it.",
        )
        generator = torch.Generator(device=self.device)
        self.stack.set_generator(m, generator.manual_seed(int(claim.rng.integers(2**63))))

    def _state(self, m: int) -> dict[str, Any]:
        """Member ``m``'s checkpoint state (tensors on the CPU)."""
        return member_state(self.stack, self.opt, m, self.evaluated[m])

    def checkpoint_state(self, m: int, claim: Claim) -> dict[str, Any]:
        return self._state(m)

    # -- the round ------------------------------------------------------------------------
    def step_until_ready(self, claims: Mapping[int, Claim]) -> set[int]:
        """Step the claimed members together, each until its claim is ready, reporting
        each step; returns the members whose round failed (a score not a number)."""
        metric, n = self.steps.metric, self.n
        stepping = [m for m in sorted(claims) if not claims[m].ready]
        failed: set[int] = set()
        if self.steps.evaluate is not None:
            self.evaluate([m for m in stepping if self.evaluated[m] is None], failed)
        while stepping:
            batch = self.steps.batch(self.stack, stepping)
            try:
                out = self.stack.gradients(self.steps.loss, batch, weights=self.weights)
            except InvalidArgumentError as err:
                raise refused("loss", err) from err
            finite = out.finite(metric)
            ok = finite.tolist()
            if not all(ok):  # masked: its numbers never reach the others'
                for g in out.grads.values():
                    g[~finite] = 0
            active = None  # everyone: the optimizer's plain step, with no mask to apply
            if len(stepping) < n or not all(ok):
                active = torch.zeros(n, dtype=torch.bool, device=self.device)
                active[stepping] = True
                active &= finite
            self.opt.step(out.grads, active=active)
            due = [m for m in stepping if ok[m] and claims[m].ends_next()]
            if self.steps.evaluate is not None:
                self.evaluate(due, failed)
            losses = out.loss.tolist()
            more = {name: value.tolist() for name, value in out.metrics.items()}
            for m in stepping:
                report = {"loss": losses[m], **{k: v[m] for k, v in more.items()}}
                self.report(claims[m], m, report, ok=ok[m])
                if not ok[m]:
                    failed.add(m)
            stepping = [m for m in stepping if not claims[m].ready]
        return failed

    def evaluations(self) -> Mapping[str, Any]:
        return self.steps.evaluated(self.stack)
