"""Where a member's hyperparameters live in JAX: ``opt_state.hyperparams``.

An optimizer built with :func:`optax.inject_hyperparams` keeps its numeric arguments in
its state (``opt_state.hyperparams``: ``learning_rate``, ``momentum``, ``b1``, ...) and
reads them there at every update: the one place where a hyperparameter is set, and where
it is read back to check it. :class:`Hyperparams` maps each name of the space to its leaf
of the state: the key of the same name, or the one a mapping names (``{"lr":
"learning_rate"}``; ``"1/learning_rate"`` for the ``inject_hyperparams`` at ``1`` of an
``optax.chain``). A name that maps nowhere is refused, with the names that do; so is one
given to ``inject_hyperparams`` as a schedule (the schedule rewrites it at every update).

The same leaf holds one value per member in a stacked state (shape ``(N,)``,
:func:`genepool.integrations.jax.run`): :meth:`Hyperparams.write` and
:meth:`~Hyperparams.read` take the member's index there.

Example:
    >>> import jax.numpy as jnp, optax
    >>> opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    >>> state = opt.init({"w": jnp.zeros(3)})
    >>> hp = Hyperparams(state, ["lr", "momentum"], mapping={"lr": "learning_rate"})
    >>> state = hp.write(state, {"lr": 0.02, "momentum": 0.5})
    >>> {k: round(v, 6) for k, v in hp.read(state).items()}
    {'lr': 0.02, 'momentum': 0.5}
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

import numpy as np

from genepool._errors import InvalidArgumentError, TrainableError, invalid, missing_dependency
from genepool._redact import shown

try:
    import jax
    import jax.numpy as jnp
except ImportError as _err:  # pragma: no cover - exercised only without jax
    raise missing_dependency("jax", "jax", "genepool.integrations.jax") from _err

__all__ = ["Hyperparams", "UnmappedHyperparameterError", "injected"]

_FIX = (
    "Fix: build the optimizer with optax.inject_hyperparams (optax.inject_hyperparams("
    "optax.sgd)(learning_rate=0.1, momentum=0.9)) so that it takes the value, name it after "
    "its argument, or map it: hparams={'lr': 'learning_rate'}."
)


class UnmappedHyperparameterError(InvalidArgumentError, TrainableError):
    """A name of the space that no ``inject_hyperparams`` state holds.

    An :class:`~genepool.InvalidArgumentError`; also a :class:`~genepool.TrainableError`,
    so that a trainable's ``setup`` raising it stops the run instead of failing each
    member in turn.
    """


def _is_injected(node: Any) -> bool:
    """Whether ``node`` is an ``inject_hyperparams`` state (either of optax's kinds)."""
    return (
        isinstance(node, tuple)
        and hasattr(node, "_fields")
        and "hyperparams" in node._fields
        and isinstance(getattr(node, "hyperparams", None), dict)
    )


def injected(opt_state: Any) -> dict[str, tuple[str, Any]]:
    """Every ``inject_hyperparams`` state in ``opt_state`` by its path (``""``: the root;
    ``"1"``: the second of an ``optax.chain``), with its full key path
    (:func:`jax.tree_util.keystr`)."""
    found = jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=_is_injected)[0]
    return {
        jax.tree_util.keystr(p, simple=True, separator="/"): (jax.tree_util.keystr(p), node)
        for p, node in found
        if _is_injected(node)
    }


class Hyperparams:
    """The space's names, each mapped to its leaf of an optimizer state.

    Args:
        opt_state: A state of the optimizer (its structure is what counts).
        names: The space's names.
        mapping: Space name -> the key of ``opt_state.hyperparams`` it sets, where the
            two differ (``"learning_rate"``), or ``"<path>/<key>"`` for the
            ``inject_hyperparams`` at ``<path>`` of a chain.
        ignore: Names the user's code applies itself (not set nor checked here).
        ignorable: Whether the caller takes ``ignore`` (the messages say so).
        owner: Who the messages name.

    Raises:
        UnmappedHyperparameterError: A name maps to no number of ``opt_state.hyperparams``
            (the message lists those that do), or to a schedule.
    """

    def __init__(
        self,
        opt_state: Any,
        names: Iterable[str],
        *,
        mapping: Mapping[str, str] | None = None,
        ignore: Iterable[str] = (),
        ignorable: bool = False,
        owner: str = "genepool.integrations.jax",
    ) -> None:
        self.owner, self.ignorable = owner, ignorable
        if mapping is not None and (
            not isinstance(mapping, Mapping)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())
        ):
            must = "a dict of the space's names to keys of opt_state.hyperparams"
            raise invalid(owner, "hparams", must, shown(mapping))
        mapping = dict(mapping or {})
        states = injected(opt_state)
        # every key a name may take: "key" where one state has it, and always "path/key"
        where: dict[str, tuple[str, str] | None] = {}
        for path, (_, state) in states.items():
            for key in state.hyperparams:
                where[f"{path}/{key}" if path else key] = (path, key)
                if path:
                    where[key] = None if key in where else (path, key)  # None: ambiguous
        leaf_paths = [jax.tree_util.keystr(p) for p, _ in _with_path(opt_state)]
        self.names: tuple[str, ...] = ()
        self._leaf: dict[str, int] = {}
        ignored = set(ignore)
        for name in names:
            if name in ignored:
                continue
            target = mapping.get(name, name)
            spot = where.get(target)
            if spot is None:
                self._refuse(name, target, where, ambiguous=target in where)
            path, key = spot
            full, state = states[path]
            if key in getattr(state, "hyperparams_states", {}):
                fix = (
                    f"Fix: give inject_hyperparams a number for {key!r}, not a schedule (the "
                    "schedule rewrites it at every update); PBT then sets it."
                )
                got = f"{name!r} (a schedule in opt_state.hyperparams_states)"
                raise UnmappedHyperparameterError(_message(owner, got, fix))
            if not _is_number(state.hyperparams[key]):
                got = f"{name!r} ({shown(state.hyperparams[key])} in opt_state.hyperparams)"
                fix = "Fix: give inject_hyperparams a number for it."
                raise UnmappedHyperparameterError(_message(owner, got, fix))
            leaf = f"{full}.hyperparams[{key!r}]"
            self._leaf[name] = leaf_paths.index(leaf)
            self.names += (name,)

    def _refuse(
        self, name: str, target: str, where: Mapping[str, Any], *, ambiguous: bool
    ) -> NoReturn:
        valid = sorted(k for k, v in where.items() if v is not None)
        if ambiguous:
            paths = sorted(k for k in valid if k.endswith(f"/{target}"))
            fix = (
                f"Fix: {target!r} is in more than one inject_hyperparams ({paths}): name the "
                f"one it sets by its path, hparams={{{name!r}: {paths[-1]!r}}}."
            )
            raise UnmappedHyperparameterError(
                f"The 'space' parameter of {self.owner} must have names that say which "
                f"inject_hyperparams they set. Got {name!r} instead. {fix}"
            )
        got = f"{name!r}" if target == name else f"{name!r} (mapped to {target!r})"
        must = f"names of opt_state.hyperparams ({valid or 'none: no inject_hyperparams'})"
        raise UnmappedHyperparameterError(
            f"The 'space' parameter of {self.owner} must have {must}. Got {got} instead. " + _FIX
        )

    def write(self, opt_state: Any, values: Mapping[str, Any], member: int | None = None) -> Any:
        """``opt_state`` with the values of ``values`` (by the space's names) written in,
        each cast to its leaf's dtype; in a stacked state, into entry ``member``.

        Raises:
            InvalidArgumentError: A value is not a number.
        """
        leaves, treedef = jax.tree_util.tree_flatten(opt_state)
        for name in self.names:
            if name not in values:
                continue
            value = values[name]
            if not _is_number(value):
                raise invalid(self.owner, "space", f"a number for {name!r}", shown(value))
            i = self._leaf[name]
            old = leaves[i]
            if member is None:
                leaves[i] = jnp.asarray(value, dtype=old.dtype)
            else:
                host = np.array(old)
                host[member] = value
                leaves[i] = jnp.asarray(host)
        return jax.tree_util.tree_unflatten(treedef, leaves)

    def read(self, opt_state: Any, member: int | None = None) -> dict[str, Any]:
        """The values in effect in ``opt_state`` (entry ``member`` of a stacked one), by
        the space's names: Python floats (ints for an int leaf)."""
        leaves = jax.tree_util.tree_leaves(opt_state)
        out: dict[str, Any] = {}
        for name in self.names:
            value = np.asarray(leaves[self._leaf[name]])
            value = value if member is None else value[member]
            out[name] = int(value) if np.issubdtype(value.dtype, np.integer) else float(value)
        return out

    def leaf(self, name: str) -> int:
        """The index of ``name``'s leaf in ``jax.tree_util.tree_leaves(opt_state)``."""
        return self._leaf[name]


def _with_path(tree: Any) -> list[tuple[Any, Any]]:
    return list(jax.tree_util.tree_flatten_with_path(tree)[0])


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Real):
        return True
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    return shape == () and dtype is not None and np.issubdtype(np.dtype(dtype), np.number)


def _message(owner: str, got: str, fix: str) -> str:
    return (
        f"The 'space' parameter of {owner} must have names of numbers in "
        f"opt_state.hyperparams. Got {got} instead. {fix}"
    )
