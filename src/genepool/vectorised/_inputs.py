"""A vectorised run's user functions (:func:`genepool.vectorised.run`'s ``loss``,
``data``, ``evaluate`` and ``eval_data``) applied to stacked members, and every argument
of the run checked before it is created or resumed: one member built, stepped once and
evaluated once (:func:`probe`), so that a wrong argument is refused by its name before
anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from genepool._errors import InvalidArgumentError, invalid, missing_dependency
from genepool._redact import shown
from genepool._stacked import check_settings
from genepool.space import Space
from genepool.vectorised._hparams import OWNER, Targets
from genepool.vectorised._memory import SavedTensors, member_bytes
from genepool.vectorised._sample import Sample
from genepool.vectorised._stack import StackedMembers

try:
    import torch
    from torch import Tensor
    from torch.utils._pytree import tree_flatten, tree_map
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_dependency("torch", "torch", "genepool.vectorised") from _err

__all__ = ["Probed", "Steps", "check", "probe", "refused"]


class Steps:
    """The user's functions for one step: a batch per member, the loss, the evaluation."""

    def __init__(self, *, loss: Any, data: Any, evaluate: Any, eval_data: Any, metric: Any) -> None:
        for name, fn in (("loss", loss), ("data", data)):
            if not callable(fn):
                raise invalid(OWNER, name, "a function", shown(fn))
        if evaluate is not None and not callable(evaluate):
            raise invalid(OWNER, "evaluate", "None or a function", shown(evaluate))
        if (evaluate is None) != (eval_data is None):
            pair = ("evaluate", "eval_data")
            given, missing = pair if evaluate is not None else pair[::-1]
            fix = "Fix: pass evaluate=fn(model, batch) -> {name: value} with eval_data=batch."
            raise invalid(OWNER, missing, f"given with {given}", "None", fix)
        self.loss, self.data, self.evaluate, self.eval_data = loss, data, evaluate, eval_data
        self.metric = metric

    def batch(self, stack: StackedMembers, members: Sequence[int]) -> Any:
        """A training batch per member, stacked: drawn for ``members``, the first one's
        standing in for the others (whose gradients are not used)."""
        if isinstance(self.data, Sample):  # indices drawn per member, gathered at once
            rows = {m: self.data.indices(stack.generator(m)) for m in members}
            fill = rows[members[0]]
            return self.data.gather(torch.stack([rows.get(i, fill) for i in range(len(stack))]))
        drawn = {m: self.data(stack.generator(m), m) for m in members}
        filler = drawn[members[0]]
        batches = [drawn.get(i, filler) for i in range(len(stack))]
        try:
            return tree_map(lambda *ts: torch.stack(ts).to(stack.device), *batches)
        except (RuntimeError, TypeError, ValueError) as err:
            must = "a function returning tensors (or a tuple, list or dict of them) of one shape"
            raise invalid(OWNER, "data", must, f"{type(err).__name__}: {err}"[:300]) from err

    def evaluated(self, stack: StackedMembers) -> dict[str, list[float]]:
        """Every member's evaluation: metric name -> one number per member."""
        n, batch = len(stack), self.eval_data
        batch = batch() if callable(batch) else batch
        leaves = tree_flatten(batch)[0]
        if not leaves or not all(isinstance(t, Tensor) for t in leaves):
            must = "tensors (or a tuple, list or dict of them), or a function returning them"
            raise invalid(OWNER, "eval_data", must, shown(batch))
        batch = tree_map(lambda t: t.to(stack.device).expand(n, *t.shape), batch)
        try:
            out = stack.evaluate(self.evaluate, batch)
        except (InvalidArgumentError, RuntimeError, TypeError, ValueError) as err:
            must = "a function returning {name: scalar tensor} for one member"
            raise invalid(OWNER, "evaluate", must, f"{type(err).__name__}: {err}"[:300]) from err
        if not isinstance(out, Mapping) or not out:
            raise invalid(OWNER, "evaluate", "a function returning {name: scalar}", shown(out))
        for name, value in out.items():
            if not isinstance(name, str) or not isinstance(value, Tensor) or value.shape != (n,):
                got = f"{shown(name)}: {shown(value)}"
                raise invalid(OWNER, "evaluate", "a function returning {name: scalar}", got)
        return {name: value.tolist() for name, value in out.items()}


# -- the arguments, checked before the run is created ------------------------------------------
def check(*, model: Any, space: Any, checkpoint_every: Any, settings: Mapping[str, Any]) -> None:
    """The arguments that need no computation: ``model`` callable, ``space`` a
    :class:`~genepool.Space`, ``checkpoint_every`` an int >= 1 and ``keep`` at least it,
    the run synchronous."""
    if not callable(model):
        must = "a function of no arguments returning an nn.Module"
        raise invalid(OWNER, "model", must, shown(model))
    check_settings(owner=OWNER, space=space, checkpoint_every=checkpoint_every, settings=settings)


class Probed(NamedTuple):
    """What :func:`probe` found: where the space's names go, and one member's share of
    the memory (bytes, :func:`genepool.vectorised._memory.member_bytes`) on ``device``."""

    targets: Targets
    member_bytes: int
    device: torch.device


def probe(
    model: Any, device: Any, steps: Steps, space: Space, optimizer: Any, options: Any
) -> Probed:
    """One member built, stepped once and evaluated once, its optimizer built for a
    config sampled from the space: each argument refused here, before the run is
    created."""
    try:
        one = StackedMembers(model, seeds=[0], device=device)
    except InvalidArgumentError as err:
        raise refused("device" if "'device'" in str(err) else "model", err) from err
    dropouts = list(one.dropout_rates)
    targets = Targets(space, optimizer=optimizer, options=options, dropouts=dropouts)
    try:
        opt = targets.optimizer(one.params, [space.sample(np.random.default_rng(0))])
    except InvalidArgumentError as err:
        if OWNER in str(err):  # a value of the space's that is no number
            raise
        raise refused("optimizer_options", err) from err
    saved = SavedTensors(exclude=one.params)
    try:
        batch = steps.batch(one, [0])
        out = saved.measure(lambda: one.gradients(steps.loss, batch))
    except InvalidArgumentError as err:
        raise refused("data" if "'batch'" in str(err) else "loss", err) from err
    names = ["loss", *out.metrics]
    if steps.evaluate is not None:
        evaluated = list(steps.evaluated(one))
        if both := sorted(set(evaluated) & set(names)):
            fix = "Fix: name the evaluation's metrics apart from the loss's (val_loss, ...)."
            raise invalid(OWNER, "evaluate", "metrics named apart from the loss's", both, fix)
        names += evaluated
    if steps.metric not in names:
        fix = "Fix: return it from loss as (loss, {name: value}), or from evaluate."
        must = f"one of the reported metrics {names}"
        raise invalid(OWNER, "metric", must, shown(steps.metric), fix)
    share = member_bytes(
        params=one.params,
        buffers=(one.buffers, one.frozen),
        optimizer_state=opt.member_state(0),
        activations=saved.bytes,
        batch=batch,
    )
    return Probed(targets, share, one.device)


def refused(name: str, err: InvalidArgumentError) -> InvalidArgumentError:
    """``err``, raised by a part of the run, said of the run's argument ``name``."""
    return InvalidArgumentError(f"The {name!r} argument of {OWNER} was refused: {err}")
