"""The stacked members: every member's params and optimizer state, one pytree with a
member axis, and each member's slice in and out.

Each leaf of :attr:`Stack.params` and :attr:`Stack.opt_state` is ``(N, ...)``: member
``i``'s is row ``i``. Its hyperparameters are its entries of the stacked
``opt_state.hyperparams`` leaves (``(N,)``), which the compiled update reads as its own
scalars. An exploit is an index copy of every leaf (:meth:`Stack.copy`, all copies in one
gather); an explore writes the member's entries of the hyperparameter leaves
(:meth:`Stack.set_hparams`), read back by :meth:`Stack.hparams` to check them. A member's
slice goes out as plain data (NumPy arrays by pytree path: :meth:`Stack.member_state`) and
comes back in from it (:meth:`Stack.load`), checked against the structure first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from genepool._errors import missing_dependency
from genepool.integrations.jax._hparams import Hyperparams
from genepool.integrations.jax._program import Program
from genepool.integrations.jax._state import STATE_FORMAT, STATE_VERSION, read
from genepool.integrations.jax._tree import from_plain, paths

try:
    import jax
    import jax.numpy as jnp
except ImportError as _err:  # pragma: no cover - exercised only without jax
    raise missing_dependency("jax", "jax", "genepool.integrations.jax") from _err

__all__ = ["Stack"]


class Stack:
    """``N`` members' params and optimizer states, stacked; fresh ones drawn from ``keys``.

    Args:
        program: The user's functions (:class:`~genepool.integrations.jax._program.Program`).
        keys: ``(N, 2)`` key data: row ``i`` is member ``i``'s initial key.
        names: Where the space's names go in the optimizer state.
    """

    def __init__(self, program: Program, keys: np.ndarray[Any, Any], names: Hyperparams) -> None:
        self.program, self.names, self.n = program, names, len(keys)
        self.keys = np.asarray(keys, dtype=np.uint32)
        self.params, self.opt_state = program.initial(self.keys)
        one = jax.tree_util.tree_map(
            lambda x: _shape(x.shape[1:], x.dtype), (self.params, self.opt_state)
        )
        self._like_params, self._like_state = one
        self._paths = (paths(self._like_params), paths(self._like_state))
        self._host: tuple[list[Any], list[Any]] | None = None

    def __len__(self) -> int:
        return self.n

    # -- training -----------------------------------------------------------------------
    def step(
        self, keys: np.ndarray[Any, Any], steps: np.ndarray[Any, Any], active: np.ndarray[Any, Any]
    ) -> tuple[dict[str, np.ndarray[Any, Any]], np.ndarray[Any, Any]]:
        """One step of the members ``active``: their metrics (name -> ``(N,)``) and
        whether each member's loss and new parameters were finite (one that was not keeps
        its params and optimizer state)."""
        self.params, self.opt_state, metrics, finite = self.program.step(
            self.params, self.opt_state, keys, steps, active
        )
        self._host = None
        return metrics, finite

    def evaluated(self) -> dict[str, np.ndarray[Any, Any]]:
        """Every member's evaluation: name -> ``(N,)``."""
        return self.program.evaluated(self.params)

    # -- slices in and out --------------------------------------------------------------
    def copy(self, copies: Mapping[int, int]) -> None:
        """Copy each donor's params and optimizer state into its recipient's slice
        (``copies``: recipient -> donor), every donor read before any slice is written."""
        if not copies:
            return
        index = np.arange(self.n)
        for dst, src in copies.items():
            index[dst] = src
        self.params, self.opt_state = self.program.gather((self.params, self.opt_state), index)
        self._host = None

    def fresh(self, members: Sequence[int]) -> None:
        """Put fresh members (their initial params and optimizer state) in ``members``'s
        slices."""
        if not members:
            return
        rows = np.asarray(members)
        params, opt_state = self.program.initial(self.keys[rows])
        self._write(rows, params, opt_state)

    def load(self, states: Mapping[int, Any], *, where: Mapping[int, str]) -> None:
        """Write each member's checkpoint state (:meth:`member_state`) into its slice,
        every state checked before any is written.

        Raises:
            CheckpointError: A state is not a JAX member's of this model and optimizer.
        """
        if not states:
            return
        trees = []
        for m, state in states.items():
            plain = read(state, where=where[m])
            params = from_plain(plain["params"], like=self._like_params, where=where[m])
            opt_state = from_plain(plain["opt_state"], like=self._like_state, where=where[m])
            trees.append((params, opt_state))
        stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)
        self._write(np.asarray(list(states)), *stacked)

    def _write(self, rows: np.ndarray[Any, Any], params: Any, opt_state: Any) -> None:
        def put(whole: Any, part: Any) -> Any:
            return whole.at[rows].set(part)

        self.params = jax.tree_util.tree_map(put, self.params, params)
        self.opt_state = jax.tree_util.tree_map(put, self.opt_state, opt_state)
        self._host = None

    def member_state(
        self,
        m: int,
        metrics: Mapping[str, float] | None,
        *,
        step: int,
        key: np.ndarray[Any, Any] | None,
        owner: tuple[int, int],
    ) -> dict[str, Any]:
        """Member ``m``'s checkpoint state: an :class:`~genepool.integrations.jax.OptaxState`'s
        layout (params and opt_state by pytree path, NumPy copies), with its latest
        evaluation, its step, its round's key data and whose it is (member, generation)."""
        if self._host is None:  # one transfer per leaf for every member told this round
            self._host = (
                [np.asarray(x) for x in jax.tree_util.tree_leaves(self.params)],
                [np.asarray(x) for x in jax.tree_util.tree_leaves(self.opt_state)],
            )
        host_params, host_state = self._host
        p_paths, s_paths = self._paths
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "params": {p: x[m].copy() for p, x in zip(p_paths, host_params, strict=True)},
            "opt_state": {p: x[m].copy() for p, x in zip(s_paths, host_state, strict=True)},
            "step": int(step),
            "key": None if key is None else np.array(key, dtype=np.uint32),
            "owner": [int(owner[0]), int(owner[1])],
            "counters": {},
            "metrics": dict(metrics or {}),
        }

    # -- hyperparameters ----------------------------------------------------------------
    def set_hparams(self, configs: Mapping[int, Mapping[str, Any]]) -> None:
        """Write each member's hyperparameters into its entries of the stacked
        ``opt_state.hyperparams`` leaves."""
        if not configs or not self.names.names:
            return
        leaves, treedef = jax.tree_util.tree_flatten(self.opt_state)
        for name in self.names.names:
            i = self.names.leaf(name)
            host = np.array(leaves[i])
            for m, hparams in configs.items():
                host[m] = hparams[name]
            leaves[i] = jnp.asarray(host)
        self.opt_state = jax.tree_util.tree_unflatten(treedef, leaves)
        self._host = None

    def hparams(self) -> list[dict[str, Any]]:
        """Every member's hyperparameters in effect, by the space's names."""
        leaves = jax.tree_util.tree_leaves(self.opt_state)
        columns = {name: np.asarray(leaves[self.names.leaf(name)]) for name in self.names.names}
        return [
            {name: _number(column[m]) for name, column in columns.items()} for m in range(self.n)
        ]


def _number(value: Any) -> Any:
    return int(value) if np.issubdtype(np.asarray(value).dtype, np.integer) else float(value)


def _shape(shape: Any, dtype: Any) -> Any:
    """A leaf's shape and dtype alone (:class:`jax.ShapeDtypeStruct`)."""
    return jax.ShapeDtypeStruct(shape, dtype)  # type: ignore[no-untyped-call]
