"""One member of a vectorised run, alone, as a :class:`genepool.Trainable`.

:func:`trainable` wraps the arguments of :func:`genepool.vectorised.run` (the model, the
loss, the data, the evaluation, the optimizer) into a trainable that trains one member
through the same code: a stack of one member, the same vectorised optimizer, the same
random streams. So a schedule found vectorised can be checked and reused anywhere:

- ``gp.replay(trainable, result.schedule())`` (and ``genepool replay file.py:name``)
  retraces one member's line alone, its scores those of the vectorised run to rounding;
- ``gp.run(trainable, ...)`` trains the same population one member at a time (serial,
  processes, Ray), and resumes a vectorised run's checkpoints, whose state it shares.

The random streams are the driver's: a member's initial weights are drawn under the first
number of its stream at generation 0 (:func:`initial_seed`), and at each ready round's
first step its torch generator (its batches, its dropout noise) is seeded with the next
number of its stream (``member.rng``), as the driver seeds it from the claim's.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from genepool._errors import CheckpointError, InvalidArgumentError, invalid, missing_dependency
from genepool._redact import shown
from genepool._rng import member_stream
from genepool._stacked import steps_between_readies
from genepool.trainable import Trainable
from genepool.vectorised._hparams import Targets
from genepool.vectorised._inputs import Steps
from genepool.vectorised._optim import VectorisedOptimizer
from genepool.vectorised._stack import StackedMembers

try:
    import torch
    from torch import Tensor
    from torch.utils._pytree import tree_map
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_dependency("torch", "torch", "genepool.vectorised") from _err

__all__ = [
    "STATE_FORMAT",
    "VectorisedMember",
    "initial_seed",
    "load_member",
    "member_state",
    "trainable",
]

#: The version of a member's checkpoint state: ``{"format", "model", "optimizer",
#: "metrics"}`` (its ``state_dict``, its optimizer state, its latest evaluation).
STATE_FORMAT = 1
_OWNER = "genepool.vectorised.trainable"


def initial_seed(seed: int, member: int) -> int:
    """The seed member ``member``'s initial weights are drawn with (``torch.manual_seed``
    around ``model()``): the first number of its stream at generation 0."""
    return _first_number(member_stream(seed, member, 0))


def _first_number(stream: Any) -> int:
    return int(stream.integers(2**63))


def member_state(
    stack: StackedMembers, optimizer: VectorisedOptimizer, i: int, evaluated: Any
) -> dict[str, Any]:
    """Member ``i``'s checkpoint state (tensors on the CPU)."""
    opt = tree_map(lambda v: v.cpu() if isinstance(v, Tensor) else v, optimizer.member_state(i))
    return {
        "format": STATE_FORMAT,
        "model": stack.member_state(i),
        "optimizer": opt,
        "metrics": dict(evaluated or {}),
    }


def load_member(
    stack: StackedMembers, optimizer: VectorisedOptimizer, i: int, state: Any, *, where: str
) -> dict[str, float] | None:
    """Write a checkpoint's state into member ``i``'s slice; return its evaluation.

    Raises:
        CheckpointError: The state is not a member's of this model and optimizer.
    """
    keys = ("format", "model", "optimizer", "metrics")
    if (
        not isinstance(state, Mapping)
        or state.get("format") != STATE_FORMAT
        or any(k not in state for k in keys)
    ):
        raise CheckpointError(
            f"The state of {where} is not a vectorised member's (format {STATE_FORMAT}: "
            f"{list(keys)}). Fix: resume a run with the driver that wrote it."
        )
    try:
        stack.load_member_state(i, state["model"])
    except InvalidArgumentError as err:
        raise CheckpointError(f"The model state of {where} does not fit: {err}") from err
    optimizer.load_member_state(i, state["optimizer"])
    metrics = state["metrics"]
    return dict(metrics) if isinstance(metrics, Mapping) and metrics else None


@dataclass(frozen=True)
class _Spec:
    """What :func:`trainable` was given."""

    model: Callable[[], Any]
    steps: Steps
    every: int
    optimizer: str
    options: Mapping[str, Any]
    device: Any


def trainable(
    *,
    model: Callable[[], Any],
    loss: Callable[[Any, Any], Any],
    data: Callable[[Any, int], Any],
    ready: Any,
    evaluate: Callable[[Any, Any], Any] | None = None,
    eval_data: Any = None,
    optimizer: str = "sgd",
    optimizer_options: Mapping[str, Any] | None = None,
    device: Any = None,
) -> type[VectorisedMember]:
    """One member of a vectorised run as a :class:`genepool.Trainable` class.

    Args:
        model, loss, data, evaluate, eval_data, optimizer, optimizer_options, device: As
            given to :func:`genepool.vectorised.run`.
        ready: The run's ready rule, ``gp.Every(k)`` counting steps (or ``k``): a round's
            first step seeds the member's torch generator, as the driver does.

    Returns:
        A :class:`VectorisedMember` subclass: for :func:`genepool.replay` and
        ``genepool replay`` (bind it to a name in a module), or :func:`genepool.run`.

    Example:
        >>> import torch
        >>> import genepool as gp
        >>> from genepool import vectorised as gpv
        >>> x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
        >>> data = gpv.Sample(x, x.sum(1, keepdim=True), batch_size=8)
        >>> def loss(model, batch):
        ...     return torch.nn.functional.mse_loss(model(batch[0]), batch[1])
        >>> spec = dict(model=lambda: torch.nn.Linear(3, 1), loss=loss, data=data)
        >>> result = gpv.run(**spec, metric="loss", mode="min", population=4, seed=0,
        ...     space=gp.Space(lr=gp.Float(0.01, 0.3, log=True)), ready=gp.Every(5),
        ...     budget=gp.Budget(steps=20))
        >>> alone = gp.replay(gpv.trainable(**spec, ready=gp.Every(5)), result.schedule())
        >>> alone.step, abs(alone.score - result.best.score) < 1e-6
        (20, True)
    """
    if not callable(model):
        must = "a function of no arguments returning an nn.Module"
        raise invalid(_OWNER, "model", must, shown(model))
    steps = Steps(loss=loss, data=data, evaluate=evaluate, eval_data=eval_data, metric=None)
    options = {} if optimizer_options is None else optimizer_options
    Targets((), optimizer=optimizer, options=options, dropouts=())  # refused here if wrong
    spec = _Spec(
        model, steps, steps_between_readies(ready, owner=_OWNER), optimizer, options, device
    )
    return type("VectorisedMember", (VectorisedMember,), {"spec": spec})


class VectorisedMember(Trainable):
    """One member of a vectorised run, alone: made by :func:`trainable`.

    Its state is the vectorised run's checkpoint state (``{"format": 1, "model",
    "optimizer", "metrics"}``), so each reads the other's checkpoints.
    """

    spec: ClassVar[_Spec]

    def setup(self, hparams: Mapping[str, Any]) -> None:
        spec = self.spec
        seed = _first_number(copy.deepcopy(self.member.rng))  # peeked: the stream goes on
        self.stack = StackedMembers(spec.model, seeds=[seed], device=spec.device)
        self.targets = Targets(
            hparams,
            optimizer=spec.optimizer,
            options=spec.options,
            dropouts=list(self.stack.dropout_rates),
        )
        self.optimizer = self.targets.optimizer(self.stack.params, [hparams])
        self.weights = torch.ones(1, dtype=torch.float64, device=self.stack.device)
        self.evaluated: dict[str, float] | None = None
        self.apply_hparams(hparams)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.targets.apply(
            0, hparams, stack=self.stack, optimizer=self.optimizer, weights=self.weights
        )

    def hparams_in_effect(self) -> Mapping[str, Any]:
        return self.targets.in_effect(
            0, stack=self.stack, optimizer=self.optimizer, weights=self.weights
        )

    def step(self) -> Mapping[str, Any]:
        spec, at, stack = self.spec, self.member.step, self.stack
        if at % spec.every == 0:  # a round's first step: its stream, as the driver seeds it
            generator = torch.Generator(device=stack.device)
            stack.set_generator(0, generator.manual_seed(_first_number(self.member.rng)))
        if spec.steps.evaluate is not None and self.evaluated is None:
            self.evaluated = self._evaluate()
        out = stack.gradients(spec.steps.loss, spec.steps.batch(stack, [0]), weights=self.weights)
        finite = bool(out.finite()[0])
        if finite:  # else the step is not taken, and its score not a number: a failure
            self.optimizer.step(out.grads)
        if spec.steps.evaluate is not None and (at + 1) % spec.every == 0:
            self.evaluated = self._evaluate()
        report = {"loss": float(out.loss[0])}
        report.update({name: float(value[0]) for name, value in out.metrics.items()})
        report.update(self.evaluated or {})
        if not finite:
            report = dict.fromkeys(report, math.nan)
        return report

    def _evaluate(self) -> dict[str, float]:
        return {name: values[0] for name, values in self.spec.steps.evaluated(self.stack).items()}

    def save(self) -> dict[str, Any]:
        return member_state(self.stack, self.optimizer, 0, self.evaluated)

    def load(self, state: Any) -> None:
        self.evaluated = load_member(self.stack, self.optimizer, 0, state, where="a state")
