"""The user's functions of a JAX population, checked, and compiled for a stack of members.

The user writes one member's training as plain JAX (the functions of a plain script):

- ``init(key) -> params``: a member's initial parameters;
- ``update(params, opt_state, key) -> (params, opt_state, metrics)``: one training step
  (draw a batch with ``key``, the loss, its gradients, ``optimizer.update``,
  ``optax.apply_updates``); ``metrics`` the loss (reported as ``"loss"``) or a dict of
  scalars;
- ``evaluate(params) -> {name: scalar}`` (optional): the member's evaluation;
- ``optimizer``: an optax optimizer built with :func:`optax.inject_hyperparams`.

:class:`Program` maps each over the member axis with :func:`jax.vmap` and compiles it
with :func:`jax.jit`: one call steps every member (its parameters, its optimizer state
with its own hyperparameters in ``opt_state.hyperparams``, its own key). A member's keys
come from its stream: the key data of its round (drawn from ``claim.rng``), folded with
its step; its initial key is its stream's first draw, folded apart from the steps'.

A member left out of a step, or whose loss or new parameters are not finite, keeps its
parameters and optimizer state (a select, bit for bit): its numbers never reach the
others', and a member's trajectory does not depend on who shares the stack.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from genepool._errors import InvalidArgumentError, invalid, missing_dependency
from genepool._redact import shown
from genepool.integrations.jax._state import check_state

try:
    import jax
    import jax.numpy as jnp
except ImportError as _err:  # pragma: no cover - exercised only without jax
    raise missing_dependency("jax", "jax", "genepool.integrations.jax") from _err

__all__ = ["OWNER", "Program", "program"]

OWNER = "genepool.integrations.jax.run"
#: What a member's stream key is folded with: its initial parameters' key, its steps'.
_INIT, _TRAIN = 0, 1
_IMPL = "threefry2x32"


def program(
    *,
    init: Callable[[Any], Any],
    update: Callable[[Any, Any, Any], Any],
    optimizer: Any,
    evaluate: Callable[[Any], Any] | None = None,
    owner: str = OWNER,
) -> Program:
    """A :class:`Program` of these functions: the last one made for the same functions
    if any, so that a second run of them (a replay, a resume) compiles nothing again."""
    try:
        return _cached(init, update, optimizer, evaluate, owner)
    except TypeError:  # an optimizer that cannot be hashed: made anew
        return Program(
            init=init, update=update, optimizer=optimizer, evaluate=evaluate, owner=owner
        )


@functools.lru_cache(maxsize=8)
def _cached(init: Any, update: Any, optimizer: Any, evaluate: Any, owner: str) -> Program:
    return Program(init=init, update=update, optimizer=optimizer, evaluate=evaluate, owner=owner)


class Program:
    """One member's functions, for a stack of members.

    Raises:
        InvalidArgumentError: A function is not callable, or ``optimizer`` is no optax
            optimizer.
    """

    def __init__(
        self,
        *,
        init: Callable[[Any], Any],
        update: Callable[[Any, Any, Any], Any],
        optimizer: Any,
        evaluate: Callable[[Any], Any] | None = None,
        owner: str = OWNER,
    ) -> None:
        for name, fn in (("init", init), ("update", update)):
            if not callable(fn):
                raise invalid(owner, name, "a function", shown(fn))
        if evaluate is not None and not callable(evaluate):
            raise invalid(owner, "evaluate", "None or a function of params", shown(evaluate))
        if not (
            callable(getattr(optimizer, "init", None))
            and callable(getattr(optimizer, "update", None))
        ):
            fix = "Fix: optimizer=optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)."
            raise invalid(owner, "optimizer", "an optax optimizer", shown(optimizer), fix)
        self.owner = owner
        self.init, self.update, self.optimizer, self.evaluate = init, update, optimizer, evaluate
        self._step = jax.jit(self._step_all)
        self._evaluate = None if evaluate is None else jax.jit(jax.vmap(self._evaluate_one))
        self._gather = jax.jit(lambda tree, index: jax.tree_util.tree_map(lambda x: x[index], tree))

    # -- one member ---------------------------------------------------------------------
    def _init_one(self, data: Any) -> tuple[Any, Any]:
        params = self.init(jax.random.fold_in(_key(data), _INIT))
        return params, self.optimizer.init(params)

    def _step_one(self, params: Any, opt_state: Any, data: Any, step: Any) -> Any:
        key = jax.random.fold_in(jax.random.fold_in(_key(data), _TRAIN), step)
        out = self.update(params, opt_state, key)
        if not isinstance(out, tuple) or len(out) != 3:
            must = "a function returning (params, opt_state, metrics)"
            raise invalid(self.owner, "update", must, shown(out))
        new_params, new_state, metrics = out
        metrics = dict(metrics) if isinstance(metrics, Mapping) else {"loss": metrics}
        finite = jnp.bool_(True)
        for leaf in jax.tree_util.tree_leaves(new_params):
            if jnp.issubdtype(leaf.dtype, jnp.inexact):
                finite &= jnp.isfinite(leaf).all()
        if "loss" in metrics:
            finite &= jnp.isfinite(metrics["loss"])
        return new_params, new_state, metrics, finite

    def _evaluate_one(self, params: Any) -> Any:
        assert self.evaluate is not None
        return self.evaluate(params)

    # -- the stack ----------------------------------------------------------------------
    def _step_all(
        self, params: Any, opt_state: Any, keys: Any, steps: Any, active: Any
    ) -> tuple[Any, Any, Any, Any]:
        new_params, new_state, metrics, finite = jax.vmap(self._step_one)(
            params, opt_state, keys, steps
        )
        keep = active & finite

        def chosen(new: Any, old: Any) -> Any:
            return jnp.where(keep.reshape(keep.shape + (1,) * (new.ndim - 1)), new, old)

        params = jax.tree_util.tree_map(chosen, new_params, params)
        opt_state = jax.tree_util.tree_map(chosen, new_state, opt_state)
        return params, opt_state, metrics, finite

    def initial(self, keys: np.ndarray[Any, Any]) -> tuple[Any, Any]:
        """Stacked ``(params, opt_state)`` of fresh members, one per row of ``keys``
        (``(N, 2)`` key data): each made alone, as a plain script makes it (``init`` is
        not compiled: a member's initial params are the same in any stack)."""
        made = [self._init_one(jnp.asarray(row)) for row in np.asarray(keys)]
        stacked: tuple[Any, Any] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *made)
        return stacked

    def step(
        self,
        params: Any,
        opt_state: Any,
        keys: np.ndarray[Any, Any],
        steps: np.ndarray[Any, Any],
        active: np.ndarray[Any, Any],
    ) -> tuple[Any, Any, dict[str, np.ndarray[Any, Any]], np.ndarray[Any, Any]]:
        """One step of the members ``active`` (the others unchanged): the new stacked
        params and opt_state, each member's metrics and whether they were finite."""
        params, opt_state, metrics, finite = self._step(
            params, opt_state, keys, jnp.asarray(steps, jnp.int32), jnp.asarray(active)
        )
        host = {name: np.asarray(value) for name, value in metrics.items()}
        return params, opt_state, host, np.asarray(finite)

    def evaluated(self, params: Any) -> dict[str, np.ndarray[Any, Any]]:
        """Every member's evaluation: name -> ``(N,)``."""
        assert self._evaluate is not None
        return {name: np.asarray(v) for name, v in self._evaluate(params).items()}

    def gather(self, tree: Any, index: np.ndarray[Any, Any]) -> Any:
        """``tree``'s member ``index[i]`` in slot ``i``, every leaf at once (an exploit's
        copies: every donor read before any slot is written)."""
        return self._gather(tree, jnp.asarray(index))

    # -- the checks, on shapes alone (nothing is computed) ---------------------------------
    def check(self) -> tuple[Any, Any, list[str]]:
        """One member's ``(params, opt_state)`` shapes and the names it reports (the
        update's metrics, then the evaluation's), each function traced once.

        Raises:
            InvalidArgumentError: A function fails, or returns what it must not.
        """
        data = _shape((2,), jnp.uint32)
        params, opt_state = self._shapes("init", self._init_one, data)
        check_state(opt_state, owner=self.owner)  # before update, which would fail on it
        step = _shape((), jnp.int32)
        new_p, new_s, metrics, _ = self._shapes(
            "update", self._step_one, params, opt_state, data, step
        )
        for what, new, old in (("params", new_p, params), ("opt_state", new_s, opt_state)):
            if _signature(new) != _signature(old):
                must = f"a function returning {what} of the same structure, shapes and dtypes"
                got = f"{_signature(new)[0]} instead of {_signature(old)[0]}"
                raise invalid(self.owner, "update", must, got[:300])
        names = _scalars("update", metrics, self.owner)
        if self.evaluate is not None:
            out = self._shapes("evaluate", self._evaluate_one, params)
            if not isinstance(out, Mapping) or not out:
                raise invalid(
                    self.owner, "evaluate", "a function returning {name: scalar}", shown(out)
                )
            evaluated = _scalars("evaluate", out, self.owner)
            if both := sorted(set(evaluated) & set(names)):
                fix = "Fix: name the evaluation's metrics apart from the update's (val_loss)."
                raise invalid(
                    self.owner, "evaluate", "metrics named apart from update's", both, fix
                )
            names += evaluated
        return params, opt_state, names

    def _shapes(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return jax.eval_shape(fn, *args)
        except InvalidArgumentError:
            raise
        except Exception as err:
            must = "a JAX function of one member" if name != "init" else "a function of a key"
            got = f"{type(err).__name__}: {err}"[:300]
            raise invalid(self.owner, name, must, got) from err


def _key(data: Any) -> Any:
    return jax.random.wrap_key_data(data, impl=_IMPL)


def _signature(tree: Any) -> tuple[str, list[tuple[Any, Any]]]:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return str(treedef), [(tuple(x.shape), np.dtype(x.dtype)) for x in leaves]


def _scalars(name: str, metrics: Mapping[str, Any], owner: str) -> list[str]:
    for k, v in metrics.items():
        if not isinstance(k, str) or getattr(v, "shape", None) != ():
            must = (
                "a function returning scalars by name"
                if name == "evaluate"
                else ("a function returning (params, opt_state, loss or {name: scalar})")
            )
            raise invalid(owner, name, must, f"{shown(k)}: {shown(v)}")
    return list(metrics)


def _shape(shape: Any, dtype: Any) -> Any:
    """A leaf's shape and dtype alone (:class:`jax.ShapeDtypeStruct`)."""
    return jax.ShapeDtypeStruct(shape, dtype)  # type: ignore[no-untyped-call]
