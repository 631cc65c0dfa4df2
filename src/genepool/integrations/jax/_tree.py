"""Pytrees as plain data, and random keys from a member's stream.

A checkpoint stores plain data (:mod:`genepool.checkpoints._codec`): never a pytree's own
classes (optax's states are named tuples, Flax's ``FrozenDict`` a class of its own). So
:func:`to_plain` writes a pytree as a flat dict, each leaf a NumPy array under its path
(``"w1"``, ``"inner_state/0/trace/w1"``, as :func:`jax.tree_util.keystr` spells it with
``simple=True`` and ``"/"``), and :func:`from_plain` reads one back into the structure of
a tree built fresh (a newly initialised ``params`` or ``opt_state``: the template),
checking every path, shape and kind of number before anything is built.

Keys: a member's random keys come from its own stream (:attr:`genepool.Claim.rng`,
:attr:`genepool.Member.rng`: the run seed, the member, its generation), never from a key
saved in a checkpoint, so an exploit reseeds them as it reseeds the stream.
:func:`key_data` draws one key's data (two ``uint32``) from a stream; :func:`key` wraps
it as a JAX key (``threefry2x32``, whatever the default implementation is).

Example:
    >>> import jax.numpy as jnp
    >>> tree = {"w": jnp.ones((2, 3)), "b": (jnp.zeros(3), None)}
    >>> plain = to_plain(tree)
    >>> sorted(plain), plain["w"].shape
    (['b/0', 'w'], (2, 3))
    >>> back = from_plain(plain, like=tree, where="an example")
    >>> bool((back["w"] == tree["w"]).all()), back["b"][1] is None
    (True, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from genepool._errors import CheckpointError, missing_dependency

try:
    import jax
    import jax.numpy as jnp
except ImportError as _err:  # pragma: no cover - exercised only without jax
    raise missing_dependency("jax", "jax", "genepool.integrations.jax") from _err

__all__ = ["from_plain", "key", "key_data", "paths", "to_plain"]

#: The key implementation of every key genepool makes (its data: two ``uint32``).
IMPL = "threefry2x32"


def paths(tree: Any) -> list[str]:
    """The path of each leaf of ``tree``, in :func:`jax.tree_util.tree_leaves` order:
    ``"a/0/b"``; where two would read the same, the full :func:`jax.tree_util.keystr`."""
    found = [p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    simple = [jax.tree_util.keystr(p, simple=True, separator="/") for p in found]
    if len(set(simple)) == len(simple):
        return simple
    return [jax.tree_util.keystr(p) for p in found]


def to_plain(tree: Any) -> dict[str, np.ndarray[Any, Any]]:
    """``tree``'s leaves as NumPy arrays (copies) under their :func:`paths`.

    Raises:
        CheckpointError: A leaf is no array of numbers (a typed random key: store its
            :func:`jax.random.key_data`).
    """
    leaves = jax.tree_util.tree_leaves(tree)
    out = {}
    for path, leaf in zip(paths(tree), leaves, strict=True):
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            raise CheckpointError(
                f"The state holds a typed random key at {path!r}, which a checkpoint does not "
                "store. Fix: keep its jax.random.key_data(...), or draw keys from the member's "
                "stream (genepool.integrations.jax.key)."
            )
        out[path] = np.array(leaf, copy=True)
    return out


def from_plain(plain: Any, *, like: Any, where: str) -> Any:
    """The tree of :func:`to_plain`'s ``plain`` in the structure of ``like`` (its leaves JAX
    arrays of ``like``'s dtypes); ``where`` names the state in messages.

    Raises:
        CheckpointError: ``plain`` is not a tree of this structure: a path missing or
            unexpected, a shape that differs, a number of another kind (a float for an int).
    """
    leaves, treedef = jax.tree_util.tree_flatten(like)
    names = paths(like)
    if not isinstance(plain, Mapping):
        raise CheckpointError(
            f"The state of {where} holds {type(plain).__name__} where a tree's leaves by path "
            "were expected. Fix: resume with the code that wrote it."
        )
    missing, unexpected = sorted(set(names) - set(plain)), sorted(set(plain) - set(names))
    if missing or unexpected:
        raise CheckpointError(
            f"The state of {where} is another tree's: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}. Fix: build the same model and optimizer as the run that "
            "wrote it."
        )
    out = []
    for name, leaf in zip(names, leaves, strict=True):
        value = plain[name]
        want = np.dtype(leaf.dtype)
        if (
            not isinstance(value, np.ndarray | np.generic)
            or np.shape(value) != np.shape(leaf)
            or _kind(np.dtype(value.dtype)) != _kind(want)
        ):
            got = f"{type(value).__name__} {np.shape(value)} {getattr(value, 'dtype', '')}"
            raise CheckpointError(
                f"The state of {where} does not fit at {name!r}: {got}, where "
                f"{np.shape(leaf)} {want} was expected. Fix: build the same model and "
                "optimizer as the run that wrote it."
            )
        out.append(jnp.asarray(np.asarray(value, dtype=want)))
    return jax.tree_util.tree_unflatten(treedef, out)


def _kind(dtype: np.dtype[Any]) -> str:
    """A dtype's kind of number: floats of any width are one kind (a float64 checkpoint
    loads into float32 leaves), as are ints."""
    if np.issubdtype(dtype, np.floating) or dtype.kind == "V":  # V: bfloat16 and such
        return "float"
    if np.issubdtype(dtype, np.integer):
        return "int"
    return dtype.kind


def key_data(rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """The data of one key (two ``uint32``), drawn from ``rng``."""
    return rng.integers(0, 2**32, size=2, dtype=np.uint32)


def key(rng: np.random.Generator) -> jax.Array:
    """A JAX key drawn from the member's stream ``rng`` (``member.rng``, ``claim.rng``).

    Example:
        >>> import numpy as np
        >>> k = key(np.random.default_rng(0))
        >>> jax.random.uniform(k).shape
        ()
    """
    made: jax.Array = jax.random.wrap_key_data(jnp.asarray(key_data(rng)), impl=IMPL)
    return made
