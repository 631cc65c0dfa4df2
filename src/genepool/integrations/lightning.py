"""PyTorch Lightning: a population of ``Trainer``s in one process, exploits in place.

:func:`fit` drives a :class:`genepool.AskTell` run with one Lightning ``Trainer`` per
member, each running its own ``Trainer.fit`` in a thread of this process, one at a time
(a run stays deterministic). A :class:`Callback` on each trainer joins genepool's round to
Lightning's loop:

- **step and eval**: at the end of each validation run (not the sanity check), the
  metrics Lightning holds (``trainer.callback_metrics``, the run's metric among them) are
  one step of the member (:meth:`genepool.Claim.report`): the budget and ``ready`` count
  validation runs. Choose them with Lightning's own ``check_val_every_n_epoch`` or
  ``val_check_interval``.
- **ready**: the member's round is told (:meth:`genepool.AskTell.tell`) with its state:
  the model, every optimizer and LR scheduler, the loop counters (epoch, global step) and
  the member's random states, in genepool's safe checkpoint format. The trainer then
  waits, in the middle of its loop, for the member's next claim.
- **exploit and explore**: when that claim comes, the member goes on in the same
  ``Trainer`` (nothing is restarted): after an exploit, the donor's model, optimizers,
  schedulers and loop counters are loaded in place and the member's data stream is
  reseeded from its own random stream; then the claim's hyperparameters are set on every
  optimizer and scheduler they map to (:class:`genepool.integrations.torch.Optimizer`: the
  schedulers' base values too, so no schedule sets an old rate back) and read back: a
  value in effect that differs from the decided one raises
  :class:`~genepool.HyperparameterNotAppliedError`.

A member claimed with a checkpoint and no trainer in this process (a resumed run, or one
trained by another process meanwhile) gets a new trainer that loads it before its first
step: it never starts again from step 0. A trainer whose ``fit`` ends on its own
(``max_epochs``, early stopping) before the member's budget is an error: genepool's
budget ends training (give the trainer ``max_epochs`` at least the budget's).

Example (``examples/lightning_pbt.py`` in full)::

    rules = {"ready": gp.Every(2), "budget": gp.Budget(steps=12), "population": 4}
    pbt = gp.AskTell(space, metric="val_acc", **rules)
    result = gpl.fit(pbt, module=Model, trainer=make_trainer, **loaders())
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from genepool._errors import invalid, missing_dependency
from genepool.asktell import AskTell
from genepool.result import Result

try:
    import lightning.pytorch as pl
except ImportError as _err:  # pragma: no cover - exercised only without lightning
    raise missing_dependency("lightning", "lightning", "genepool.integrations.lightning") from _err

from genepool._claim import Claim
from genepool.integrations._inplace import Framework, InPlace, Seat, drive
from genepool.integrations._saved import checked_layout
from genepool.integrations._torch_hparams import Optimizer, Target
from genepool.integrations.torch import TorchState
from genepool.space import Fixed

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer

__all__ = ["STATE_FORMAT", "STATE_VERSION", "Callback", "fit"]

#: Name and version of a member's saved layout; a newer version is refused.
STATE_FORMAT = "genepool.lightning"
STATE_VERSION = 1


def fit(
    pbt: AskTell,
    *,
    module: Callable[..., LightningModule],
    trainer: Callable[..., Trainer],
    hparams: Mapping[str, Target] | None = None,
    **fit_kwargs: Any,
) -> Result:
    """Train ``pbt``'s population with one Lightning trainer per member, in this process.

    Args:
        pbt: The run (its metric is what the modules log for validation).
        module: Makes a member's ``LightningModule``, called with its hyperparameters
            as keyword arguments (the module's class itself, say), once per member and
            process: an exploit loads the donor's weights into it.
        trainer: Makes a member's ``Trainer``, called as ``trainer(callbacks=[cb])``
            with the member's :class:`Callback`, which must be among the trainer's
            callbacks (one device: a world size above 1 is refused).
        hparams: Where each hyperparameter lives (:class:`~genepool.integrations.torch.
            Optimizer`, ``Modules`` or ``Custom`` targets; optimizers are named by their
            position, ``"0"``, ``"1"``, ..., in ``trainer.optimizers``; the module is
            ``"model"``). Default: each hyperparameter of the space is a param-group key
            of every optimizer (``lr``, ``momentum``, ``weight_decay``, ...); any other
            must be mapped here.
        **fit_kwargs: For ``Trainer.fit`` (``train_dataloaders``, ``val_dataloaders``,
            ``datamodule``); ``ckpt_path`` is genepool's to choose.

    Returns:
        The run's result (:meth:`genepool.AskTell.result`).

    Raises:
        InvalidArgumentError: ``ckpt_path`` given, a trainer with a world size above 1
            or without its callback, or a hyperparameter that maps to no optimizer.
        TrainableError: A trainer's ``fit`` ended before its member's budget.
        HyperparameterNotAppliedError: A hyperparameter in effect differs from the
            decided one after it was applied.
    """
    if "ckpt_path" in fit_kwargs:
        raise invalid(
            _FIT,
            "ckpt_path",
            "not given",
            repr(fit_kwargs["ckpt_path"]),
            "Fix: leave it out: each member resumes from its own checkpoint in genepool's store.",
        )

    def seat_for(claim: Claim) -> Seat:
        seat = Seat(ended_early=_ENDED_EARLY)
        callback = Callback(InPlace(pbt, seat), hparams)
        made = _trainer(trainer, callback)
        seat.run = functools.partial(made.fit, module(**claim.hparams), **fit_kwargs)
        return seat

    return drive(pbt, seat_for)


_FIT = "genepool.integrations.lightning.fit"
_ENDED_EARLY = (
    "give the Trainer max_epochs (or max_steps) enough for the whole budget, and no early "
    "stopping: genepool's budget ends training."
)


def _trainer(make: Callable[..., Trainer], callback: Callback) -> Trainer:
    """``make(callbacks=[callback])``, checked: the callback among its callbacks, one device."""
    trainer = make(callbacks=[callback])
    if not any(c is callback for c in getattr(trainer, "callbacks", ())):
        raise invalid(
            _FIT,
            "trainer",
            "a Trainer with the callback it is given among its callbacks",
            f"{trainer!r} without it",
            "Fix: pass on the callbacks it is called with: trainer=functools.partial("
            "L.Trainer, max_epochs=...), or a function of callbacks= that does.",
        )
    if trainer.world_size > 1:
        raise invalid(
            _FIT,
            "trainer",
            "a Trainer on one device (world size 1)",
            f"world size {trainer.world_size}",
            "Fix: one device per member for now (devices=1).",
        )
    return trainer


class Callback(pl.Callback):
    """One member's side of the round in a Lightning trainer (made by :func:`fit`).

    At the end of each validation run it reports the trainer's metrics; when the member
    is ready it tells the round with the trainer's state and waits for the next claim,
    which it applies in place (see the module's docstring).
    """

    def __init__(self, member: InPlace, hparams: Mapping[str, Target] | None) -> None:
        self.member = member
        self.hparams = None if hparams is None else dict(hparams)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.member.take(self._state(trainer, pl_module), starting=True)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.member.evaluated(_metrics(trainer), self._state(trainer, pl_module))

    @property
    def claim(self) -> Claim:
        """The member's open claim."""
        return self.member.claim

    def _state(self, trainer: Trainer, pl_module: LightningModule) -> _State:
        targets = self.hparams
        if targets is None:
            targets = _default_targets(self.member.pbt, trainer)
        return _State(trainer, pl_module, targets)


def _default_targets(pbt: AskTell, trainer: Trainer) -> dict[str, Target]:
    """Each hyperparameter of the space (but fixed ones) on the optimizers whose every
    param group has it as a key."""
    targets: dict[str, Target] = {}
    for name, domain in pbt.ctx.policy.space.items():
        if isinstance(domain, Fixed):  # never changes: nothing to set
            continue
        where = [
            str(i)
            for i, opt in enumerate(trainer.optimizers)
            if all(name in group for group in opt.param_groups)
        ]
        if not where:
            raise invalid(
                _FIT,
                "hparams",
                f"a target for {name!r}",
                "none: it is a key of no optimizer's param groups",
                "Fix: map it, e.g. hparams={'dropout': gpt.Modules('model', "
                "torch.nn.Dropout, 'p'), ...} (the module is named 'model'), or "
                "gpt.Custom(set, get).",
            )
        targets[name] = Optimizer(where[0], name) if len(where) == 1 else _Each(where, name)
    return targets


class _State(Framework):
    """A member's trainer as genepool saves and loads it: a :class:`TorchState` of the
    module (``"model"``), the optimizers and LR schedulers (by position), plus the loop
    counters."""

    def __init__(
        self, trainer: Trainer, pl_module: LightningModule, targets: Mapping[str, Target]
    ) -> None:
        self.trainer = trainer
        self.torch = TorchState(
            models={"model": pl_module},
            optimizers={str(i): o for i, o in enumerate(trainer.optimizers)},
            schedulers={str(i): c.scheduler for i, c in enumerate(trainer.lr_scheduler_configs)},
            hparams=targets,
            rng=False,
        )

    def torch_state(self) -> TorchState:
        return self.torch

    def saved(self) -> dict[str, Any]:
        """The member's state now (copies), in genepool's checkpoint format."""
        loop = self.trainer.fit_loop
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "torch": self.torch.state_dict(),
            "counters": {
                "epoch": loop.epoch_progress.current.completed,
                "epoch_end": int(loop.epoch_loop._num_ready_batches_reached()),
                "global_step": self.trainer.global_step,
                "batches_that_stepped": loop.epoch_loop.on_save_checkpoint().get(
                    "_batches_that_stepped", 0
                ),
            },
        }

    def load(self, payload: Mapping[str, Any], *, starting: bool) -> None:
        """Load a saved state (the member's own, or a donor's) into the trainer, in place:
        ``starting`` before its first step (``fit`` just began), else at the end of a
        validation run, where it was saved."""
        checked_layout(payload, fmt=STATE_FORMAT, version=STATE_VERSION, what="Lightning")
        self.torch.load_state_dict(payload["torch"])
        counters = payload["counters"]
        loop = self.trainer.fit_loop
        epoch = int(counters["epoch"])
        if starting:  # a new epoch begins: one that ended at the save counts as done
            epoch += int(counters["epoch_end"])
            _set_epochs(loop.epoch_progress, ready=epoch, done=epoch)
        else:  # in the middle of an epoch, as at the save
            _set_epochs(loop.epoch_progress, ready=epoch + 1, done=epoch)
        _set_global_step(self.trainer, int(counters["global_step"]))
        loop.epoch_loop.on_load_checkpoint(
            {"_batches_that_stepped": int(counters["batches_that_stepped"])}
        )


def _set_epochs(progress: Any, *, ready: int, done: int) -> None:
    """Set an epoch progress: ``ready`` epochs begun, ``done`` finished."""
    for part in (progress.total, progress.current):
        part.ready = part.started = ready
        part.processed = part.completed = done


def _set_global_step(trainer: Trainer, steps: int) -> None:
    """Set the trainer's count of optimizer steps (its ``global_step``)."""
    epoch_loop = trainer.fit_loop.epoch_loop
    auto = epoch_loop.automatic_optimization.optim_progress.optimizer.step.total
    manual = epoch_loop.manual_optimization.optim_step_progress.total
    for part in (auto, manual):
        part.ready = part.completed = steps


class _Each(Target):
    """A param-group key of several optimizers (by name), set and read on each."""

    def __init__(self, optimizers: list[str], key: str) -> None:
        self.parts = [Optimizer(name, key) for name in optimizers]

    def bind(self, state: TorchState, name: str) -> None:
        for part in self.parts:
            part.bind(state, name)

    def set(self, state: TorchState, value: Any) -> None:
        for part in self.parts:
            part.set(state, value)

    def get(self, state: TorchState) -> Any:
        values = [part.get(state) for part in self.parts]
        return values[0] if all(v == values[0] for v in values) else values


def _metrics(trainer: Trainer) -> dict[str, float]:
    """The trainer's logged metrics that are one number each."""
    out: dict[str, float] = {}
    for name, value in trainer.callback_metrics.items():
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            out[str(name)] = float(value)
    return out
