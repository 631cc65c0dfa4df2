"""Where a :class:`~genepool.integrations.torch.TorchState`'s hyperparameters live: set
each one, and read back the value in effect.

A :class:`Target` is one place: :class:`Optimizer` (a key of an optimizer's param
groups, and the base values of its LR schedulers for ``lr``), :class:`Modules` (an
attribute of submodules, such as dropout rates) or :class:`Custom` (a pair of your
functions). :func:`same` is how a value read back is compared with the decided one.

The names are public from :mod:`genepool.integrations.torch`, which checks that torch is
installed; this module uses torch only through the state it is given.
"""

from __future__ import annotations

import math
import re
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from genepool._errors import invalid

if TYPE_CHECKING:
    import torch
    from torch import nn

    from genepool.integrations.torch import TorchState

__all__ = ["Custom", "Modules", "Optimizer", "Target", "same"]


class Target:
    """Where a hyperparameter lives: set it on a :class:`TorchState`, and read it back."""

    def bind(self, state: TorchState, name: str) -> None:
        """Check that the target exists in ``state`` (called once, at construction)."""

    @abstractmethod
    def set(self, state: TorchState, value: Any) -> None:
        """Put ``value`` in effect."""

    @abstractmethod
    def get(self, state: TorchState) -> Any:
        """The value in effect now (a list when parts disagree)."""


class Optimizer(Target):
    """A key of an optimizer's param groups: ``lr``, ``momentum``, ``weight_decay``, ...

    Args:
        optimizer: The optimizer's name in :class:`TorchState`'s ``optimizers``.
        key: The param-group key.
        index: For a tuple value such as Adam's ``betas``: which element (0 or 1).
        groups: Which param groups (default: all).

    For ``lr``, an LR scheduler of this optimizer (one of :class:`TorchState`'s
    ``schedulers``) has its base value set too, and the rate in effect keeps the
    schedule's current factor: the hyperparameter is the schedule's base learning rate.
    """

    def __init__(
        self,
        optimizer: str,
        key: str,
        *,
        index: int | None = None,
        groups: Sequence[int] | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.key = key
        self.index = index
        self.groups = None if groups is None else list(groups)

    def __repr__(self) -> str:
        extra = "" if self.index is None else f", index={self.index}"
        return f"Optimizer({self.optimizer!r}, {self.key!r}{extra})"

    def bind(self, state: TorchState, name: str) -> None:
        opt = state.optimizers.get(self.optimizer)
        if opt is None:
            raise invalid(
                "TorchState",
                f"hparams[{name!r}]",
                f"an optimizer among {sorted(state.optimizers)}",
                repr(self.optimizer),
                "Name the optimizer as it is in TorchState(optimizers=...).",
            )
        for i in self._group_ids(opt):
            group = opt.param_groups[i]
            if self.key not in group:
                raise invalid(
                    "TorchState",
                    f"hparams[{name!r}]",
                    f"a key of the param groups of {self.optimizer!r} "
                    f"({sorted(k for k in group if k != 'params')})",
                    repr(self.key),
                )
            if self.index is not None and not isinstance(group[self.key], tuple | list):
                raise invalid(
                    "TorchState",
                    f"hparams[{name!r}]",
                    f"index=None: {self.key!r} is not a tuple",
                    repr(self.index),
                )

    def _group_ids(self, opt: torch.optim.Optimizer) -> list[int]:
        return list(range(len(opt.param_groups))) if self.groups is None else self.groups

    def set(self, state: TorchState, value: Any) -> None:
        opt = state.optimizers[self.optimizer]
        scheds = state._schedulers_of(opt) if self.key == "lr" else []
        for i in self._group_ids(opt):
            group = opt.param_groups[i]
            if self.index is not None:
                parts = list(group[self.key])
                parts[self.index] = value
                group[self.key] = type(group[self.key])(parts)
                continue
            if not scheds:
                group[self.key] = value
                continue
            # keep the schedule's current factor; its base value is the hyperparameter
            for sched in scheds:
                base = sched.base_lrs[i]
                factor = group["lr"] / base if base else 1.0
                sched.base_lrs[i] = value
                group["initial_lr"] = value
                group["lr"] = value * factor
                last = getattr(sched, "_last_lr", None)
                if isinstance(last, list) and i < len(last):
                    last[i] = group["lr"]

    def get(self, state: TorchState) -> Any:
        opt = state.optimizers[self.optimizer]
        scheds = state._schedulers_of(opt) if self.key == "lr" else []
        values: list[Any] = []
        for i in self._group_ids(opt):
            group = opt.param_groups[i]
            if scheds:
                values.extend(s.base_lrs[i] for s in scheds)
                values.append(group.get("initial_lr"))
            elif self.index is not None:
                values.append(group[self.key][self.index])
            else:
                values.append(group[self.key])
        return _one(values)


class Modules(Target):
    """An attribute of every submodule of a kind (and, optionally, a name pattern).

    Args:
        model: The model's name in :class:`TorchState`'s ``models``.
        kind: The module class to match (``torch.nn.Dropout``, ``torch.nn.MultiheadAttention``).
        attr: The attribute to set (``"p"`` for dropout, ``"dropout"`` for attention).
        names: A regular expression searched in each module's qualified name (as in
            ``model.named_modules()``), to pick some of them.

    A target that matches no module is refused when the :class:`TorchState` is built.
    """

    def __init__(
        self, model: str, kind: type[nn.Module], attr: str = "p", *, names: str | None = None
    ) -> None:
        self.model = model
        self.kind = kind
        self.attr = attr
        self.names = names
        self._pattern = None if names is None else re.compile(names)

    def __repr__(self) -> str:
        extra = "" if self.names is None else f", names={self.names!r}"
        return f"Modules({self.model!r}, {self.kind.__name__}, {self.attr!r}{extra})"

    def _matches(self, state: TorchState) -> list[nn.Module]:
        model = state.models[self.model]
        pattern = self._pattern
        return [
            m
            for qual, m in model.named_modules()
            if isinstance(m, self.kind) and (pattern is None or pattern.search(qual))
        ]

    def bind(self, state: TorchState, name: str) -> None:
        if self.model not in state.models:
            raise invalid(
                "TorchState",
                f"hparams[{name!r}]",
                f"a model among {sorted(state.models)}",
                repr(self.model),
            )
        found = self._matches(state)
        if not found:
            raise invalid(
                "TorchState",
                f"hparams[{name!r}]",
                "a target matching at least one module",
                repr(self),
                "Check the module class and the names pattern against model.named_modules().",
            )
        if any(not hasattr(m, self.attr) for m in found):
            raise invalid("TorchState", f"hparams[{name!r}]", "an existing attribute", self.attr)

    def set(self, state: TorchState, value: Any) -> None:
        for m in self._matches(state):
            setattr(m, self.attr, value)

    def get(self, state: TorchState) -> Any:
        return _one([getattr(m, self.attr) for m in self._matches(state)])


class Custom(Target):
    """A hyperparameter your own code puts in effect: ``set(state, value)`` and ``get(state)``."""

    def __init__(
        self,
        set: Callable[[TorchState, Any], None],
        get: Callable[[TorchState], Any],
    ) -> None:
        self._set = set
        self._get = get

    def set(self, state: TorchState, value: Any) -> None:
        self._set(state, value)

    def get(self, state: TorchState) -> Any:
        return self._get(state)


def _one(values: list[Any]) -> Any:
    first = values[0]
    return first if all(same(v, first) for v in values[1:]) else values


def same(a: Any, b: Any) -> bool:
    """Whether a value read back is the decided one (numbers within rounding)."""
    if isinstance(a, float | int) and isinstance(b, float | int):
        return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)
