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
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from genepool._errors import (
    InvalidArgumentError,
    TrainableError,
    invalid,
    missing_dependency,
)
from genepool.asktell import AskTell
from genepool.result import Result

try:
    import lightning.pytorch as pl
except ImportError as _err:  # pragma: no cover - exercised only without lightning
    raise missing_dependency("lightning", "lightning", "genepool.integrations.lightning") from _err

from genepool._claim import Claim
from genepool.integrations._torch_hparams import Optimizer, Target
from genepool.integrations._torch_rng import (
    global_rng_state,
    reseed_global_rng,
    set_global_rng_state,
)
from genepool.integrations.torch import TorchState
from genepool.space import Fixed

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer

__all__ = ["STATE_FORMAT", "STATE_VERSION", "Callback", "fit"]

#: Name and version of a member's saved layout; a newer version is refused.
STATE_FORMAT = "genepool.lightning"
STATE_VERSION = 1

#: How long (seconds) a wait for the other side of a handoff sleeps between checks, so
#: that a Ctrl-C reaches the main thread.
_WAIT = 0.2


class _Unwind(BaseException):
    """Raised in a member's trainer to end its ``fit`` (the run is over, or aborts)."""


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
            position, ``"0"``, ``"1"``, ..., in ``trainer.optimizers``). Default: each
            hyperparameter of the space is a param-group key of every optimizer (``lr``,
            ``momentum``, ``weight_decay``, ...); any other must be mapped here.
        **fit_kwargs: For ``Trainer.fit`` (``train_dataloaders``, ``val_dataloaders``,
            ``datamodule``); ``ckpt_path`` is genepool's to choose.

    Returns:
        The run's result (:meth:`genepool.AskTell.result`).

    Raises:
        InvalidArgumentError: ``ckpt_path`` given, a trainer with a world size above 1,
            or a hyperparameter that maps to no optimizer.
        TrainableError: A trainer's ``fit`` ended before its member's budget.
        HyperparameterNotAppliedError: A hyperparameter in effect differs from the
            decided one after it was applied.
    """
    if "ckpt_path" in fit_kwargs:
        raise invalid(
            "genepool.integrations.lightning.fit",
            "ckpt_path",
            "not given",
            repr(fit_kwargs["ckpt_path"]),
            "Fix: leave it out: each member resumes from its own checkpoint in genepool's store.",
        )
    seats: dict[int, _Seat] = {}
    try:
        while (claim := pbt.ask(timeout=float("inf"))) is not None:
            seat = seats.get(claim.member)
            if seat is None or seat.ended:
                seat = seats[claim.member] = _Seat(
                    pbt, module(**claim.hparams), trainer, hparams, fit_kwargs
                )
            with claim:
                seat.train(claim)
        return pbt.result()
    finally:
        for seat in seats.values():
            seat.close()


class _Seat:
    """One member's trainer, running ``fit`` in its own thread; the driver and the thread
    hand control to each other, so that one of them runs at a time."""

    def __init__(
        self,
        pbt: AskTell,
        module: LightningModule,
        make_trainer: Callable[..., Trainer],
        hparams: Mapping[str, Target] | None,
        fit_kwargs: Mapping[str, Any],
    ) -> None:
        self.callback = Callback(pbt, hparams, handoff=self)
        trainer = make_trainer(callbacks=[self.callback])
        if not any(c is self.callback for c in getattr(trainer, "callbacks", ())):
            raise invalid(
                "genepool.integrations.lightning.fit",
                "trainer",
                "a Trainer with the callback it is given among its callbacks",
                f"{trainer!r} without it",
                "Fix: pass on the callbacks it is called with: trainer=functools.partial("
                "L.Trainer, max_epochs=...), or a function of callbacks= that does.",
            )
        if trainer.world_size > 1:
            raise invalid(
                "genepool.integrations.lightning.fit",
                "trainer",
                "a Trainer on one device (world size 1)",
                f"world size {trainer.world_size}",
                "Fix: one device per member for now (devices=1).",
            )
        self.trainer, self.module = trainer, module
        self.ended = False
        self.error: BaseException | None = None
        self._to_trainer = threading.Semaphore(0)
        self._to_driver = threading.Semaphore(0)
        self._unwind = False
        self._thread = threading.Thread(
            target=self._main, args=(dict(fit_kwargs),), name="genepool-lightning", daemon=True
        )

    # -- driver side -----------------------------------------------------------------
    def train(self, claim: Claim) -> None:
        """Train ``claim``'s round in this seat's trainer; raise what the trainer raised."""
        self.callback.claim = claim
        if not self._thread.is_alive() and not self.ended:
            self._thread.start()
        else:
            self._to_trainer.release()
        _wait(self._to_driver)
        if self.error is not None:
            raise self.error
        if self.ended and not claim.told:
            raise TrainableError(
                f"member {claim.member}: Trainer.fit ended at step {claim.step} of the member "
                "(validation runs), before its budget, with its round untold. Fix: give the "
                "Trainer max_epochs (or max_steps) enough for the whole budget, and no early "
                "stopping: genepool's budget ends training."
            )

    def close(self) -> None:
        """End the trainer's ``fit`` if it waits for a claim."""
        if self._thread.is_alive():
            self._unwind = True
            self._to_trainer.release()
            self._thread.join()

    # -- trainer side ----------------------------------------------------------------
    def _main(self, fit_kwargs: dict[str, Any]) -> None:
        try:
            self.trainer.fit(self.module, **fit_kwargs)
        except _Unwind:
            pass
        except BaseException as err:  # handed to the driver, which raises it
            self.error = err
        finally:
            self.ended = True
            self._to_driver.release()

    def pause(self) -> None:
        """From the trainer's thread, after a tell: hand control back and wait for the
        member's next claim (:class:`_Unwind` if the run is over)."""
        self._to_driver.release()
        _wait(self._to_trainer)
        if self._unwind:
            raise _Unwind()


def _wait(semaphore: threading.Semaphore) -> None:
    while not semaphore.acquire(timeout=_WAIT):  # short waits: a Ctrl-C gets through
        pass


class Callback(pl.Callback):
    """One member's side of the round in a Lightning trainer (made by :func:`fit`).

    At the end of each validation run it reports the trainer's metrics; when the member
    is ready it tells the round with the trainer's state and waits for the next claim,
    which it applies in place (see the module's docstring).
    """

    def __init__(
        self, pbt: AskTell, hparams: Mapping[str, Target] | None, *, handoff: _Seat
    ) -> None:
        self.pbt = pbt
        self.hparams = None if hparams is None else dict(hparams)
        self.claim: Claim | None = None
        self._handoff = handoff
        self._at: tuple[int, int] | None = None  # (step, generation) the trainer holds
        self._rng: dict[str, Any] | None = None  # the random states it paused with

    # -- Lightning's hooks -----------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._take(trainer, pl_module, starting=True)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        claim = self._claim()
        claim.report(_metrics(trainer))
        if not claim.ready:
            return
        state = _State(trainer, pl_module, self._targets(trainer, pl_module))
        decision = self.pbt.tell(claim, state=state.saved)
        self._at = (claim.step, claim.generation)
        del decision  # carried out by the next claim (a stopped member gets none)
        self._rng = global_rng_state()  # other members' trainers draw meanwhile
        self._handoff.pause()  # until the member's next claim
        self._take(trainer, pl_module, starting=False)

    # -- the claim, applied ------------------------------------------------------------
    def _claim(self) -> Claim:
        if self.claim is None or self.claim.told:  # pragma: no cover - fit() hands one
            raise TrainableError("the Lightning callback holds no open claim")
        return self.claim

    def _take(self, trainer: Trainer, pl_module: LightningModule, *, starting: bool) -> None:
        """Put the claim in effect: its checkpoint loaded unless the trainer holds it
        already, its hyperparameters set and verified, the member's random states."""
        claim = self._claim()
        state = _State(trainer, pl_module, self._targets(trainer, pl_module))
        ckpt = claim.checkpoint
        held = ckpt is not None and ckpt.member == claim.member
        held = held and self._at == (claim.step, claim.generation)
        if ckpt is not None and not held:
            payload = ckpt.load()
            state.load(payload, starting=starting)
            if ckpt.member == claim.member:  # its own: its data stream goes on
                set_global_rng_state(payload["rng"])
            else:  # a donor's: a stream of its own, reseeded
                reseed_global_rng(claim.rng)
        elif ckpt is None and starting:
            reseed_global_rng(claim.rng)
        elif self._rng is not None:  # its own state, held here: its stream goes on
            set_global_rng_state(self._rng)
        state.torch.apply(claim.hparams)
        self._at = (claim.step, claim.generation)

    def _targets(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Target]:
        if self.hparams is not None:
            return self.hparams
        space = self.pbt.ctx.policy.space
        targets: dict[str, Target] = {}
        for name, domain in space.items():
            if isinstance(domain, Fixed):  # never changes: nothing to set
                continue
            where = [
                str(i)
                for i, opt in enumerate(trainer.optimizers)
                if all(name in group for group in opt.param_groups)
            ]
            if not where:
                raise invalid(
                    "genepool.integrations.lightning.fit",
                    "hparams",
                    f"a target for {name!r}",
                    "none: it is a key of no optimizer's param groups",
                    "Fix: map it, e.g. hparams={'dropout': gpt.Modules('model', "
                    "torch.nn.Dropout, 'p'), ...} (the model is named 'model'), or "
                    "gpt.Custom(set, get).",
                )
            targets[name] = Optimizer(where[0], name) if len(where) == 1 else _Each(where, name)
        return targets


class _State:
    """A member's trainer as genepool saves and loads it: a :class:`TorchState` of the
    module (``"model"``), the optimizers and LR schedulers (by position), plus the loop
    counters and random states."""

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
            "rng": global_rng_state(),
        }

    def load(self, payload: Any, *, starting: bool) -> None:
        """Load a saved state (the member's own, or a donor's) into the trainer, in place:
        ``starting`` before its first step (``fit`` just began), else at the end of a
        validation run, where it was saved."""
        if not isinstance(payload, Mapping) or payload.get("format") != STATE_FORMAT:
            raise InvalidArgumentError(
                "the checkpoint is not a Lightning member's state (genepool.lightning); it "
                "was written by another trainable. Fix: resume a run with the trainable "
                "that wrote it."
            )
        if int(payload.get("version", 0)) > STATE_VERSION:
            raise InvalidArgumentError(
                f"the checkpoint's Lightning state is version {payload['version']}, newer "
                f"than this genepool's {STATE_VERSION}. Fix: upgrade genepool."
            )
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
