"""The stacked members: N members of one architecture as tensors with a population axis.

Each parameter and buffer is one ``(N, ...)`` tensor (``torch.func.stack_module_state``'s
layout); a copy of the architecture on the ``meta`` device runs it by ``functional_call``,
and ``vmap`` of it gives every member's loss at once; one backward pass of their sum gives
every member's gradients (the members are independent: the sum's gradient with respect to
a member's slice is that member's own; as ``vmap(grad(...))``, bit for bit, and faster on
a CPU). ``torch.func``:

- Buffers written in place (BatchNorm's running statistics) must enter ``vmap`` batched,
  as the parameters do; then each member's slice is updated in place as alone. A norm
  with ``momentum=None`` reads a counter as a Python number under vmap: it is refused.
- Random operations inside ``vmap`` are refused: dropout noise is drawn before the call
  from each member's own generator and enters as stacked data (:class:`Dropout`).
- Data-dependent shapes or values (``nonzero``, boolean masks, ``.item()``) have no
  batching rule: :meth:`StackedMembers.evaluate` then loops over the members.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from itertools import chain
from typing import Any, NamedTuple

from genepool._errors import InvalidArgumentError, invalid, missing_dependency
from genepool._rng import member_stream

try:
    import torch
    from torch import Tensor, nn
    from torch.func import functional_call, vmap
    from torch.nn.modules.batchnorm import _NormBase
    from torch.nn.modules.dropout import _DropoutNd
    from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_dependency("torch", "torch", "genepool.vectorised") from _err

__all__ = ["Dropout", "Gradients", "StackedMembers", "member_generator"]

log = logging.getLogger("genepool.vectorised")

#: A user's loss: ``loss_fn(model, batch) -> loss`` or ``(loss, {name: metric})``.
LossFn = Callable[[Callable[..., Any], Any], Any]
#: The dropouts a forward pass calls, in order, with their input's shape and dtype.
Calls = list[tuple[str, torch.Size, torch.dtype]]


def member_generator(
    seed: int, member: int, generation: int, attempt: int = 0, *, device: Any = None
) -> torch.Generator:
    """A member's torch random stream in a generation, for its dropout masks and batches.

    Seeded with the first draw of genepool's member stream
    (:func:`genepool._rng.member_stream` of the same keys), so it depends on nothing else.
    """
    draw = int(member_stream(seed, member, generation, attempt).integers(2**63))
    return torch.Generator(device="cpu" if device is None else device).manual_seed(draw)


class Dropout(nn.Dropout):
    """A drop-in for ``nn.Dropout`` whose masks come from a member's own random stream.

    Alone (a plain module, as :meth:`StackedMembers.module_for` gives), it draws its noise
    from :attr:`generator` (torch's global one when ``None``). In a stack, the noise and
    the rate arrive as the non-persistent buffers ``noise`` and ``rate``, drawn before
    the batched call; both ways compute the same mask from the same draws. ``p`` may be
    1 (everything dropped); ``inplace`` is not supported.
    """

    noise: Tensor | None
    rate: Tensor | None

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)
        self.generator: torch.Generator | None = None
        self.register_buffer("noise", None, persistent=False)
        self.register_buffer("rate", None, persistent=False)

    def forward(self, input: Tensor) -> Tensor:
        if not self.training:
            return input
        noise, rate, x = self.noise, self.rate, input
        if noise is None:
            noise = torch.rand(x.shape, dtype=x.dtype, device=x.device, generator=self.generator)
        if rate is None:
            rate = torch.tensor(self.p, dtype=torch.float64, device=x.device)
        rate = rate.to(x.dtype)  # the same arithmetic alone and stacked: the same masks
        return x * (noise >= rate).to(x.dtype) * torch.where(rate < 1, 1 / (1 - rate), 0)


class Gradients(NamedTuple):
    """What :meth:`StackedMembers.gradients` returns, each with the population axis first.

    Attributes:
        grads: parameter name -> gradient ``(N, ...)`` of each member's weighted loss.
        loss: each member's loss ``(N,)``, before its weight.
        metrics: metric name -> ``(N,)``, as the loss function returned them.
    """

    grads: dict[str, Tensor]
    loss: Tensor
    metrics: dict[str, Tensor]

    def finite(self, metric: str | None = None) -> Tensor:
        """``(N,)`` bool: each member's loss, ``metric`` (if any) and gradients are finite."""
        finite = torch.isfinite(self.loss)
        if metric in self.metrics:
            finite &= torch.isfinite(self.metrics[metric])
        for g in self.grads.values():
            finite &= torch.isfinite(g.flatten(1)).all(1)
        return finite


class StackedMembers:
    """N members of one architecture, stacked, trained in one batched computation.

    Member ``i`` is ``factory()`` called under ``torch.manual_seed(seeds[i])`` (on the
    CPU, then moved to ``device``): its initial weights depend on its seed alone. Its
    dropout stream starts as ``member_generator(seeds[i], i, 0)``; a driver sets the
    run's streams with :meth:`set_generator`. Every batch holds one slice per member
    (leading axis N), so each member sees its own examples.

    Attributes:
        params: name -> ``(N, ...)``, the parameters that require a gradient.
        frozen: name -> ``(N, ...)``, those that do not; buffers: likewise, the buffers.
        dropout_rates: :class:`Dropout` module name -> ``(N,)`` float64 rates.
        fallbacks: the operations for which :meth:`evaluate` fell back to a loop.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> def mlp() -> nn.Module:
        ...     return nn.Sequential(nn.Linear(3, 4), Dropout(0.1), nn.Linear(4, 1))
        >>> stack = StackedMembers(mlp, seeds=[0, 1, 2])
        >>> x, y = torch.randn(3, 8, 3), torch.randn(3, 8, 1)  # a batch per member
        >>> def loss_fn(model, batch):
        ...     return nn.functional.mse_loss(model(batch[0]), batch[1])
        >>> out = stack.gradients(loss_fn, (x, y), weights=torch.tensor([1.0, 0.5, 2.0]))
        >>> out.loss.shape, out.grads["0.weight"].shape
        (torch.Size([3]), torch.Size([3, 4, 3]))
        >>> for name, g in out.grads.items():
        ...     stack.params[name] -= 0.1 * g
        >>> sorted(stack.member_state(2))
        ['0.bias', '0.weight', '2.bias', '2.weight']
    """

    def __init__(
        self, factory: Callable[[], nn.Module], *, seeds: Sequence[int], device: Any = None
    ) -> None:
        if not callable(factory):
            raise _bad("factory", "a callable returning a fresh nn.Module", factory)
        if not isinstance(seeds, Sequence) or not seeds or any(type(s) is not int for s in seeds):
            raise _bad("seeds", "a non-empty sequence of ints, one per member", repr(seeds))
        try:
            target = torch.device("cpu" if device is None else device)
        except (RuntimeError, TypeError) as err:
            raise _bad("device", "a torch device", repr(device)) from err
        self._template = template = _build(factory, seeds[0])
        stacked = {
            name: torch.empty((len(seeds), *t.shape), dtype=t.dtype, device=target)
            for name, t in _named_tensors(template).items()
        }
        if not stacked:
            raise _bad("factory", "a module with parameters or buffers", factory)
        for i, seed in enumerate(seeds):
            module = template if i == 0 else _build(factory, seed)
            if i and module is template:
                raise _bad("factory", "a callable returning a fresh module each call", factory)
            _copy_in(stacked, i, module)
        params = dict(template.named_parameters())
        self.params = {n: stacked[n] for n, p in params.items() if p.requires_grad}
        self.frozen = {n: stacked[n] for n, p in params.items() if not p.requires_grad}
        self.buffers = {n: stacked[n] for n, _ in template.named_buffers()}
        self.device = device = next(iter(stacked.values())).device
        self.dropout_rates = {  # the factory's rates to start with
            n: torch.full((len(seeds),), m.p, dtype=torch.float64, device=device)
            for n, m in _dropouts(template).items()
        }
        self.fallbacks: list[str] = []
        self._stacked = stacked
        self._generators = [member_generator(s, i, 0, device=device) for i, s in enumerate(seeds)]
        self._base = copy.deepcopy(template).to("meta")
        self._probes: dict[Any, Calls] = {}
        self._state_keys = _state_keys(template)

    def __len__(self) -> int:
        """The number of members."""
        return len(self._generators)

    # -- the batched computation ------------------------------------------------------------
    def gradients(self, loss_fn: LossFn, batch: Any, *, weights: Tensor | None = None) -> Gradients:
        """Every member's loss and gradients at once, in training mode.

        Args:
            loss_fn: ``loss_fn(model, batch)``: one member's scalar loss, or ``(loss,
                {name: scalar})``; ``model(*inputs)`` is its forward pass, ``batch`` its slice.
            batch: a tensor, or a tuple, list or dict of them, each ``(N, ...)``.
            weights: ``(N,)``, each member's loss multiplied by its weight (default 1).

        BatchNorm buffers are updated in place; each member's dropout noise is drawn from
        its own generator before the batched call.
        """
        self._check_batch(batch)
        n = len(self)
        if weights is None:
            weights = torch.ones(n, device=self.device)
        elif not isinstance(weights, Tensor) or tuple(weights.shape) != (n,):
            raise _bad("weights", f"a tensor of shape ({n},)", _describe(weights))
        rest = {**self.frozen, **self.buffers, **self._dropout_data(loss_fn, batch)}

        def member_loss(
            params: dict[str, Tensor], rest: dict[str, Tensor], batch: Any, weight: Tensor
        ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
            loss, metrics = _split(loss_fn(self._caller(params, rest), batch))
            return loss * weight.to(loss.dtype), loss.detach(), metrics

        self._base.train()
        params = {name: p.detach().requires_grad_() for name, p in self.params.items()}
        with torch.enable_grad():
            weighted, loss, metrics = vmap(member_loss)(
                params, rest, batch, weights.to(self.device)
            )
            # The members' losses are independent: the gradient of their sum with respect
            # to the stacked parameters is every member's own gradient, at once.
            grads = torch.autograd.grad(
                weighted.sum(), list(params.values()), materialize_grads=True
            )
        metrics = {name: value.detach() for name, value in metrics.items()}
        return Gradients(grads=dict(zip(params, grads, strict=True)), loss=loss, metrics=metrics)

    def evaluate(self, fn: LossFn, batch: Any, *, loop: bool | None = None) -> Any:
        """``fn(model, batch)`` for every member in evaluation mode, without gradients.

        ``fn`` returns a tensor, or a tuple, list or dict of them; the result holds each
        with the population axis first. With ``loop=None``, a module that ``vmap`` cannot
        batch runs one member at a time (logged, and listed in :attr:`fallbacks`);
        ``loop=True`` always loops, ``loop=False`` never does.
        """
        self._check_batch(batch)
        rest = {**self.frozen, **self.buffers}

        def member_eval(params: dict[str, Tensor], rest: dict[str, Tensor], batch: Any) -> Any:
            return fn(self._caller(params, rest), batch)

        self._base.eval()
        with torch.no_grad():
            if not loop:
                try:
                    return vmap(member_eval)(self.params, rest, batch)
                except RuntimeError as err:
                    if loop is False:
                        raise
                    if (op := _unbatched_op(err)) not in self.fallbacks:
                        self.fallbacks.append(op)
                        log.warning("evaluate loops over the members: vmap cannot batch %s", op)
            outs = [
                member_eval(_slice(self.params, i), _slice(rest, i), _slice(batch, i))
                for i in range(len(self))
            ]
        return tree_map(lambda *xs: torch.stack(xs), *outs)

    def _caller(self, params: dict[str, Tensor], rest: dict[str, Tensor]) -> Callable[..., Any]:
        def model(*args: Any, **kwargs: Any) -> Any:
            return functional_call(self._base, (params, rest), args, kwargs)

        return model

    def _check_batch(self, batch: Any) -> None:
        n = len(self)
        for leaf in tree_flatten(batch)[0] or [batch]:
            if not isinstance(leaf, Tensor) or leaf.dim() == 0 or leaf.shape[0] != n:
                fix = "Fix: stack one slice per member: x[idx], idx of shape (N, batch)."
                raise _bad("batch", f"tensors with a leading axis of {n}", _describe(leaf), fix)
            if leaf.device != self.device:
                fix = f"Fix: move it with .to({str(self.device)!r})."
                raise _bad("batch", f"on the members' device {self.device}", leaf.device, fix)

    # -- dropout: each member's masks from its own stream -----------------------------------
    def generator(self, member: int) -> torch.Generator:
        """The generator member ``member``'s dropout noise is drawn from."""
        return self._generators[self._index("member", member)]

    def set_generator(self, member: int, generator: torch.Generator) -> None:
        """Draw member ``member``'s noise from ``generator`` from now on (a new generation,
        an exploit's reseed)."""
        i = self._index("member", member)
        if not isinstance(generator, torch.Generator) or generator.device != self.device:
            fix = "Fix: member_generator(seed, member, generation, device=stack.device)."
            raise _bad("generator", f"a torch.Generator on {self.device}", repr(generator), fix)
        self._generators[i] = generator

    def set_dropout(self, member: int, p: float, *, module: str | None = None) -> None:
        """Set member ``member``'s dropout rate to ``p`` in every :class:`Dropout`, or in
        the one named ``module``."""
        i = self._index("member", member)
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise _bad("p", "a number in [0, 1]", repr(p))
        if module is not None and module not in self.dropout_rates:
            raise _bad("module", f"one of {sorted(self.dropout_rates)}", repr(module))
        for name, rates in self.dropout_rates.items():
            if module in (None, name):
                rates[i] = float(p)

    def _dropout_data(self, loss_fn: LossFn, batch: Any) -> dict[str, Tensor]:
        """Each dropout's stacked noise and rates, keyed as its buffers."""
        if not self.dropout_rates:
            return {}
        calls = self._dropout_calls(loss_fn, batch)
        noise: dict[str, list[Tensor]] = {name: [] for name, _, _ in calls}
        for g in self._generators:  # member by member, its dropouts in the order called
            for name, shape, dtype in calls:
                noise[name].append(torch.rand(shape, dtype=dtype, device=self.device, generator=g))
        data = {_key(name, "rate"): rates for name, rates in self.dropout_rates.items()}
        return data | {_key(name, "noise"): torch.stack(ts) for name, ts in noise.items()}

    def _dropout_calls(self, loss_fn: LossFn, batch: Any) -> Calls:
        """The dropouts one member's forward calls, in order, with their input's shape and
        dtype: found by running ``loss_fn`` once on the ``meta`` device, then remembered."""
        leaves, spec = tree_flatten(batch)
        key = (loss_fn, spec, tuple((t.shape, t.dtype) for t in leaves))
        if key in self._probes:
            return self._probes[key]
        calls: Calls = []

        def record(name: str, module: nn.Module, args: tuple[Any, ...]) -> None:
            if any(name == seen for seen, _, _ in calls):
                fix = "Fix: give each place that drops its own Dropout module."
                raise _bad("factory", "a module calling each Dropout once", repr(name), fix)
            calls.append((name, args[0].shape, args[0].dtype))

        hooks = [
            m.register_forward_pre_hook(partial(record, name))
            for name, m in _dropouts(self._base).items()
        ]
        meta = [torch.empty(t.shape[1:], dtype=t.dtype, device="meta") for t in leaves]
        try:
            self._base.train()
            with torch.no_grad():
                loss_fn(self._base, tree_unflatten(meta, spec))
        finally:
            for hook in hooks:
                hook.remove()
        if len(self._probes) >= 64:
            self._probes.clear()
        self._probes[key] = calls
        return calls

    # -- one member's slice in and out ------------------------------------------------------
    def member_state(self, member: int) -> dict[str, Tensor]:
        """Member ``member``'s ``state_dict``: its own tensors, cloned, on the CPU."""
        i = self._index("member", member)
        return {k: self._stacked[n][i].to("cpu", copy=True) for k, n in self._state_keys.items()}

    def load_member_state(self, member: int, state: Mapping[str, Tensor]) -> None:
        """Write ``state`` (a ``state_dict`` of the architecture) into member ``member``;
        every key, shape and kind is checked before anything is written."""
        i = self._index("member", member)
        if not isinstance(state, Mapping):
            raise _bad("state", "a mapping of state_dict keys to tensors", type(state))
        missing = sorted(set(self._state_keys) - set(state))
        unexpected = sorted(set(state) - set(self._state_keys))
        if missing or unexpected:
            fix = "Fix: pass member_state(i), or the state_dict() of a module the factory built."
            got = f"missing {missing}, unexpected {unexpected}"
            raise _bad("state", "a state_dict of this architecture", got, fix)
        for key, value in state.items():
            target = self._stacked[self._state_keys[key]][i]
            if not _same_kind(value, target):
                raise _bad("state", f"{key!r}: {_describe(target)}", f"{key}={_describe(value)}")
        with torch.no_grad():
            for key, value in state.items():
                self._stacked[self._state_keys[key]][i].copy_(value)

    def copy_member(self, *, dst: int, src: int) -> None:
        """Copy member ``src``'s parameters and buffers into member ``dst`` in place (an
        exploit). Dropout rates are hyperparameters and the generator is the recipient's
        randomness: the driver sets them (:meth:`set_dropout`, :meth:`set_generator`)."""
        d, s = self._index("dst", dst), self._index("src", src)
        with torch.no_grad():
            for tensor in self._stacked.values():
                tensor[d].copy_(tensor[s])

    def module_for(self, member: int) -> nn.Module:
        """A plain module with member ``member``'s weights, dropout rates and a copy of its
        generator, on the members' device: trained alone on the same batches, it follows
        the trajectory it would follow in the stack."""
        i = self._index("member", member)
        module = copy.deepcopy(self._template)
        with torch.no_grad():
            for name, tensor in _named_tensors(module).items():
                tensor.copy_(self._stacked[name][i])
        module.to(self.device)
        generator = torch.Generator(device=self.device)
        generator.set_state(self._generators[i].get_state())
        for name, dropout in _dropouts(module).items():
            dropout.p, dropout.generator = float(self.dropout_rates[name][i]), generator
        return module

    def _index(self, name: str, member: Any) -> int:
        if isinstance(member, bool) or not isinstance(member, int) or not 0 <= member < len(self):
            raise _bad(name, f"a member index in [0, {len(self)})", repr(member))
        return member


def _bad(name: str, must: str, got: Any, fix: str | None = None) -> InvalidArgumentError:
    return invalid("StackedMembers", name, must, got, fix)


def _build(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``factory()`` under ``torch.manual_seed(seed)``, leaving torch's global stream as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = factory()
    if not isinstance(module, nn.Module):
        raise _bad("factory", "a callable returning an nn.Module", repr(module))
    for name, m in module.named_modules():
        if isinstance(m, _DropoutNd) and not isinstance(m, Dropout):
            fix = f"Fix: use {Dropout.__module__}.Dropout(p): it draws from each member's stream."
            got = f"{type(m).__name__} at {name!r}"
            raise _bad("factory", "a module without torch's random dropout", got, fix)
        if isinstance(m, _NormBase) and m.track_running_stats and m.momentum is None:
            fix = "Fix: give it a momentum (e.g. 0.1): vmap cannot batch a cumulative average."
            got = f"{type(m).__name__} at {name!r} with momentum=None"
            raise _bad("factory", "a module whose norms have a momentum", got, fix)
    return module


def _named_tensors(module: nn.Module) -> dict[str, Tensor]:
    return dict(chain(module.named_parameters(), module.named_buffers()))


def _copy_in(stacked: dict[str, Tensor], i: int, module: nn.Module) -> None:
    """Copy ``module``'s tensors into slice ``i``, refusing another architecture."""
    tensors = _named_tensors(module)
    for name in sorted(stacked.keys() | tensors.keys()):
        mine, first = tensors.get(name), stacked[name][0] if name in stacked else None
        if mine is None or first is None or (mine.shape, mine.dtype) != (first.shape, first.dtype):
            got = f"{name!r} of member {i}: {_describe(mine)}, of member 0: {_describe(first)}"
            raise _bad("factory", "a callable returning modules of one architecture", got)
    with torch.no_grad():
        for name, t in tensors.items():
            stacked[name][i].copy_(t)


def _same_kind(value: Any, target: Tensor) -> bool:
    """Whether ``value`` is a tensor that fits ``target``: its shape, floating or not."""
    kind = (target.shape, target.is_floating_point())
    return isinstance(value, Tensor) and (value.shape, value.is_floating_point()) == kind


def _describe(value: Any) -> str:
    if value is None:
        return "missing"
    return (
        f"{tuple(value.shape)} {value.dtype}" if isinstance(value, Tensor) else type(value).__name__
    )


def _dropouts(module: nn.Module) -> dict[str, Dropout]:
    return {n: m for n, m in module.named_modules() if isinstance(m, Dropout)}


def _state_keys(module: nn.Module) -> dict[str, str]:
    """Each ``state_dict`` key -> the stacked tensor it reads (tied weights share one)."""
    canonical: dict[int, str] = {}
    for name, t in chain(
        module.named_parameters(remove_duplicate=False),
        module.named_buffers(remove_duplicate=False),
    ):
        canonical.setdefault(id(t), name)
    return {key: canonical[id(t)] for key, t in module.state_dict(keep_vars=True).items()}


def _split(out: Any) -> tuple[Tensor, dict[str, Tensor]]:
    loss, metrics = out if isinstance(out, tuple) and len(out) == 2 else (out, {})
    if not isinstance(loss, Tensor) or loss.dim() != 0 or not isinstance(metrics, Mapping):
        must = "a function returning a scalar loss tensor, or (loss, {name: scalar})"
        raise _bad("loss_fn", must, repr(out)[:200])
    return loss, dict(metrics)


def _key(module: str, buffer: str) -> str:
    return f"{module}.{buffer}" if module else buffer


def _slice(tree: Any, i: int) -> Any:
    """Member ``i``'s slice of every tensor in ``tree``."""
    return tree_map(lambda t: t[i], tree)


def _unbatched_op(err: RuntimeError) -> str:
    """The operation vmap could not batch: the operator its error names, else its first
    sentence."""
    text = str(err).removeprefix("vmap: ")
    found = re.search(r"aten::\w+(?:\.\w+)?", text)
    return found.group(0) if found else text.split(". ")[0][:120]
