"""Keras 3 (on its PyTorch backend: no TensorFlow): a population of models in one
process, exploits in place.

:func:`fit` drives a :class:`genepool.AskTell` run with one compiled Keras model per
member, made once per member and process. Each round of a member is one ``model.fit``
call that starts at the member's step (``initial_epoch``), so Keras' epoch is always the
member's step, after an exploit too, and nothing else runs meanwhile (a seeded run is
reproduced). A :class:`Callback` on each model joins genepool's round to Keras' loop:

- **step and eval**: each epoch is one step of the member: the epoch's logs (``loss``,
  the compiled metrics, and ``val_*`` with ``validation_data``) are reported
  (:meth:`genepool.Claim.report`); the budget and ``ready`` count epochs.
- **ready**: the round is told (:meth:`genepool.AskTell.tell`) with the member's state:
  the model's weights, every optimizer variable (``iterations``, moments, the learning
  rate), the model's seed generators, the epoch, and the member's random states (torch,
  NumPy, Python, Keras' global seed generator), as tensors in genepool's safe checkpoint
  format (no pickle); the ``fit`` call then ends.
- **exploit and explore**: the member's next round goes on in the same model and
  optimizer: after an exploit, the donor's weights and optimizer variables are assigned
  in place and the member's random streams (data order, dropout) reseeded from its own
  stream. Then each hyperparameter is set where it lives, by default the attribute of
  ``model.optimizer`` of its name (``learning_rate``, ``beta_1``, ``weight_decay``,
  ``momentum``, ...; see :class:`Optimizer`), and read back: a value in effect that
  differs from the decided one raises :class:`~genepool.HyperparameterNotAppliedError`.

A member claimed with a checkpoint and no model in this process (a resumed run) gets a
new model that loads it before its first step: it never starts again from step 0. An
exploit of a donor behind the member sets the member's step (and Keras' epoch) back to
the donor's. Unlike Lightning's trainers (:mod:`genepool.integrations.lightning`), no
``fit`` waits in a thread: Keras keeps its epoch in ``fit``'s own loop, which a round per
call sets. So your callbacks see ``on_train_begin`` and ``on_train_end`` once per round,
and an optimizer's ``use_ema`` averages, which Keras puts into the model as a ``fit``
ends, stay among the optimizer's variables (the checkpoints hold the weights trained).

Example (from ``examples/keras_pbt.py``)::

    rules = {"ready": gp.Every(2), "budget": gp.Budget(steps=epochs), "population": population}
    pbt = gp.AskTell(space, metric="val_accuracy", **rules)
    result = gpk.fit(pbt, model=make_model, **data(), verbose=0)
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from genepool._errors import InvalidArgumentError, TrainableError, invalid, missing_dependency

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported, here or later
try:
    import torch  # noqa: F401 - Keras' backend here
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_dependency("torch", "keras", "genepool.integrations.keras") from _err
try:
    import keras
except ImportError as _err:
    raise missing_dependency("keras", "keras", "genepool.integrations.keras") from _err
if keras.backend.backend() != "torch":
    raise InvalidArgumentError(
        f"genepool.integrations.keras needs Keras on its PyTorch backend; Keras was imported "
        f"with the {keras.backend.backend()!r} backend. Fix: set KERAS_BACKEND=torch before "
        "Keras is imported (or import genepool.integrations.keras first)."
    )

from genepool._claim import Claim
from genepool.asktell import AskTell
from genepool.integrations._keras_hparams import (
    Custom,
    Layers,
    Optimizer,
    Target,
    apply,
    in_effect,
    targets,
)
from genepool.integrations._keras_state import (
    STATE_FORMAT,
    STATE_VERSION,
    load,
    reseed,
    rng_state,
    saved,
    set_rng_state,
)
from genepool.result import Result

__all__ = [
    "STATE_FORMAT",
    "STATE_VERSION",
    "Callback",
    "Custom",
    "Layers",
    "Optimizer",
    "Target",
    "fit",
]

_log = logging.getLogger(__name__)
_FIT = "genepool.integrations.keras.fit"
#: Keras' ``epochs`` when the budget does not count epochs: no end but genepool's.
_NO_END = 2**31 - 1


def fit(
    pbt: AskTell,
    *,
    model: Callable[..., Any],
    hparams: Mapping[str, Target] | None = None,
    epochs: int | None = None,
    callbacks: Sequence[Any] = (),
    **fit_kwargs: Any,
) -> Result:
    """Train ``pbt``'s population with one Keras model per member, in this process.

    Args:
        pbt: The run (its metric is one of the epoch's logs: ``"val_loss"``,
            ``"val_accuracy"``, ...).
        model: Makes a member's compiled ``keras.Model``, called with its hyperparameters
            as keyword arguments, once per member and process (an exploit loads the
            donor's weights and optimizer variables into it).
        hparams: Where a hyperparameter lives when it is not the attribute of the
            model's optimizer of its name: :class:`Layers` (``keras.layers.Dropout``'s
            ``rate``), :class:`Custom` (your ``set`` and ``get``), or :class:`Optimizer`.
        epochs: Keras' last epoch (default: the budget's steps): at least the budget.
        callbacks: Your Keras callbacks, given to each member's ``fit`` after its own.
        **fit_kwargs: For ``model.fit`` (``x``, ``y``, ``batch_size``,
            ``validation_data``, ``verbose``, ...); ``initial_epoch`` is genepool's.

    Returns:
        The run's result (:meth:`genepool.AskTell.result`).

    Raises:
        InvalidArgumentError: ``initial_epoch`` given, a model not compiled, or a
            hyperparameter with no target (no attribute of the optimizer, unmapped).
        TrainableError: A member's ``fit`` ended before its round did (``epochs`` below
            the budget, a callback that stopped training).
        HyperparameterNotAppliedError: A hyperparameter in effect differs from the
            decided one after it was set.

    Example::

        result = gpk.fit(pbt, model=make_model, x=x, y=y, validation_data=(x_val, y_val))
    """
    if "initial_epoch" in fit_kwargs:
        raise invalid(
            _FIT,
            "initial_epoch",
            "not given",
            repr(fit_kwargs["initial_epoch"]),
            "Fix: leave it out: each round starts at its member's step.",
        )
    last = _epochs(pbt) if epochs is None else epochs
    members: dict[int, Callback] = {}
    while (claim := pbt.ask(timeout=math.inf)) is not None:
        with claim:
            member = members.get(claim.member)
            if member is None or (claim.checkpoint is None and member.trained):
                reseed(claim.rng)  # a fresh start: its weights drawn from its own stream
                member = members[claim.member] = Callback(pbt, model(**claim.hparams), hparams)
            member.claim = claim
            member.model.fit(
                **fit_kwargs,
                initial_epoch=claim.step,
                epochs=last,
                callbacks=[member, *callbacks],
            )
            if not claim.told:
                raise TrainableError(
                    f"member {claim.member}: its fit ended at step {claim.step}, before its "
                    f"round did. Fix: epochs={last} must be at least the budget's, and no "
                    "callback may stop training (EarlyStopping): genepool's budget ends it."
                )
    return pbt.result()


def _epochs(pbt: AskTell) -> int:
    """The budget's steps if it counts epochs; else no end but genepool's."""
    policy = pbt.ctx.policy
    if policy.ready.counter == "steps" and policy.budget.steps is not None:
        return math.ceil(policy.budget.steps)
    return _NO_END


class Callback(keras.callbacks.Callback):  # type: ignore[misc]
    """One member's side of the round in its model's ``fit`` (made by :func:`fit`).

    At the start of each round it puts the member's claim in effect (a checkpoint the
    model does not hold loaded in place, the hyperparameters set and read back); at the
    end of each epoch it reports the logs, and once the member is ready it tells the
    round with the model's state and ends the ``fit`` (see the module's docstring).

    Args:
        pbt: The run.
        model: The member's compiled model.
        hparams: Targets of hyperparameters other than the optimizer's attributes.

    Attributes:
        claim: The member's claim for this round.
        targets: Where each hyperparameter of the space lives.
    """

    def __init__(self, pbt: AskTell, model: Any, hparams: Mapping[str, Target] | None) -> None:
        super().__init__()
        self.pbt = pbt
        self.set_model(model)
        self.targets = targets(pbt.ctx.policy.space, model, hparams)
        self.claim: Claim | None = None
        self._at: tuple[int, int] | None = None  # (step, generation) the model holds
        self._rng: dict[str, Any] | None = None  # the random states it paused with
        self._ema = False  # the optimizer's use_ema, off while its fit ends

    @property
    def trained(self) -> bool:
        """Whether the model holds a state genepool put in effect."""
        return self._at is not None

    def in_effect(self) -> dict[str, Any]:
        """The hyperparameters in effect now, read from the model and its optimizer."""
        return in_effect(self.model, self.targets)

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        claim = self._open()
        ckpt = claim.checkpoint
        own = ckpt is not None and ckpt.member == claim.member
        if ckpt is not None and not (own and self._at == (claim.step, claim.generation)):
            payload = ckpt.load()  # its own trained elsewhere, or a donor's
            load(self.model, payload, seeds=own)
            if own:  # its own: its streams go on
                set_rng_state(payload["rng"])
            else:  # a donor's: streams of its own, reseeded
                reseed(claim.rng, model=self.model)
            _log.debug(
                "member %d: loaded member %d's checkpoint at step %d in place",
                claim.member,
                ckpt.member,
                ckpt.step,
            )
        elif self._rng is not None:  # its own state, held here: its streams go on
            set_rng_state(self._rng)
        apply(self.model, self.targets, claim.hparams)
        self._at = (claim.step, claim.generation)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        claim = self._open()
        claim.report(_metrics(logs or {}))
        if not claim.ready:
            return
        model = self.model

        def state() -> dict[str, Any]:
            return {**saved(model, epoch=claim.step), "rng": rng_state()}

        self.pbt.tell(claim, state=state)  # its decision comes as the next claim
        self._at = (claim.step, claim.generation)
        self._rng = rng_state()  # other members draw meanwhile
        model.stop_training = True
        self._ema = bool(getattr(model.optimizer, "use_ema", False))
        if self._ema:  # Keras would put the averages into the model as the fit ends
            model.optimizer.use_ema = False

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._ema:
            self.model.optimizer.use_ema, self._ema = True, False

    def _open(self) -> Claim:
        claim = self.claim
        if claim is None or claim.told:
            raise TrainableError(
                "the member's Keras callback holds no open claim: it runs in the fit calls "
                "of genepool.integrations.keras.fit only. Fix: leave it out of your own fit."
            )
        return claim


def _metrics(logs: Mapping[str, Any]) -> dict[str, float]:
    """The epoch's logs that are one number each."""
    out: dict[str, float] = {}
    for name, value in logs.items():
        try:
            out[str(name)] = float(value)
        except (TypeError, ValueError, RuntimeError):
            continue
    return out
