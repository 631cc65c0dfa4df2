"""One member of a JAX population, alone, as a :class:`genepool.Trainable`.

:func:`trainable` wraps the functions given to :func:`genepool.integrations.jax.run`
(``init``, ``update``, ``evaluate``, the optimizer) into a trainable that trains one
member through the same compiled code (a stack of one) and the same random streams:

- it is the single-member path for a plain JAX/optax script: ``gp.run(trainable, ...)``
  trains a population one member at a time (serial, processes, Ray), its hyperparameters
  written into ``opt_state.hyperparams`` and read back after every change;
- ``gp.replay(trainable, result.schedule())`` (and ``genepool replay``) retraces one
  member of a vectorised run alone, its scores those of the run to float32 rounding.

The streams: a member's initial key is the first draw of its stream at generation 0
(:func:`initial_key`); at each round's first step its round key is the next draw of its
stream (``member.rng``), as the driver draws it from the claim's, and the step's key is the
round key folded with the step. Its state is the driver's checkpoint state (an
:class:`~genepool.integrations.jax.OptaxState` layout), so each reads the other's.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from genepool._errors import missing_dependency
from genepool._rng import member_stream
from genepool._stacked import steps_between_readies
from genepool.integrations.jax._hparams import Hyperparams
from genepool.integrations.jax._program import Program
from genepool.integrations.jax._program import program as make_program
from genepool.integrations.jax._stack import Stack
from genepool.integrations.jax._state import read
from genepool.integrations.jax._tree import key_data
from genepool.trainable import Trainable

try:
    import jax  # noqa: F401
except ImportError as _err:  # pragma: no cover - exercised only without jax
    raise missing_dependency("jax", "jax", "genepool.integrations.jax") from _err

__all__ = ["JaxMember", "initial_key", "trainable"]

_OWNER = "genepool.integrations.jax.trainable"


def initial_key(seed: int, member: int) -> np.ndarray[Any, Any]:
    """The key data member ``member``'s initial params are drawn with: the first draw of
    its stream at generation 0."""
    return key_data(member_stream(seed, member, 0))


@dataclass(frozen=True)
class _Spec:
    """What :func:`trainable` was given, checked and compiled once for every instance."""

    program: Program
    opt_state: Any  # one member's, shapes only
    every: int
    mapping: Mapping[str, str] | None


def trainable(
    *,
    init: Callable[[Any], Any],
    update: Callable[[Any, Any, Any], Any],
    optimizer: Any,
    ready: Any,
    evaluate: Callable[[Any], Any] | None = None,
    hparams: Mapping[str, str] | None = None,
) -> type[JaxMember]:
    """One member of a JAX population as a :class:`genepool.Trainable` class.

    Args:
        init, update, optimizer, evaluate, hparams: As given to
            :func:`genepool.integrations.jax.run`.
        ready: The run's ready rule, ``gp.Every(k)`` counting steps (or ``k``): a round's
            first step draws the member's round key, and its last one evaluates.

    Returns:
        A :class:`JaxMember` subclass, for :func:`genepool.run`, :func:`genepool.replay`
        and ``genepool replay`` (bind it to a name in a module).

    Raises:
        InvalidArgumentError: An argument is wrong (each function is traced once, on
            shapes, to check it).

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import genepool as gp
        >>> from genepool.integrations import jax as gpj
        >>> opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
        >>> def update(params, opt_state, key):
        ...     target = jax.random.normal(key, (3,))
        ...     loss, grads = jax.value_and_grad(lambda p: ((p - target) ** 2).sum())(params)
        ...     updates, opt_state = opt.update(grads, opt_state, params)
        ...     return params + updates, opt_state, loss
        >>> spec = dict(init=lambda key: jnp.zeros(3), update=update, optimizer=opt)
        >>> result = gp.run(gpj.trainable(**spec, ready=gp.Every(2)),
        ...     gp.Space(learning_rate=gp.Float(0.01, 0.3)), metric="loss", mode="min",
        ...     population=2, ready=gp.Every(2), budget=gp.Budget(steps=4), seed=0)
        >>> result.best.step
        4
    """
    program = make_program(
        init=init, update=update, optimizer=optimizer, evaluate=evaluate, owner=_OWNER
    )
    _, opt_state, _ = program.check()
    Hyperparams(opt_state, (), mapping=hparams, owner=_OWNER)  # a mapping refused here if wrong
    spec = _Spec(program, opt_state, steps_between_readies(ready, owner=_OWNER), hparams)
    return type("JaxMember", (JaxMember,), {"spec": spec})


class JaxMember(Trainable):
    """One member of a JAX population, alone: made by :func:`trainable`.

    Its state is the population's checkpoint state (an
    :class:`~genepool.integrations.jax.OptaxState` layout with the latest evaluation in
    ``"metrics"``), so each reads the other's checkpoints.
    """

    spec: ClassVar[_Spec]

    def setup(self, hparams: Mapping[str, Any]) -> None:
        spec = self.spec
        first = key_data(copy.deepcopy(self.member.rng))  # peeked: the stream goes on
        names = Hyperparams(spec.opt_state, hparams, mapping=spec.mapping, owner=_OWNER)
        self.stack = Stack(spec.program, first[None], names)
        self.round: np.ndarray[Any, Any] | None = None
        self.evaluated: dict[str, float] | None = None
        self.apply_hparams(hparams)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.stack.set_hparams({0: hparams})

    def hparams_in_effect(self) -> Mapping[str, Any]:
        return self.stack.hparams()[0]

    def step(self) -> Mapping[str, Any]:
        at, every = self.member.step, self.spec.every
        if at % every == 0 or self.round is None:  # a round's first step: its key
            self.round = key_data(self.member.rng)[None]
        if self.spec.program.evaluate is not None and self.evaluated is None:
            self.evaluated = self._evaluate()
        metrics, finite = self.stack.step(self.round, np.array([at]), np.ones(1, dtype=bool))
        if self.spec.program.evaluate is not None and (at + 1) % every == 0:
            self.evaluated = self._evaluate()
        report = {name: float(value[0]) for name, value in metrics.items()}
        report.update(self.evaluated or {})
        if not bool(finite[0]):  # the step was not taken: a failure
            report = dict.fromkeys(report, math.nan)
        return report

    def _evaluate(self) -> dict[str, float]:
        return {name: float(values[0]) for name, values in self.stack.evaluated().items()}

    def save(self) -> dict[str, Any]:
        member = self.member
        key = None if self.round is None else self.round[0]
        owner = (member.id, member.generation)
        return self.stack.member_state(0, self.evaluated, step=member.step, key=key, owner=owner)

    def load(self, state: Any) -> None:
        self.stack.load({0: state}, where={0: "a state"})
        plain = read(state, where="a state")
        metrics, key, owner = plain.get("metrics"), plain.get("key"), plain.get("owner")
        self.evaluated = dict(metrics) if isinstance(metrics, Mapping) and metrics else None
        # its own state, of its generation (a resume, maybe in the middle of a round):
        # the round's key goes on; another's (an exploit): the next round draws its own
        own = isinstance(owner, list) and owner == [self.member.id, self.member.generation]
        self.round = np.asarray(key, dtype=np.uint32)[None] if own and key is not None else None
