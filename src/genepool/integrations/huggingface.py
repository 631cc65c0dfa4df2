"""Hugging Face ``transformers``: a population of ``Trainer``s in one process, exploits in
place.

:func:`train` drives a :class:`genepool.AskTell` run with one ``Trainer`` per member, each
running its own ``Trainer.train`` in a thread of this process, one at a time. A
:class:`Callback` on each trainer joins genepool's round to the trainer's loop, as the
Lightning integration does (:mod:`genepool.integrations.lightning`):

- **step and eval**: each evaluation (``eval_strategy="steps"`` and ``eval_steps``, or
  ``"epoch"``) is one step of the member, its metrics (``eval_loss``, and those of your
  ``compute_metrics``) reported: the budget and ``ready`` count evaluations.
- **ready**: the round is told with the member's state: the model, the optimizer, the LR
  scheduler, the trainer's global step and epoch, and the member's random states, in
  genepool's safe checkpoint format (no pickle); the trainer then waits for the member's
  next claim.
- **exploit and explore**: in the same ``Trainer``: a donor's model, optimizer, scheduler
  and global step loaded in place, the member's data stream reseeded from its own stream;
  then the hyperparameters set where the trainer reads them and read back
  (:class:`~genepool.HyperparameterNotAppliedError` if one differs): ``learning_rate`` on
  every param group and as the scheduler's base rate (a ``LambdaLR`` schedule would
  otherwise put the old rate back at its next step), ``weight_decay`` on the param groups
  that decay (not the biases and norms the ``Trainer`` leaves undecayed), ``adam_beta1``,
  ``adam_beta2``, ``adam_epsilon``, and ``warmup_steps`` in the schedule's own function.

Hugging Face's own checkpoints (``save_strategy``) are refused: every member's trainer
would write them into the same ``output_dir``. genepool checkpoints every member at every
ready evaluation, in its own store, and a resumed run goes on from those.

Example (``examples/huggingface_pbt.py`` in full)::

    pbt = gp.AskTell(space, metric="eval_loss", mode="min", **rules)
    result = gph.train(pbt, trainer=make_trainer)
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
    import transformers
except ImportError as _err:  # pragma: no cover - exercised only without transformers
    raise missing_dependency(
        "transformers", "huggingface", "genepool.integrations.huggingface"
    ) from _err

from genepool._claim import Claim
from genepool.integrations._inplace import Framework, InPlace, Seat, drive
from genepool.integrations._saved import checked_layout
from genepool.integrations._torch_hparams import Optimizer, Target
from genepool.integrations.torch import TorchState
from genepool.space import Fixed

if TYPE_CHECKING:
    from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments

__all__ = ["STATE_FORMAT", "STATE_VERSION", "Callback", "train"]

#: Name and version of a member's saved layout; a newer version is refused.
STATE_FORMAT = "genepool.huggingface"
STATE_VERSION = 1

_TRAIN = "genepool.integrations.huggingface.train"
_ENDED_EARLY = (
    "give the Trainer max_steps (or num_train_epochs) enough for the whole budget of "
    "evaluations, with room for a member that copies one behind it, and no early "
    "stopping: genepool's budget ends training."
)


def train(
    pbt: AskTell,
    *,
    trainer: Callable[..., Trainer],
    hparams: Mapping[str, Target] | None = None,
) -> Result:
    """Train ``pbt``'s population with one Hugging Face ``Trainer`` per member, here.

    Args:
        pbt: The run (its metric is one of the evaluation's, such as ``"eval_loss"``).
        trainer: Makes a member's ``Trainer`` (its model, arguments and data), called as
            ``trainer(callbacks=[cb])`` with the member's :class:`Callback`, which must
            be among its callbacks. One device, ``save_strategy="no"``, and evaluations
            (``eval_strategy`` not ``"no"``).
        hparams: Where each hyperparameter lives (targets of
            :mod:`genepool.integrations.torch`; the optimizer is ``"0"``, the model
            ``"model"``). Default: ``learning_rate``, ``weight_decay``, ``adam_beta1``,
            ``adam_beta2``, ``adam_epsilon`` and ``warmup_steps`` as the ``Trainer``
            reads them; any other must be mapped here.

    Returns:
        The run's result (:meth:`genepool.AskTell.result`).

    Raises:
        InvalidArgumentError: A trainer without its callback, on several devices, with
            ``save_strategy`` or without evaluations; a hyperparameter with no target.
        TrainableError: A trainer's loop ended before its member's budget.
        HyperparameterNotAppliedError: A hyperparameter in effect differs from the
            decided one after it was applied.
    """

    def seat_for(claim: Claim) -> Seat:
        del claim  # the trainer takes its hyperparameters from the claim, in place
        seat = Seat(ended_early=_ENDED_EARLY)
        callback = Callback(InPlace(pbt, seat), hparams)
        made = _trainer(trainer, callback)
        callback.trainer = made
        seat.run = functools.partial(_train, made)
        return seat

    return drive(pbt, seat_for)


def _trainer(make: Callable[..., Trainer], callback: Callback) -> Trainer:
    """``make(callbacks=[callback])``, checked."""
    trainer = make(callbacks=[callback])
    args = trainer.args
    if not any(c is callback for c in trainer.callback_handler.callbacks):
        refused = ("a Trainer with the callback it is given", f"{trainer!r} without it")
        fix = "Fix: Trainer(..., callbacks=callbacks) with the callbacks it is called with."
    elif args.world_size > 1:
        refused = ("a Trainer on one device", f"world size {args.world_size}")
        fix = "Fix: one device per member for now."
    elif _value(args.save_strategy) != "no":
        refused = ("save_strategy='no'", repr(args.save_strategy))
        fix = (
            "Fix: save_strategy='no': genepool checkpoints every member at every ready "
            "evaluation, where every member's Trainer would write into one output_dir."
        )
    elif _value(args.eval_strategy) == "no":
        refused = ("evaluations (a member's steps)", "eval_strategy='no'")
        fix = "Fix: eval_strategy='steps' with eval_steps=..., or 'epoch'."
    else:
        return trainer
    raise invalid(_TRAIN, "trainer", refused[0], refused[1], fix)


def _train(trainer: Trainer) -> None:
    trainer.train()


def _value(option: Any) -> str:
    """An option of ``TrainingArguments`` as its string (an enum's value)."""
    return str(getattr(option, "value", option))


class Callback(transformers.TrainerCallback):
    """One member's side of the round in a ``Trainer`` (made by :func:`train`)."""

    def __init__(self, member: InPlace, hparams: Mapping[str, Target] | None) -> None:
        self.member = member
        self.hparams = None if hparams is None else dict(hparams)
        self.trainer: Trainer | None = None

    @property
    def claim(self) -> Claim:
        """The member's open claim."""
        return self.member.claim

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.member.take(self._state(state, kw), starting=True)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: Mapping[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        self.member.evaluated(_numbers(metrics or {}), self._state(state, kw))

    def _state(self, state: TrainerState, kw: Mapping[str, Any]) -> _State:
        model, optimizer, scheduler = kw["model"], kw["optimizer"], kw["lr_scheduler"]
        torch_state = TorchState(
            models={"model": model},
            optimizers={"0": optimizer},
            schedulers={} if scheduler is None else {"0": scheduler},
            rng=False,
        )
        targets = self.hparams
        if targets is None:
            targets = self._default_targets(torch_state)
        for name, target in targets.items():
            target.bind(torch_state, name)
        torch_state.hparams = dict(targets)
        return _State(state, torch_state)

    def _default_targets(self, ts: TorchState) -> dict[str, Target]:
        """Each hyperparameter of the space (but fixed ones) where the ``Trainer`` reads
        the argument of that name."""
        targets: dict[str, Target] = {}
        varied = [
            n for n, d in self.member.pbt.ctx.policy.space.items() if not isinstance(d, Fixed)
        ]
        for name in varied:
            if name == "learning_rate":
                targets[name] = Optimizer("0", "lr")
            elif name == "weight_decay":
                targets[name] = Optimizer("0", "weight_decay", groups=self._decaying(ts))
            elif name in ("adam_beta1", "adam_beta2"):
                targets[name] = Optimizer("0", "betas", index=int(name[-1]) - 1)
            elif name == "adam_epsilon":
                targets[name] = Optimizer("0", "eps")
            elif name != "warmup_steps":
                raise invalid(
                    _TRAIN,
                    "hparams",
                    f"a target for {name!r}",
                    "none: the Trainer reads no argument of that name in training",
                    "Fix: name it as TrainingArguments does (learning_rate, weight_decay, "
                    "adam_beta1, adam_beta2, adam_epsilon, warmup_steps), or map it: "
                    "hparams={'dropout': gpt.Modules('model', torch.nn.Dropout, 'p'), ...}.",
                )
        if "warmup_steps" in varied:
            targets["warmup_steps"] = Warmup()  # last: it sets the rate in effect again
        return targets

    def _decaying(self, ts: TorchState) -> list[int]:
        """The param groups the ``Trainer`` decays (it leaves biases and norms out)."""
        trainer, opt = self.trainer, ts.optimizers["0"]
        if trainer is None:  # pragma: no cover - train() sets it
            return list(range(len(opt.param_groups)))
        model = ts.models["model"]
        names = set(trainer.get_decay_parameter_names(model))
        decayed = {id(p) for n, p in model.named_parameters() if n in names}
        return [
            i
            for i, group in enumerate(opt.param_groups)
            if any(id(p) in decayed for p in group["params"])
        ]


class Warmup(Target):
    """``warmup_steps`` of a ``transformers`` schedule: the ``num_warmup_steps`` of its
    ``LambdaLR`` function (``get_linear_schedule_with_warmup`` and its kin), set in place,
    with the rate in effect made again from the base rate and the new function."""

    def bind(self, state: TorchState, name: str) -> None:
        if not self._functions(state):
            raise invalid(
                _TRAIN,
                f"hparams[{name!r}]",
                "a Trainer whose LR schedule has warm-up steps (a transformers schedule)",
                f"{list(state.schedulers.values())!r}",
                "Fix: lr_scheduler_type 'linear', 'cosine', 'constant_with_warmup', ..., or "
                "map it with gpt.Custom(set, get).",
            )

    @staticmethod
    def _functions(state: TorchState) -> list[tuple[Any, int, functools.partial[Any]]]:
        found = []
        for sched in state.schedulers.values():
            for i, fn in enumerate(getattr(sched, "lr_lambdas", ())):
                if isinstance(fn, functools.partial) and "num_warmup_steps" in fn.keywords:
                    found.append((sched, i, fn))
        return found

    def set(self, state: TorchState, value: Any) -> None:
        for sched, i, fn in self._functions(state):
            new = functools.partial(fn.func, *fn.args, **{**fn.keywords, "num_warmup_steps": value})
            sched.lr_lambdas[i] = new
            group = sched.optimizer.param_groups[i]
            group["lr"] = sched.base_lrs[i] * new(max(0, sched.last_epoch))
            last = getattr(sched, "_last_lr", None)
            if isinstance(last, list) and i < len(last):
                last[i] = group["lr"]

    def get(self, state: TorchState) -> Any:
        values = [fn.keywords["num_warmup_steps"] for _, _, fn in self._functions(state)]
        return values[0] if all(v == values[0] for v in values) else values


class _State(Framework):
    """A member's ``Trainer`` as genepool saves and loads it."""

    def __init__(self, state: TrainerState, torch_state: TorchState) -> None:
        self.state, self.torch = state, torch_state

    def torch_state(self) -> TorchState:
        return self.torch

    def saved(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "torch": self.torch.state_dict(),
            "counters": {
                "global_step": int(self.state.global_step),
                "epoch": float(self.state.epoch or 0.0),
            },
        }

    def load(self, payload: Mapping[str, Any], *, starting: bool) -> None:
        checked_layout(payload, fmt=STATE_FORMAT, version=STATE_VERSION, what="Hugging Face")
        self.torch.load_state_dict(payload["torch"])
        counters = payload["counters"]
        self.state.global_step = int(counters["global_step"])
        self.state.epoch = float(counters["epoch"])


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The evaluation's metrics that are numbers."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        with contextlib.suppress(TypeError, ValueError):
            out[str(name)] = float(value)
    return out
