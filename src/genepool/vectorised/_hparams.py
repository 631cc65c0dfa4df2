"""Where a vectorised run's hyperparameters go: each name of the space onto the
optimizer's per-member columns, the dropout rates, or the per-member loss weight.

===================================  =====================================================
name in the space                    what it sets for the member
===================================  =====================================================
``lr``, ``weight_decay``             the optimizer's column of that name (every kind)
``momentum``, ``dampening``          SGD's columns
``beta1``, ``beta2``, ``eps``        Adam's and AdamW's columns
``max_norm``                         the member's gradient clipping (global 2-norm)
``dropout``                          the rate of every :class:`~genepool.vectorised.Dropout`
``dropout.<module>``                 the rate of the one at ``<module>`` (wins over ``dropout``)
``loss_weight``                      the factor of the member's loss
===================================  =====================================================

A name that maps nowhere is refused before the run starts, with the names that do.

Example:
    >>> import genepool as gp
    >>> targets = Targets(gp.Space(lr=gp.Float(0.01, 0.1), dropout=gp.Float(0.0, 0.5)),
    ...                   optimizer="sgd", options={"momentum": 0.9}, dropouts=["1"])
    >>> targets.optimizer_names, targets.dropout_names
    (('lr',), {'dropout': None})
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from genepool._errors import invalid
from genepool._redact import shown
from genepool.vectorised._optim import SGD, Adam, AdamW, VectorisedOptimizer
from genepool.vectorised._stack import StackedMembers

__all__ = ["OPTIMIZERS", "Targets"]

#: The optimizers by name: their class, per-member columns and fixed switches.
OPTIMIZERS: dict[
    str, tuple[Callable[..., VectorisedOptimizer], tuple[str, ...], tuple[str, ...]]
] = {
    "sgd": (SGD, ("lr", "momentum", "dampening", "weight_decay"), ("nesterov",)),
    "adam": (Adam, ("lr", "beta1", "beta2", "eps", "weight_decay"), ("amsgrad",)),
    "adamw": (AdamW, ("lr", "beta1", "beta2", "eps", "weight_decay"), ("amsgrad",)),
}
CLIP, DROPOUT, LOSS_WEIGHT = "max_norm", "dropout", "loss_weight"
OWNER = "genepool.vectorised.run"


class Targets:
    """The space's hyperparameter names sorted by where each goes.

    Args:
        names: The space's names.
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        options: Fixed optimizer arguments, the same for every member (``nesterov=True``,
            ``momentum=0.9``): a switch, or a column that the space does not name.
        dropouts: The names of the model's :class:`~genepool.vectorised.Dropout` modules.

    Raises:
        InvalidArgumentError: An unknown optimizer, an option it does not take (or one
            the space names too), or a name that maps nowhere (the message lists those
            that do).
    """

    def __init__(
        self,
        names: Iterable[str],
        *,
        optimizer: Any,
        options: Any,
        dropouts: Sequence[str],
    ) -> None:
        if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
            raise invalid(OWNER, "optimizer", f"one of {sorted(OPTIMIZERS)}", shown(optimizer))
        self.kind = optimizer.lower()
        self._cls, columns, switches = OPTIMIZERS[self.kind]
        names = list(names)
        if not isinstance(options, Mapping):
            must = "a dict of fixed optimizer arguments"
            raise invalid(OWNER, "optimizer_options", must, shown(options))
        takes = (*columns, CLIP, *switches)
        for key in options:
            if key not in takes:
                must = f"arguments of {self.kind!r}: {list(takes)}"
                raise invalid(OWNER, "optimizer_options", must, shown(key))
            if key in names:
                fix = f"Fix: drop {key!r} from optimizer_options (the space sets it per member)."
                raise invalid(OWNER, "optimizer_options", "no name of the space", repr(key), fix)
        self.options = dict(options)
        valid = [*columns, CLIP, LOSS_WEIGHT]
        valid += [DROPOUT, *(f"{DROPOUT}.{d}" for d in dropouts)] if dropouts else []
        for name in names:
            if name not in valid:
                fix = (
                    "Fix: name each hyperparameter after what it sets (a value the model "
                    "or the data needs per member has no place in a vectorised run)."
                )
                if name.startswith(DROPOUT) and not dropouts:
                    fix = "Fix: the model has no genepool.vectorised.Dropout to set."
                raise invalid(OWNER, "space", f"names among {valid}", repr(name), fix)
        #: The space's names that are optimizer columns (``max_norm`` included).
        self.optimizer_names = tuple(n for n in names if n in (*columns, CLIP))
        #: Dropout names in the space -> the module they set (``None``: every one),
        #: ``dropout`` first so that a module's own rate wins.
        self.dropout_names = {
            n: (None if n == DROPOUT else n[len(DROPOUT) + 1 :])
            for n in sorted((n for n in names if n.startswith(DROPOUT)), key=len)
        }
        self.loss_weight = LOSS_WEIGHT in names

    def optimizer(
        self, params: Mapping[str, Any], configs: Sequence[Mapping[str, Any]]
    ) -> VectorisedOptimizer:
        """The optimizer over ``params``, each member's columns from its config."""
        columns = {n: [_number(n, c[n]) for c in configs] for n in self.optimizer_names}
        return self._cls(params, **self.options, **columns)

    def apply(
        self,
        member: int,
        hparams: Mapping[str, Any],
        *,
        stack: StackedMembers,
        optimizer: VectorisedOptimizer,
        weights: Any,
    ) -> None:
        """Put ``member``'s hyperparameters in effect: its optimizer columns, dropout
        rates and loss weight (``weights``, the ``(N,)`` tensor of the loss weights).

        Raises:
            InvalidArgumentError: A value out of range for what it sets.
        """
        columns = {n: _number(n, hparams[n]) for n in self.optimizer_names}
        if columns:
            optimizer.set(member, **columns)
        for name, module in self.dropout_names.items():
            stack.set_dropout(member, _number(name, hparams[name]), module=module)
        if self.loss_weight:
            weight = _number(LOSS_WEIGHT, hparams[LOSS_WEIGHT])
            if not math.isfinite(weight):
                raise invalid(OWNER, LOSS_WEIGHT, "a finite number", f"{LOSS_WEIGHT}={weight}")
            weights[member] = weight

    def in_effect(
        self, member: int, *, stack: StackedMembers, optimizer: VectorisedOptimizer, weights: Any
    ) -> dict[str, float]:
        """The values in effect for ``member``, by the space's names (to check them)."""
        out = {n: optimizer.hparams(member)[n] for n in self.optimizer_names}
        rates, own = stack.dropout_rates, set(self.dropout_names.values())
        for name, module in self.dropout_names.items():
            kept = [r for m, r in rates.items() if m == module or (module is None and m not in own)]
            if kept:  # ``dropout`` is read where no module's own rate overrides it
                out[name] = float(kept[0][member])
        if self.loss_weight:
            out[LOSS_WEIGHT] = float(weights[member])
        return out


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise invalid(OWNER, "space", f"a number for {name!r}", f"{name}={shown(value)}")
    return float(value)
