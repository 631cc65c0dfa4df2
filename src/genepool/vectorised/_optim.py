"""Optimizers whose hyperparameters are per-member tensors, over stacked parameters.

``torch.optim`` holds one learning rate per parameter group, never one per slice of a
tensor. The optimizers here hold each hyperparameter as a ``(N,)`` float64 tensor (one
entry per member) and update parameters stacked along a leading population axis of size
``N`` (as :func:`torch.func.stack_module_state` gives them), in place, with one batched
operation per parameter tensor and no loop over members. Each member follows exactly the
update rule of :class:`torch.optim.SGD`, :class:`~torch.optim.Adam` or
:class:`~torch.optim.AdamW` with its own hyperparameters, its own state and its own step
count (an exploited member carries its donor's), and optionally clips its gradient to its
own ``max_norm`` first, as :func:`torch.nn.utils.clip_grad_norm_` would for it alone.

Example:
    >>> import torch
    >>> from torch.func import stack_module_state
    >>> from genepool.vectorised._optim import Adam
    >>> params, _ = stack_module_state([torch.nn.Linear(3, 1) for _ in range(4)])
    >>> opt = Adam(params, lr=[0.1, 0.01, 0.001, 0.0001], max_norm=1.0)
    >>> opt.set(2, lr=0.05, beta1=0.8)
    >>> opt.hparams(2)
    {'lr': 0.05, 'beta1': 0.8, 'beta2': 0.999, 'eps': 1e-08, 'weight_decay': 0.0, 'max_norm': 1.0}
    >>> opt.step({name: torch.ones_like(p) for name, p in params.items()})
    >>> opt.copy_member(dst=3, src=2)  # an exploit: member 3 takes member 2's state
    >>> opt.set(3, lr=0.04)  # then an explore
    >>> opt.member_state(3)["step"], opt.hparams(3)["lr"]
    (1, 0.04)
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from genepool._errors import CheckpointError, InvalidArgumentError, invalid, missing_dependency
from genepool._redact import shown

try:
    import torch
    from torch import Tensor
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_dependency("torch", "torch", "genepool.vectorised") from _err

__all__ = ["SGD", "Adam", "AdamW", "VectorisedOptimizer", "clip_grad_norm_"]

#: A hyperparameter as given: one number for every member, a sequence of ``N``, or ``(N,)``.
HparamValue = float | Sequence[float] | Tensor
_ADAM_DEFAULTS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}


_Rule = tuple[str, Callable[[Tensor], Tensor]]
_AT_LEAST_0: _Rule = ("a finite number >= 0", lambda t: torch.isfinite(t) & (t >= 0))
_IN_0_1: _Rule = ("a number in [0, 1)", lambda t: (t >= 0) & (t < 1))
#: What each hyperparameter may be: the rule in words, and as a check of a column.
_RULES: dict[str, _Rule] = {
    "lr": _AT_LEAST_0,
    "momentum": _AT_LEAST_0,
    "dampening": ("a finite number", torch.isfinite),
    "weight_decay": _AT_LEAST_0,
    "beta1": _IN_0_1,
    "beta2": _IN_0_1,
    "eps": _AT_LEAST_0,
    "max_norm": ("a number >= 0 (inf: no clipping)", lambda t: t >= 0),
}


def _view(column: Tensor, like: Tensor) -> Tensor:
    """A ``(N,)`` column shaped to broadcast against ``like``, of shape ``(N, ...)``."""
    return column.view(-1, *([1] * (like.dim() - 1)))


def _write(target: Tensor, new: Tensor, active: Tensor | None) -> None:
    """Write ``new`` into ``target`` in place, only in the active members' slices."""
    target.copy_(new if active is None else torch.where(_view(active, target), new, target))


def _clip_coefficients(grads: Mapping[str, Tensor], max_norm: Tensor) -> tuple[Tensor, Tensor]:
    """Each member's 2-norm over all its gradients, and the factor (at most 1) that brings
    it to ``max_norm``, as :func:`torch.nn.utils.clip_grad_norm_` computes them."""
    dtype = next(iter(grads.values())).dtype
    norms = [torch.linalg.vector_norm(g.flatten(1), dim=1).to(dtype) for g in grads.values()]
    total: Tensor = torch.linalg.vector_norm(torch.stack(norms, dim=1), dim=1)
    return total, (max_norm.to(dtype) / (total + 1e-6)).clamp(max=1.0)


@torch.no_grad()
def clip_grad_norm_(grads: Mapping[str, Tensor], max_norm: Tensor) -> Tensor:
    """Clip each member's stacked gradients, in place, to its own global 2-norm ``max_norm``
    (a ``(N,)`` tensor; ``inf`` leaves a member alone), as
    ``torch.nn.utils.clip_grad_norm_(..., max_norm[i])`` clips member ``i`` alone, and
    return each member's total norm before clipping.

    Example:
        >>> grads = {"w": torch.tensor([[3.0, 4.0], [0.3, 0.4]])}
        >>> clip_grad_norm_(grads, torch.tensor([1.0, 1.0]))
        tensor([5.0000, 0.5000])
        >>> grads["w"][0]
        tensor([0.6000, 0.8000])
    """
    norms, coefficients = _clip_coefficients(grads, max_norm)
    for g in grads.values():
        g.mul_(_view(coefficients.to(g.dtype), g))
    return norms


class VectorisedOptimizer:
    """What every optimizer here shares: per-member hyperparameters and state.

    A subclass gives its hyperparameters, the names of its state tensors (``moments``,
    stacked as the parameters are) and of its per-member counters (``(N,)`` tensors of the
    given dtypes), and implements :meth:`_update`, its rule over every member at once.
    """

    def __init__(
        self,
        params: Mapping[str, Tensor],
        hparams: Mapping[str, Any],
        max_norm: HparamValue | None,
        moments: tuple[str, ...],
        counters: Mapping[str, torch.dtype],
    ) -> None:
        owner = type(self).__name__
        must = "a non-empty dict of name -> floating tensor (N, ...), of one N and one device"
        if not isinstance(params, Mapping) or not params:
            raise invalid(owner, "params", must, shown(params))
        first = next(iter(params.values()))
        for name, p in params.items():
            same = isinstance(p, Tensor) and p.dim() > 0 and len(p) == len(first) > 0
            if not (same and p.is_floating_point() and p.device == first.device):
                raise invalid(owner, "params", must, f"{shown(name)}: {_described(p)}")
        self._params = dict(params)
        self.population_size: int = len(first)
        self._device = first.device
        hparams = {**hparams, **({} if max_norm is None else {"max_norm": max_norm})}
        self._hparams = {name: self._column(name, value) for name, value in hparams.items()}
        self._check_together(self._hparams)
        ps = self._params
        self._moments = {kind: {n: torch.zeros_like(p) for n, p in ps.items()} for kind in moments}
        self._counters = {
            name: torch.zeros(self.population_size, dtype=dtype, device=self._device)
            for name, dtype in counters.items()
        }

    def hparams(self, member: int) -> dict[str, float]:
        """One member's hyperparameters, as plain floats."""
        i = self._member("member", member)
        return {name: float(column[i]) for name, column in self._hparams.items()}

    @property
    def hyperparameters(self) -> dict[str, Tensor]:
        """Every member's hyperparameters: name -> a copy of its ``(N,)`` float64 column."""
        return {name: column.clone() for name, column in self._hparams.items()}

    def set(self, member: int, /, **hparams: float) -> None:
        """Set some of one member's hyperparameters (an explore), keeping the others; an
        unknown name or a value out of range is an :class:`InvalidArgumentError`."""
        self._set(self._member("member", member), hparams)

    def _set(self, i: int, hparams: Mapping[str, Any]) -> None:
        owner, columns = type(self).__name__, dict(self._hparams)
        for name, value in hparams.items():
            if name not in self._hparams:
                raise invalid(owner, "hparams", f"among {list(self._hparams)}", shown(name))
            if not _is_real(value):
                raise invalid(owner, name, _RULES[name][0], f"{name}={shown(value)}")
            columns[name] = self._hparams[name].clone()
            columns[name][i] = _as_float(value)
            self._check_rule(name, columns[name])
        self._check_together(columns)
        for name in hparams:
            self._hparams[name][i] = columns[name][i]

    def _column(self, name: str, value: Any) -> Tensor:
        """A hyperparameter as given, as a checked ``(N,)`` float64 column."""
        owner, n = type(self).__name__, self.population_size
        must = f"{_RULES[name][0]}, a sequence of {n} such, or a tensor of shape ({n},)"
        if isinstance(value, Tensor) and not (value.is_complex() or value.dtype == torch.bool):
            column = value.detach().to(device=self._device, dtype=torch.float64).clone()
        elif _is_real(value):
            column = torch.full((n,), _as_float(value), dtype=torch.float64)
        elif isinstance(value, Sequence) and all(_is_real(v) for v in value):
            column = torch.tensor([_as_float(v) for v in value], dtype=torch.float64)
        else:
            raise invalid(owner, name, must, f"{name}={_described(value)}")
        if column.shape != (n,):
            raise invalid(owner, name, must, f"{name} of shape {tuple(column.shape)}")
        self._check_rule(name, column)
        return column.to(self._device)

    def _check_rule(self, name: str, column: Tensor) -> None:
        must, check = _RULES[name]
        bad = (~check(column)).nonzero()
        if len(bad):
            i = int(bad[0])
            got = f"{name}={float(column[i])} for member {i}"
            raise invalid(type(self).__name__, name, must, got)

    def _check_together(self, columns: Mapping[str, Tensor]) -> None:
        """Check rules that tie hyperparameters together (SGD's Nesterov rule)."""

    def copy_member(self, *, dst: int, src: int, hparams: bool = True) -> None:
        """Make member ``dst``'s optimizer state a copy of member ``src``'s, in place.

        An exploit: the recipient takes the donor's moments and step count and, with
        ``hparams=True``, its hyperparameters (which an explore then overwrites through
        :meth:`set`). Parameters are not the optimizer's to copy: the stack copies them.
        """
        d, s = self._member("dst", dst), self._member("src", src)
        tensors = [t for kind in self._moments.values() for t in kind.values()]
        tensors += [*self._counters.values(), *(self._hparams.values() if hparams else ())]
        with torch.no_grad():
            for t in tensors:
                t[d] = t[s]

    def member_state(self, member: int) -> dict[str, Any]:
        """One member's state as plain data for a checkpoint: its ``hparams`` (floats),
        its counters (Adam's ``step``, an int; SGD's ``has_momentum_buffer``, a bool) and
        its moments (``exp_avg``, ...: parameter name -> a copy of its slice)."""
        i = self._member("member", member)
        state: dict[str, Any] = {"hparams": self.hparams(i)}
        state.update({name: counter[i].item() for name, counter in self._counters.items()})
        for kind, tensors in self._moments.items():
            state[kind] = {name: t[i].clone() for name, t in tensors.items()}
        return state

    def load_member_state(self, member: int, state: Mapping[str, Any]) -> None:
        """Write what :meth:`member_state` gave into one member's slice, in place; a key
        missing or unknown, or a value of the wrong kind or shape, is a
        :class:`CheckpointError` (and nothing is changed)."""
        i = self._member("member", member)
        fix = f"Fix: pass what member_state() gave for a {type(self).__name__} of these params."

        def refuse(what: str, must: str, got: str) -> CheckpointError:
            return CheckpointError(
                f"The optimizer state's {what} for member {i} must be {must}. Got {got}. {fix}"
            )

        keys = ["hparams", *self._counters, *self._moments]
        if not isinstance(state, Mapping) or set(state) != set(keys):
            got = sorted(map(shown, state)) if isinstance(state, Mapping) else shown(state)
            raise refuse("keys", f"{sorted(keys)}", f"{got}")
        hparams = state["hparams"]
        if not isinstance(hparams, Mapping) or set(hparams) != set(self._hparams):
            raise refuse("'hparams'", f"a dict of {list(self._hparams)}", shown(hparams))
        for name, counter in self._counters.items():
            value, flag = state[name], counter.dtype == torch.bool
            count = isinstance(value, numbers.Integral) and _is_real(value)
            if not (isinstance(value, bool) if flag else count and 0 <= int(value) < 2**62):
                raise refuse(repr(name), "True or False" if flag else "an int >= 0", shown(value))
        for kind in self._moments:
            tensors = state[kind]
            if not isinstance(tensors, Mapping) or set(tensors) != set(self._params):
                raise refuse(repr(kind), f"a dict of {sorted(self._params)}", shown(tensors))
            for name, p in self._params.items():
                t = tensors[name]
                if not (isinstance(t, Tensor) and t.is_floating_point() and t.shape == p[0].shape):
                    must = f"a floating tensor of shape {tuple(p[0].shape)}"
                    raise refuse(f"{kind}[{name!r}]", must, _described(t))
        try:
            self._set(i, hparams)
        except InvalidArgumentError as err:
            raise CheckpointError(f"{err} (optimizer state for member {i}). {fix}") from err
        with torch.no_grad():
            for name, counter in self._counters.items():
                counter[i] = state[name]
            for kind, tensors in self._moments.items():
                for name, t in tensors.items():
                    t[i].copy_(state[kind][name])

    @torch.no_grad()
    def step(self, grads: Mapping[str, Tensor], *, active: Tensor | None = None) -> None:
        """Update every active member's parameters and state, in place.

        Args:
            grads: name -> stacked gradient of its parameter's shape, dtype and device
                (as ``vmap`` of ``torch.func.grad`` gives them).
            active: a bool ``(N,)`` tensor, or ``None`` for all: inactive members'
                parameters and state stay bit-identical, whatever their gradients hold.
        """
        owner, n = type(self).__name__, self.population_size
        if not isinstance(grads, Mapping) or set(grads) != set(self._params):
            got = sorted(map(shown, grads)) if isinstance(grads, Mapping) else shown(grads)
            raise invalid(owner, "grads", f"a dict of {sorted(self._params)}", f"{got}")
        for name, p in self._params.items():
            g = grads[name]
            if not _is_like(g, p.shape, p.dtype, p.device):
                must = f"a {p.dtype} tensor of shape {tuple(p.shape)} on {p.device}"
                raise invalid(owner, f"grads[{name!r}]", must, _described(g))
        if active is not None and not _is_like(active, (n,), torch.bool, self._device):
            must = f"None or a bool tensor of shape ({n},) on {self._device}"
            raise invalid(owner, "active", must, _described(active))
        if "max_norm" in self._hparams:
            _, coefficients = _clip_coefficients(grads, self._hparams["max_norm"])
            grads = {n: g * _view(coefficients.to(g.dtype), g) for n, g in grads.items()}
        self._update(grads, active)

    def _update(self, grads: Mapping[str, Tensor], active: Tensor | None) -> None:
        raise NotImplementedError  # pragma: no cover

    def _per_dtype(self, columns: Mapping[str, Tensor]) -> dict[torch.dtype, dict[str, Tensor]]:
        """The step's ``(N,)`` float64 numbers cast once to each parameter dtype (as torch
        casts its Python-float scalars to the tensor's dtype)."""
        dtypes = {p.dtype for p in self._params.values()}
        return {dt: {k: v.to(dt) for k, v in columns.items()} for dt in dtypes}

    def _member(self, argument: str, member: Any) -> int:
        n = self.population_size
        i = operator.index(member) if isinstance(member, numbers.Integral) else -1
        if isinstance(member, bool) or not 0 <= i < n:
            must = f"a member index in [0, {n})"
            raise invalid(type(self).__name__, argument, must, shown(member))
        return i


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_float(value: Any) -> float:
    """A real number as a float (``inf`` for an int too large for one)."""
    big = isinstance(value, int) and abs(value) >= 2**1023
    return math.copysign(math.inf, value) if big else float(value)


def _is_like(t: Any, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> bool:
    return isinstance(t, Tensor) and (t.shape, t.dtype, t.device) == (shape, dtype, device)


def _described(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)} on {value.device}"
    return shown(value)


class SGD(VectorisedOptimizer):
    """Stochastic gradient descent with momentum, per member (as :class:`torch.optim.SGD`).

    For each member, with its own ``lr``, ``momentum`` (mu), ``dampening`` (tau) and
    ``weight_decay`` (lambda)::

        g <- g + lambda * p
        b <- g                          at its first step with mu != 0
        b <- mu * b + (1 - tau) * g     at later ones
        g <- g + mu * b  (Nesterov)  or  b;  both only where mu != 0
        p <- p - lr * g

    A member with ``momentum == 0`` leaves its buffer (if any) untouched, as torch does.
    ``nesterov`` is the optimizer's: it needs every member's momentum > 0 and dampening
    0 (torch's rule). ``max_norm`` (``None``: off) clips each member's gradients first.
    """

    def __init__(
        self,
        params: Mapping[str, Tensor],
        *,
        lr: HparamValue = 1e-3,
        momentum: HparamValue = 0.0,
        dampening: HparamValue = 0.0,
        weight_decay: HparamValue = 0.0,
        nesterov: bool = False,
        max_norm: HparamValue | None = None,
    ) -> None:
        if not isinstance(nesterov, bool):
            raise invalid("SGD", "nesterov", "True or False", shown(nesterov))
        self.nesterov = nesterov
        hparams = {"lr": lr, "momentum": momentum, "dampening": dampening}
        hparams["weight_decay"] = weight_decay
        flags = {"has_momentum_buffer": torch.bool}
        super().__init__(params, hparams, max_norm, ("momentum_buffer",), flags)

    def _check_together(self, columns: Mapping[str, Tensor]) -> None:
        bad = ((columns["momentum"] <= 0) | (columns["dampening"] != 0)).nonzero()
        if self.nesterov and len(bad):
            i = int(bad[0])
            got = f"nesterov=True with member {i}'s " + ", ".join(
                f"{k}={float(columns[k][i])}" for k in ("momentum", "dampening")
            )
            fix = "Fix: give every member momentum > 0 and dampening=0, or nesterov=False."
            raise invalid("SGD", "nesterov", "False unless momentum > 0, dampening 0", got, fix)

    def _update(self, grads: Mapping[str, Tensor], active: Tensor | None) -> None:
        h = self._hparams
        uses_momentum = h["momentum"] != 0
        has_buffer = self._counters["has_momentum_buffer"]
        scalars = {"lr": h["lr"], "momentum": h["momentum"], "weight_decay": h["weight_decay"]}
        cast = self._per_dtype({**scalars, "one_minus_dampening": 1 - h["dampening"]})
        if active is None and bool((has_buffer & uses_momentum).all()):
            self._steady_update(grads, cast)
            return
        for name, p in self._params.items():
            c = {k: _view(v, p) for k, v in cast[p.dtype].items()}
            on, had = _view(uses_momentum, p), _view(has_buffer, p)
            buf = self._moments["momentum_buffer"][name]
            g = grads[name] + c["weight_decay"] * p
            new_buf = torch.where(had, c["momentum"] * buf + c["one_minus_dampening"] * g, g)
            new_buf = torch.where(on, new_buf, buf)
            direction = g + c["momentum"] * new_buf if self.nesterov else new_buf
            direction = torch.where(on, direction, g)
            _write(buf, new_buf, active)
            _write(p, p - c["lr"] * direction, active)
        _write(has_buffer, has_buffer | uses_momentum, active)

    def _steady_update(
        self, grads: Mapping[str, Tensor], cast: Mapping[torch.dtype, Mapping[str, Tensor]]
    ) -> None:
        """The same update when every member steps and has a momentum buffer (every step
        but the first, typically), written in place: the same numbers, fewer tensors."""
        for name, p in self._params.items():
            c = {k: _view(v, p) for k, v in cast[p.dtype].items()}
            buf = self._moments["momentum_buffer"][name]
            g = grads[name] + c["weight_decay"] * p
            buf.mul_(c["momentum"]).add_(c["one_minus_dampening"] * g)
            p.sub_(c["lr"] * (g + c["momentum"] * buf if self.nesterov else buf))


class Adam(VectorisedOptimizer):
    """Adam, per member (as :class:`torch.optim.Adam`), each member at its own step count.

    For each member, with its own ``lr``, ``beta1``, ``beta2``, ``eps`` and
    ``weight_decay`` (lambda), at its step ``t``::

        g <- g + lambda * p              (AdamW instead: p <- p * (1 - lr * lambda))
        m <- lerp(m, g, 1 - beta1)
        v <- beta2 * v + (1 - beta2) * g * g
        v_max <- max(v_max, v)           (amsgrad; v_max then stands for v below)
        p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    ``amsgrad`` is the optimizer's. ``max_norm`` (``None``: off) clips each member's
    gradients first. State starts at zero with step 0, which is torch's lazy start.
    """

    DEFAULTS: ClassVar[dict[str, float]] = _ADAM_DEFAULTS
    _decoupled: ClassVar[bool] = False

    def __init__(
        self,
        params: Mapping[str, Tensor],
        *,
        lr: HparamValue | None = None,
        beta1: HparamValue | None = None,
        beta2: HparamValue | None = None,
        eps: HparamValue | None = None,
        weight_decay: HparamValue | None = None,
        amsgrad: bool = False,
        max_norm: HparamValue | None = None,
    ) -> None:
        if not isinstance(amsgrad, bool):
            raise invalid(type(self).__name__, "amsgrad", "True or False", shown(amsgrad))
        self.amsgrad = amsgrad
        moments = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")[: 3 if amsgrad else 2]
        given = {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay}
        hparams = {k: self.DEFAULTS[k] if v is None else v for k, v in given.items()}
        super().__init__(params, hparams, max_norm, moments, {"step": torch.int64})

    def _update(self, grads: Mapping[str, Tensor], active: Tensor | None) -> None:
        h, step = self._hparams, self._counters["step"]
        new_step = step + 1
        t = new_step.to(torch.float64)
        cast = self._per_dtype(
            {
                "decay": 1 - h["lr"] * h["weight_decay"] if self._decoupled else h["weight_decay"],
                "one_minus_beta1": 1 - h["beta1"],
                "beta2": h["beta2"],
                "one_minus_beta2": 1 - h["beta2"],
                "step_size": h["lr"] / (1 - h["beta1"] ** t),
                "bias_correction2_sqrt": (1 - h["beta2"] ** t) ** 0.5,
                "eps": h["eps"],
            }
        )
        for name, p in self._params.items():
            c = {k: _view(v, p) for k, v in cast[p.dtype].items()}
            g, new_p = grads[name], p
            if self._decoupled:
                new_p = p * c["decay"]
            else:
                g = g + c["decay"] * p
            m, v = self._moments["exp_avg"][name], self._moments["exp_avg_sq"][name]
            new_m = torch.lerp(m, g, c["one_minus_beta1"])
            new_v = c["beta2"] * v + c["one_minus_beta2"] * g * g
            v_hat = new_v
            if self.amsgrad:
                v_max = self._moments["max_exp_avg_sq"][name]
                v_hat = torch.maximum(v_max, new_v)
                _write(v_max, v_hat, active)
            denom = v_hat.sqrt() / c["bias_correction2_sqrt"] + c["eps"]
            _write(p, new_p - c["step_size"] * new_m / denom, active)
            _write(m, new_m, active)
            _write(v, new_v, active)
        _write(step, new_step, active)


class AdamW(Adam):
    """AdamW, per member (as :class:`torch.optim.AdamW`): Adam with decoupled weight decay
    (``p <- p * (1 - lr * weight_decay)`` before the update), by default 0.01."""

    DEFAULTS: ClassVar[dict[str, float]] = {**Adam.DEFAULTS, "weight_decay": 1e-2}
    _decoupled: ClassVar[bool] = True
