"""Where a Keras member's hyperparameters live: set each one on the model, and read back
the value in effect.

A :class:`Target` is one place: :class:`Optimizer` (an attribute of the model's
optimizer: ``learning_rate``, ``beta_1``, ``weight_decay``, ``momentum``, ...),
:class:`Layers` (an attribute of every layer of a type, such as a dropout rate) or
:class:`Custom` (a pair of your functions). :func:`targets` maps a space's names to them,
and :func:`apply` sets the values and reads them back.

The names are public from :mod:`genepool.integrations.keras`, which imports Keras on its
PyTorch backend first; this module uses Keras only through the model it is given.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from genepool._errors import invalid
from genepool.integrations._torch_hparams import same
from genepool.round import check_applied
from genepool.space import Fixed, Space

__all__ = ["Custom", "Layers", "Optimizer", "Target", "apply", "in_effect", "targets"]

_FIT = "genepool.integrations.keras.fit"
_MAP_FIX = (
    "Fix: map it, e.g. hparams={'dropout': gpk.Layers(keras.layers.Dropout, 'rate')}, or "
    "gpk.Custom(set=lambda model, value: ..., get=lambda model: ...)."
)


class Target:
    """Where a hyperparameter lives: set it on a compiled Keras model, and read it back."""

    def bind(self, model: Any, name: str) -> None:
        """Check that the target exists in ``model`` (called once per model)."""

    @abstractmethod
    def set(self, model: Any, value: Any) -> None:
        """Put ``value`` in effect."""

    @abstractmethod
    def get(self, model: Any) -> Any:
        """The value in effect now (a list when parts disagree)."""


class Optimizer(Target):
    """An attribute of the model's optimizer (``model.optimizer``, or the optimizer a
    ``LossScaleOptimizer`` wraps), set in place.

    A Keras variable (``learning_rate``) is assigned, keeping its dtype; a plain value
    (``beta_1``, ``weight_decay``, ``momentum``, ``clipnorm``, ...) is replaced. Keras
    optimizers read both at every step. A ``learning_rate`` that is a schedule is
    refused: map its own attribute with :class:`Custom`.

    Example:
        >>> Optimizer("beta_1")
        Optimizer('beta_1')
    """

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute

    def __repr__(self) -> str:
        return f"Optimizer({self.attribute!r})"

    def bind(self, model: Any, name: str) -> None:
        opt = _optimizer(model)
        kind = type(opt).__name__
        if self.attribute == "iterations" or not hasattr(opt, self.attribute):
            raise invalid(
                _FIT,
                "hparams",
                f"a target for {name!r}",
                f"none: {self.attribute!r} is no hyperparameter of its optimizer, {kind}",
                _MAP_FIX,
            )
        value = getattr(opt, self.attribute)
        if not (_is_variable(value) or value is None or isinstance(value, bool | int | float)):
            what = "a schedule (computed at each step)" if _is_tensor(value) else "no number"
            raise invalid(
                _FIT,
                "hparams",
                f"a target for {name!r} that holds a number",
                f"the optimizer's {self.attribute!r}: {what}, {type(value).__name__}",
                f"Fix: give the {kind} a number as {self.attribute}, or map {name!r} to "
                "what to change: hparams={" + repr(name) + ": gpk.Custom(set=..., get=...)}.",
            )

    def set(self, model: Any, value: Any) -> None:
        opt = _optimizer(model)
        current = getattr(opt, self.attribute)
        if _is_variable(current):
            current.assign(value)
        else:
            setattr(opt, self.attribute, value)

    def get(self, model: Any) -> Any:
        return _plain(getattr(_optimizer(model), self.attribute))


class Layers(Target):
    """An attribute of every layer of a type in the model (nested ones too).

    Example:
        >>> Layers(object, "rate")  # keras.layers.Dropout in practice
        Layers(object, 'rate')
    """

    def __init__(self, kind: type, attribute: str) -> None:
        self.kind = kind
        self.attribute = attribute

    def __repr__(self) -> str:
        return f"Layers({self.kind.__name__}, {self.attribute!r})"

    def _layers(self, model: Any) -> list[Any]:
        found = model._flatten_layers(include_self=False, recursive=True)
        return [layer for layer in found if isinstance(layer, self.kind)]

    def bind(self, model: Any, name: str) -> None:
        layers = self._layers(model)
        if not layers or not all(hasattr(layer, self.attribute) for layer in layers):
            got = f"{len(layers)} layers of that type" + (" without it" if layers else "")
            raise invalid(
                _FIT,
                f"hparams[{name!r}]",
                f"an attribute of the model's {self.kind.__name__} layers",
                f"{self.attribute!r}, with {got}",
            )

    def set(self, model: Any, value: Any) -> None:
        for layer in self._layers(model):
            setattr(layer, self.attribute, value)

    def get(self, model: Any) -> Any:
        values = [_plain(getattr(layer, self.attribute)) for layer in self._layers(model)]
        return values[0] if all(same(v, values[0]) for v in values) else values


class Custom(Target):
    """A hyperparameter your functions set and read: ``set(model, value)``, ``get(model)``.

    Example:
        >>> Custom(set=lambda model, value: None, get=lambda model: 0.5)
        Custom(set=<lambda>, get=<lambda>)
    """

    def __init__(self, *, set: Callable[[Any, Any], object], get: Callable[[Any], Any]) -> None:
        self._set, self._get = set, get

    def __repr__(self) -> str:
        return f"Custom(set={_name(self._set)}, get={_name(self._get)})"

    def set(self, model: Any, value: Any) -> None:
        self._set(model, value)

    def get(self, model: Any) -> Any:
        return _plain(self._get(model))


def targets(space: Space, model: Any, given: Mapping[str, Target] | None) -> dict[str, Target]:
    """Each hyperparameter of ``space`` (but fixed ones) with its target in ``model``: the
    one ``given``, else the optimizer's attribute of its name; bound (checked)."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(space))
    if unknown:
        raise invalid(
            _FIT,
            "hparams",
            f"a mapping of the space's hyperparameters ({sorted(space)})",
            f"{unknown[0]!r}, not in the space",
            "Fix: name them as the space does.",
        )
    if getattr(model, "optimizer", None) is None:
        raise invalid(
            _FIT,
            "model",
            "a function that returns a compiled keras.Model",
            f"{type(model).__name__} without an optimizer",
            "Fix: call model.compile(optimizer=..., loss=...) before returning it.",
        )
    out: dict[str, Target] = {}
    for name, domain in space.items():
        if name not in given and isinstance(domain, Fixed):  # never changes: nothing to set
            continue
        out[name] = given.get(name) or Optimizer(name)
        out[name].bind(model, name)
    return out


def in_effect(model: Any, mapped: Mapping[str, Target]) -> dict[str, Any]:
    """The values in effect now, read from the model."""
    return {name: target.get(model) for name, target in mapped.items()}


def apply(model: Any, mapped: Mapping[str, Target], hparams: Mapping[str, Any]) -> None:
    """Set each mapped hyperparameter of ``hparams`` on ``model``, then read them back.

    Raises:
        HyperparameterNotAppliedError: A value read back differs from the decided one.
    """
    for name, target in mapped.items():
        if name in hparams:
            target.set(model, hparams[name])
    check_applied(
        in_effect(model, mapped),
        hparams,
        who="The Keras model",
        fix="a target that reads back what it sets (gpk.Custom's get), and nothing that sets "
        "them back (a callback changing the optimizer's learning_rate?).",
        same=_same,
    )


def _same(now: Any, decided: Any) -> bool:
    """Whether a value read back is the decided one: a number held in a dtype of its own
    (a float32 learning rate) is compared with the decided one in that dtype."""
    if isinstance(now, np.generic) and isinstance(decided, int | float | np.number):
        return bool(now == np.asarray(decided).astype(now.dtype))
    return same(now, decided)


def _optimizer(model: Any) -> Any:
    """The optimizer that holds the hyperparameters: the one a ``LossScaleOptimizer``
    (mixed precision) wraps, else the model's."""
    opt = model.optimizer
    return getattr(opt, "inner_optimizer", opt)


def _name(function: Any) -> str:
    return str(getattr(function, "__name__", repr(function)))


def _is_variable(value: Any) -> bool:
    return hasattr(value, "assign") and hasattr(value, "value") and hasattr(value, "dtype")


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "dtype") and hasattr(value, "shape")


def _plain(value: Any) -> Any:
    """A value read back as plain data: a variable's or tensor's as a NumPy scalar or
    array of its dtype (read through its torch tensor: NumPy 2 warns on ``np.array``)."""
    if _is_variable(value):
        value = value.value
    if hasattr(value, "detach"):  # a torch tensor (Keras' torch backend)
        array = value.detach().cpu().numpy()
        return array[()] if array.ndim == 0 else array
    return value
