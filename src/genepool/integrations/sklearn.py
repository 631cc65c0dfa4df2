"""scikit-learn: an estimator trained through ``partial_fit`` as a PBT member.

:func:`trainable` turns an estimator (the script's own, with its settings) into a
:class:`genepool.Trainable` for :func:`genepool.run`: each member is a clone of it with
the member's hyperparameters set; a step is one call of your ``fit`` function (one
``partial_fit`` pass over the data, say), its metrics those of your ``score`` function.

- **Hyperparameters are applied where the estimator reads them.** The linear models read
  theirs (``alpha``, ``eta0``, ``power_t``, ...) from the estimator at every
  ``partial_fit``: they are set there. A multi-layer perceptron makes its inner optimizer
  at its first ``partial_fit`` and from then on reads ``learning_rate_init``,
  ``momentum``, ``nesterovs_momentum``, ``power_t`` (SGD) and ``beta_1``, ``beta_2``,
  ``epsilon`` (Adam) from that optimizer, never from the estimator: genepool sets them
  there too (the rate in effect with them: the constant rate, the inverse-scaling rate at
  the current step, or the adaptive rate with its reductions so far). After every change
  each value is read back from where it is read, and a difference raises
  :class:`~genepool.HyperparameterNotAppliedError`.
- **State in the safe format.** For the estimators listed in :data:`LISTED`, a member's
  state is the estimator's fitted attributes (weights, step counters, classes, loss
  curve, ...), its optimizer's state (SGD velocities; Adam moments and step) and its
  label binarizer, as arrays and numbers: reading a checkpoint never runs code. Any other
  estimator can be saved only as a pickle, which runs code when read: it is refused unless
  you pass ``trust=True`` here and ``trust_checkpoints=True`` to :func:`genepool.run`.
- **Randomness from the member's stream.** The estimator's ``random_state`` is genepool's:
  before each step it is set from the member's own random stream, so the data order is
  the member's (a copy shuffles its own way after an exploit) and a seeded run repeats.

Hyperparameters that fix the estimator's shape (``hidden_layer_sizes``, ``solver``,
``average``, ``early_stopping``, ``warm_start``) and ``random_state`` cannot be tuned.

Example:
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import SGDClassifier
    >>> import genepool as gp
    >>> from genepool.integrations import sklearn as gps
    >>> x, y = load_digits(return_X_y=True)
    >>> member = gps.trainable(
    ...     SGDClassifier(learning_rate="constant", eta0=0.01),
    ...     fit=lambda model: model.partial_fit(x / 16, y, classes=np.arange(10)),
    ...     score=lambda model: model.score(x / 16, y),
    ... )
    >>> result = gp.run(member, gp.Space(alpha=gp.Float(1e-6, 1e-2, log=True)),
    ...                 metric="score", population=2, ready=gp.Every(2),
    ...                 budget=gp.Budget(steps=4), seed=0, progress=False)
    >>> result.best.score > 0.8
    True
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from genepool._errors import (
    CheckpointError,
    TrainableError,
    invalid,
    missing_dependency,
)
from genepool.integrations._saved import checked_layout
from genepool.trainable import Trainable

try:
    from sklearn import linear_model, neural_network  # type: ignore[import-untyped]
    from sklearn.base import BaseEstimator, clone  # type: ignore[import-untyped]
    from sklearn.neural_network._stochastic_optimizers import (  # type: ignore[import-untyped]
        AdamOptimizer,
        SGDOptimizer,
    )
    from sklearn.preprocessing import LabelBinarizer  # type: ignore[import-untyped]
except ImportError as _err:  # pragma: no cover - exercised only without scikit-learn
    raise missing_dependency("scikit-learn", "sklearn", "genepool.integrations.sklearn") from _err

__all__ = ["LISTED", "STATE_FORMAT", "STATE_VERSION", "trainable"]

#: Name and version of a member's saved layout; a newer version is refused.
STATE_FORMAT = "genepool.sklearn"
STATE_VERSION = 1

_LINEAR = (
    "SGDClassifier",
    "SGDRegressor",
    "Perceptron",
    "PassiveAggressiveClassifier",  # deprecated in scikit-learn 1.8, gone in 1.10
    "PassiveAggressiveRegressor",
)
_MLP = ("MLPClassifier", "MLPRegressor")

#: The estimators whose state genepool saves as plain data (those of this scikit-learn).
LISTED: tuple[type[Any], ...] = tuple(
    cls
    for module, names in ((linear_model, _LINEAR), (neural_network, _MLP))
    for name in names
    if (cls := getattr(module, name, None)) is not None
)

#: Parameters that fix the estimator's shape, or are genepool's: never tuned.
_FIXED = ("hidden_layer_sizes", "solver", "average", "early_stopping", "warm_start")
#: Attributes made again by ``partial_fit`` or by :func:`_restore`, not saved as they are.
_REMADE = ("_random_state", "_loss_function_", "_expanded_class_weight")
_OPTIMIZER, _BINARIZER = "_optimizer", "_label_binarizer"

#: For a multi-layer perceptron's inner optimizer: estimator parameter -> its attribute.
_SGD_ATTRIBUTES = {
    "learning_rate_init": "learning_rate_init",
    "momentum": "momentum",
    "nesterovs_momentum": "nesterov",
    "power_t": "power_t",
    "learning_rate": "lr_schedule",
}
_ADAM_ATTRIBUTES = {
    "learning_rate_init": "learning_rate_init",
    "beta_1": "beta_1",
    "beta_2": "beta_2",
    "epsilon": "epsilon",
}
_SGD_STATE = (
    "learning_rate_init",
    "learning_rate",
    "lr_schedule",
    "momentum",
    "nesterov",
    "power_t",
)
_ADAM_STATE = ("learning_rate_init", "learning_rate", "beta_1", "beta_2", "epsilon", "t")


def trainable(
    estimator: BaseEstimator,
    *,
    fit: Callable[[Any], Any],
    score: Callable[[Any], float | Mapping[str, Any]],
    trust: bool = False,
) -> type[Trainable]:
    """A :class:`genepool.Trainable` whose members are clones of ``estimator``.

    Args:
        estimator: The estimator as the script makes it (unfitted); each member is a
            ``clone`` of it with the member's hyperparameters set (``set_params``).
        fit: Trains a member one step: called with its estimator, typically
            ``lambda model: model.partial_fit(x, y, classes=classes)``.
        score: The member's metrics after a step, from its estimator: a number (reported
            as ``"score"``) or a mapping of names to numbers.
        trust: For an estimator not in :data:`LISTED`: its state is saved as a pickle,
            which runs code when read; pass ``True`` (and ``trust_checkpoints=True`` to
            :func:`genepool.run`) only if the checkpoints are as trusted as your code.

    Returns:
        A Trainable subclass, for :func:`genepool.run` or :func:`genepool.replay`.

    Raises:
        InvalidArgumentError: ``estimator`` is no scikit-learn estimator, has no
            ``partial_fit``, or is not listed and ``trust`` is not given; ``fit`` or
            ``score`` is not callable.
    """
    if not isinstance(estimator, BaseEstimator) or not hasattr(estimator, "partial_fit"):
        raise invalid(
            _OWNER,
            "estimator",
            "a scikit-learn estimator with partial_fit (SGDClassifier, MLPRegressor, ...)",
            repr(estimator),
        )
    listed = isinstance(estimator, LISTED)
    if not listed and trust is not True:
        names = ", ".join(cls.__name__ for cls in LISTED)
        raise invalid(
            _OWNER,
            "estimator",
            f"one whose state genepool saves as plain data ({names})",
            f"{type(estimator).__name__}, which can be saved only as a pickle (reading one "
            "runs code)",
            "Fix: use a listed estimator, or, if your checkpoint storage is as trusted as "
            "your code, pass trust=True here and trust_checkpoints=True to gp.run.",
        )
    for name, value in (("fit", fit), ("score", score)):
        if not callable(value):
            raise invalid(_OWNER, name, "a function of the member's estimator", repr(value))
    template = clone(estimator)
    return type(
        f"PartialFit{type(template).__name__}",
        (_PartialFit,),
        {"template": template, "fit": staticmethod(fit), "score": staticmethod(score)},
    )


_OWNER = "genepool.integrations.sklearn.trainable"


class _PartialFit(Trainable):
    """A member: a clone of :attr:`template`, trained by :attr:`fit`, measured by
    :attr:`score` (set by :func:`trainable`)."""

    template: BaseEstimator
    fit: Callable[[Any], Any]
    score: Callable[[Any], float | Mapping[str, Any]]
    model: Any

    def setup(self, hparams: Mapping[str, Any]) -> None:
        _check_names(self.template, hparams)
        self.model = clone(self.template).set_params(**hparams)

    def step(self) -> Mapping[str, Any]:
        if "random_state" in self.model.get_params():  # the data order: the member's own
            self.model.random_state = int(self.member.rng.integers(2**31 - 1))
        self.fit(self.model)
        found = self.score(self.model)
        return dict(found) if isinstance(found, Mapping) else {"score": found}

    def save(self) -> Any:
        head = {"format": STATE_FORMAT, "version": STATE_VERSION}
        if not isinstance(self.model, LISTED):  # trust=True was given: a pickle
            return {**head, "pickled": copy.deepcopy(self.model)}
        return {**head, "estimator": type(self.model).__name__, **_saved(self.model)}

    def load(self, state: Any) -> None:
        _check_layout(state, self.template)
        if "pickled" in state:
            self.model = state["pickled"]
            return
        self.model = _restore(clone(self.model), state)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        _check_names(self.template, hparams)
        _apply(self.model, hparams)

    def hparams_in_effect(self) -> Mapping[str, Any] | None:
        return _in_effect(self.model, self.member.hparams)


def _check_names(template: BaseEstimator, hparams: Mapping[str, Any]) -> None:
    params = template.get_params()
    for name in hparams:
        if name not in params or name in _FIXED or name == "random_state":
            why = (
                "it fixes the estimator's shape"
                if name in _FIXED
                else "it is genepool's (the member's random stream)"
                if name == "random_state"
                else "it is none of its parameters"
            )
            raise invalid(
                _OWNER,
                "space",
                f"made of {type(template).__name__}'s tunable parameters",
                f"a hyperparameter {name!r} ({why})",
                "Fix: name the estimator's own parameters, as set_params takes them, other "
                f"than {', '.join(_FIXED)} and random_state.",
            )


# -- where hyperparameters are read ------------------------------------------------------
def _apply(model: Any, hparams: Mapping[str, Any]) -> None:
    """Set ``hparams`` on the estimator, and on its inner optimizer where that reads them."""
    optimizer = getattr(model, _OPTIMIZER, None)
    old_init = getattr(optimizer, "learning_rate_init", None)
    model.set_params(**hparams)
    if optimizer is None:
        return
    for name, value in hparams.items():
        attribute = _optimizer_attributes(optimizer).get(name)
        if attribute is not None:
            setattr(optimizer, attribute, value)
    if isinstance(optimizer, SGDOptimizer):  # Adam derives its rate at every update
        optimizer.learning_rate = _sgd_rate(model, optimizer, old_init)


def _sgd_rate(model: Any, optimizer: Any, old_init: float | None) -> float:
    """The SGD rate in effect, by the schedule, for the learning_rate_init now set."""
    init = float(optimizer.learning_rate_init)
    if optimizer.lr_schedule == "invscaling":
        return float(init / (model.t_ + 1) ** optimizer.power_t)
    if optimizer.lr_schedule == "adaptive" and old_init:  # keep the reductions made so far
        return init * float(optimizer.learning_rate) / float(old_init)
    return init


def _in_effect(model: Any, names: Mapping[str, Any]) -> dict[str, Any]:
    """Each of ``names`` as the estimator reads it now."""
    params = model.get_params()
    optimizer = getattr(model, _OPTIMIZER, None)
    found: dict[str, Any] = {}
    for name in names:
        attribute = _optimizer_attributes(optimizer).get(name) if optimizer else None
        value = params[name] if attribute is None else getattr(optimizer, attribute)
        if name == "learning_rate_init" and isinstance(optimizer, SGDOptimizer):
            expected = _sgd_rate(model, optimizer, value)
            if not math.isclose(optimizer.learning_rate, expected, rel_tol=1e-9):
                value = optimizer.learning_rate  # the rate in effect is not the schedule's
        found[name] = value
    return found


def _optimizer_attributes(optimizer: Any) -> dict[str, str]:
    if isinstance(optimizer, SGDOptimizer):
        return _SGD_ATTRIBUTES
    if isinstance(optimizer, AdamOptimizer):
        return _ADAM_ATTRIBUTES
    return {}


# -- the state as plain data -------------------------------------------------------------
def _saved(model: Any) -> dict[str, Any]:
    """The fitted state of a listed estimator: arrays, numbers and strings (copies)."""
    params = model.get_params()
    fitted: dict[str, Any] = {}
    first: dict[int, str] = {}  # an array's id -> the first attribute that holds it
    for name, value in vars(model).items():
        if name in params or name in _REMADE or name in (_OPTIMIZER, _BINARIZER):
            continue
        if isinstance(value, np.ndarray) and id(value) in first:  # an averaged SGD's
            fitted[name] = {"same_as": first[id(value)]}  # coef_ is one of its arrays
            continue
        first.setdefault(id(value), name)
        fitted[name] = _plain(value, name)
    out: dict[str, Any] = {"fitted": fitted, "optimizer": None, "binarizer": None}
    optimizer = getattr(model, _OPTIMIZER, None)
    if isinstance(optimizer, SGDOptimizer):
        out["optimizer"] = {
            "kind": "sgd",
            **{k: _plain(getattr(optimizer, k), k) for k in _SGD_STATE},
            "velocities": [np.array(v) for v in optimizer.velocities],
        }
    elif isinstance(optimizer, AdamOptimizer):
        out["optimizer"] = {
            "kind": "adam",
            **{k: _plain(getattr(optimizer, k), k) for k in _ADAM_STATE},
            "ms": [np.array(m) for m in optimizer.ms],
            "vs": [np.array(v) for v in optimizer.vs],
        }
    binarizer = getattr(model, _BINARIZER, None)
    if binarizer is not None:
        out["binarizer"] = {
            "params": binarizer.get_params(),
            "fitted": {k: _plain(v, k) for k, v in vars(binarizer).items() if k.endswith("_")},
        }
    return out


def _restore(model: Any, state: Mapping[str, Any]) -> Any:
    """``model`` (a fresh clone) with the fitted state ``state`` set on it."""
    aliases = {}
    for name, value in state["fitted"].items():
        if isinstance(value, dict) and set(value) == {"same_as"}:
            aliases[name] = value["same_as"]
        else:
            setattr(model, name, _unplain(value))
    for name, other in aliases.items():  # the same array, as when it was saved
        setattr(model, name, getattr(model, other))
    saved = state["optimizer"]
    if saved is not None:
        params = list(model.coefs_) + list(model.intercepts_)
        if saved["kind"] == "sgd":
            optimizer: Any = SGDOptimizer(params)
            optimizer.velocities = [np.array(v) for v in saved["velocities"]]
        else:
            optimizer = AdamOptimizer(params)
            optimizer.ms = [np.array(m) for m in saved["ms"]]
            optimizer.vs = [np.array(v) for v in saved["vs"]]
        for name, value in saved.items():
            if name not in ("kind", "velocities", "ms", "vs"):
                setattr(optimizer, name, _unplain(value))
        setattr(model, _OPTIMIZER, optimizer)
    binarizer = state["binarizer"]
    if binarizer is not None:
        made = LabelBinarizer(**binarizer["params"])
        for name, value in binarizer["fitted"].items():
            setattr(made, name, _unplain(value))
        setattr(model, _BINARIZER, made)
    return model


def _plain(value: Any, name: str) -> Any:
    """``value`` as plain data for the checkpoint format (arrays copied); an array of
    strings as ``{"strings": [...]}``."""
    if value is None or isinstance(value, bool | int | float | str | np.generic):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            if all(isinstance(v, str) for v in value.flat):
                return {"strings": value.tolist()}
        else:
            return np.array(value)
    if isinstance(value, list | tuple):
        return type(value)(_plain(v, name) for v in value)
    raise TrainableError(
        f"the estimator's attribute {name!r} holds a {type(value).__name__}, which genepool "
        "does not save as plain data. Fix: report it to genepool (this scikit-learn version "
        "differs), or pass trust=True to gps.trainable and trust_checkpoints=True to gp.run."
    )


def _unplain(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"strings"}:
        return np.array(value["strings"], dtype=object)
    if isinstance(value, list | tuple):
        return type(value)(_unplain(v) for v in value)
    return value


def _check_layout(state: Any, template: BaseEstimator) -> None:
    checked_layout(state, fmt=STATE_FORMAT, version=STATE_VERSION, what="scikit-learn")
    name = state.get("estimator")
    if name is not None and name != type(template).__name__:
        raise CheckpointError(
            f"this checkpoint holds a {name}, not the run's {type(template).__name__}. "
            "Fix: resume the run with the estimator that wrote it."
        )
