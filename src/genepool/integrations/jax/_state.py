"""One member's JAX training state for a loop of your own: params, optax state, step, key.

:class:`OptaxState` holds what a member is in a plain-JAX/optax script (its ``params``
pytree, its optimizer state, its step and, if you keep one, its random key) and:

- :meth:`~OptaxState.apply` writes the hyperparameters into ``opt_state.hyperparams``
  (the optimizer must be built with :func:`optax.inject_hyperparams`: it reads them there
  at every update), reads them back, and raises
  :class:`~genepool.HyperparameterNotAppliedError` if a value in effect is not the decided
  one; a name no ``inject_hyperparams`` holds is refused
  (:class:`~genepool.integrations.jax.UnmappedHyperparameterError`);
- :meth:`~OptaxState.state_dict` is the state as plain data (NumPy arrays by pytree path,
  numbers), which genepool's checkpoints store without pickle, and
  :meth:`~OptaxState.load_state_dict` reads one back into the structure of the state as
  built (so build it as the run that saved it did);
- the key: after loading another member's state (an exploit), or its own of another
  generation, the key is drawn again from the member's stream (``member.rng``): a copy
  does not train on its donor's batches; its own state keeps its key.

:class:`OptaxTrainable` is the class API over it: implement ``build`` and ``step``.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> params = {"w": jnp.zeros(3)}
    >>> opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    >>> state = OptaxState(params=params, opt_state=opt.init(params),
    ...                    hparams={"lr": "learning_rate"})
    >>> state.apply({"lr": 0.02, "momentum": 0.5})
    >>> {k: round(v, 6) for k, v in state.in_effect().items()}
    {'lr': 0.02, 'momentum': 0.5}
    >>> sorted(state.state_dict()["opt_state"])[:2]
    ['count', 'hyperparams/learning_rate']
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from genepool._errors import CheckpointError, invalid, missing_dependency
from genepool._redact import shown
from genepool.integrations._saved import checked_layout
from genepool.integrations.jax._hparams import Hyperparams, injected
from genepool.integrations.jax._tree import from_plain, key, to_plain
from genepool.round import check_applied
from genepool.trainable import Member, Trainable

try:
    import jax
    import jax.numpy as jnp
except ImportError as _err:  # pragma: no cover - exercised only without jax
    raise missing_dependency("jax", "jax", "genepool.integrations.jax") from _err

__all__ = ["STATE_FORMAT", "STATE_VERSION", "OptaxState", "OptaxTrainable", "check_state"]

#: Name and version of the saved layout: ``{"format", "version", "params", "opt_state",
#: "step", "key", "owner", "counters", "metrics"}``; a newer version is refused.
STATE_FORMAT = "genepool.jax"
STATE_VERSION = 1
_OWNER = "genepool.integrations.jax.OptaxState"


class OptaxState:
    """A member's params, optimizer state, step and key; its hyperparameters in
    ``opt_state.hyperparams``.

    Args:
        params: The model's parameters (any pytree of arrays: dicts, Flax's).
        opt_state: ``optimizer.init(params)`` of an optimizer built with
            :func:`optax.inject_hyperparams` (alone, or inside an ``optax.chain``).
        key: The member's random key, if the loop keeps one (saved, and drawn again from
            the member's stream after an exploit).
        hparams: The space's names that differ from the keys of ``opt_state.hyperparams``
            they set: ``{"lr": "learning_rate"}``.
        ignore: The space's names that your code applies itself (a batch size): neither
            set nor checked here.

    Attributes:
        step: Your count of steps (saved).
        counters: Integers of yours saved with the state (the data position).
        metrics: Numbers of yours saved with it (the latest evaluation).

    Raises:
        InvalidArgumentError: ``opt_state`` holds no ``inject_hyperparams`` state.
    """

    def __init__(
        self,
        *,
        params: Any,
        opt_state: Any,
        key: Any = None,
        hparams: Mapping[str, str] | None = None,
        ignore: Iterable[str] = (),
        step: int = 0,
    ) -> None:
        check_state(opt_state, owner=_OWNER)
        self.params, self.opt_state, self.key, self.step = params, opt_state, key, int(step)
        self.mapping, self.ignore = hparams, tuple(ignore)
        self.counters: dict[str, int] = {}
        self.metrics: dict[str, float] = {}
        self._names: Hyperparams | None = None
        self._owner: tuple[int, int] | None = None  # (member, generation), set by restore
        self._loaded_owner: tuple[int, int] | None = None  # the last state loaded's

    # -- hyperparameters --------------------------------------------------------------
    def _mapped(self, names: Iterable[str]) -> Hyperparams:
        names = list(names)
        held = self._names
        if held is None or not set(names) <= set(held.names) | set(self.ignore):
            held = self._names = Hyperparams(
                self.opt_state,
                names,
                mapping=self.mapping,
                ignore=self.ignore,
                ignorable=True,
                owner=_OWNER,
            )
        return held

    def apply(self, hparams: Mapping[str, Any]) -> None:
        """Write ``hparams`` into ``opt_state.hyperparams``, then check they are in effect.

        Raises:
            UnmappedHyperparameterError: A name maps to no ``inject_hyperparams`` number.
            HyperparameterNotAppliedError: A value read back is not the decided one (an
                int leaf given a fraction, say).
        """
        names = self._mapped(hparams)
        self.opt_state = names.write(self.opt_state, hparams)
        self.verify(hparams)

    def in_effect(self) -> dict[str, Any]:
        """The values ``opt_state.hyperparams`` holds, by the space's names (those applied)."""
        return {} if self._names is None else self._names.read(self.opt_state)

    def verify(self, hparams: Mapping[str, Any]) -> None:
        """Raise :class:`~genepool.HyperparameterNotAppliedError` if a value in effect
        differs from ``hparams``'s."""
        check_applied(
            self.in_effect(),
            hparams,
            who="OptaxState",
            fix="something wrote opt_state.hyperparams after apply() (a load?), or its leaf "
            "cannot hold the value (an int): call apply() after load_state_dict().",
        )

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The whole state as plain data (NumPy arrays by pytree path, numbers)."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "params": to_plain(self.params),
            "opt_state": to_plain(self.opt_state),
            "step": self.step,
            "key": None if self.key is None else _key_data(self.key),
            "owner": None if self._owner is None else list(self._owner),
            "counters": {k: int(v) for k, v in self.counters.items()},
            "metrics": {k: float(v) for k, v in self.metrics.items()},
        }

    def load_state_dict(self, state: Any, hparams: Mapping[str, Any] | None = None) -> None:
        """Restore a :meth:`state_dict` (maybe a donor's) into this state's structure, then
        apply ``hparams`` if given.

        Raises:
            CheckpointError: ``state`` is not such a state, of another model or optimizer,
                or of a newer layout.
        """
        plain = read(state, where="the state")
        params = from_plain(plain["params"], like=self.params, where="the state's params")
        opt_state = from_plain(plain["opt_state"], like=self.opt_state, where="its opt_state")
        self.params, self.opt_state = params, opt_state
        if self.key is not None and plain.get("key") is not None:
            self.key = _like_key(np.asarray(plain["key"], dtype=np.uint32), self.key)
        self.step = int(plain.get("step", 0))
        self.counters = {k: int(v) for k, v in dict(plain.get("counters") or {}).items()}
        self.metrics = {k: float(v) for k, v in dict(plain.get("metrics") or {}).items()}
        owner = plain.get("owner")
        self._loaded_owner = None if owner is None else (int(owner[0]), int(owner[1]))
        if hparams is not None:
            self.apply(hparams)

    def restore(self, member: Member) -> bool:
        """Function API: load the member's state to start from (if any), draw a new key
        where it is not the member's own of this generation, and apply its hparams.

        Returns whether a state was loaded (``False``: a fresh start).
        """
        state = member.restore()
        self._owner = (member.id, member.generation)
        if state is not None:
            self.load_state_dict(state)
        self.reseed(member, loaded=state is not None)
        self.apply(member.hparams)
        return state is not None

    def reseed(self, member: Member, *, loaded: bool) -> None:
        """Draw the key from ``member.rng`` unless the state loaded is the member's own,
        of its generation (it goes on with the key it had)."""
        self._owner = (member.id, member.generation)
        own = loaded and self._loaded_owner == self._owner
        if self.key is not None and not own:  # as many words as its kind of key has
            shape = _key_data(self.key).shape
            data = member.rng.integers(0, 2**32, size=shape, dtype=np.uint32)
            self.key = _like_key(data, self.key)


def _typed(k: Any) -> bool:
    return isinstance(k, jax.Array) and jnp.issubdtype(k.dtype, jax.dtypes.prng_key)


def _key_data(k: Any) -> np.ndarray[Any, Any]:
    """A key's data: a typed key's (:func:`jax.random.key_data`), or a raw key itself."""
    return np.array(jax.random.key_data(k) if _typed(k) else k)


def _like_key(data: np.ndarray[Any, Any], like: Any) -> Any:
    """A key of ``data``, typed as ``like`` is (of its implementation) or raw (a
    ``jax.random.PRNGKey``)."""
    if not _typed(like):
        return jnp.asarray(data, dtype=np.asarray(like).dtype)
    return jax.random.wrap_key_data(jnp.asarray(data), impl=jax.random.key_impl(like))


def check_state(opt_state: Any, *, owner: str) -> None:
    """Refuse an optimizer state with no ``inject_hyperparams`` state in it."""
    if not injected(opt_state):
        fix = (
            "Fix: build the optimizer with optax.inject_hyperparams(optax.adam)"
            "(learning_rate=1e-3): its state holds the hyperparameters PBT sets."
        )
        must = "the state of an optimizer built with optax.inject_hyperparams"
        raise invalid(owner, "opt_state", must, shown(type(opt_state).__name__), fix)


def read(state: Any, *, where: str) -> Mapping[str, Any]:
    """``state`` if it is a :meth:`OptaxState.state_dict` this version reads.

    Raises:
        CheckpointError: It is not.
    """
    checked = checked_layout(
        state, fmt=STATE_FORMAT, version=STATE_VERSION, what="JAX", where=f"the state of {where}"
    )
    for k in ("params", "opt_state"):
        if k not in checked:
            raise CheckpointError(f"The state of {where} has no {k!r}: it is torn.")
    return checked


class OptaxTrainable(Trainable):
    """The class API for JAX/optax: implement :meth:`build` and ``step``; the rest is done.

    ``build`` makes the params and the optimizer state from the hyperparameters and returns
    their :class:`OptaxState`; saving, loading, writing the hyperparameters into
    ``opt_state.hyperparams`` after every load and reading them back are provided. Draw
    random keys with :meth:`next_key` (from the member's stream: reproducible for a seed,
    and reseeded by an exploit).

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import genepool as gp
        >>> opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
        >>> class Quadratic(OptaxTrainable):
        ...     def build(self, hparams):
        ...         params = jax.random.normal(self.next_key(), (3,))
        ...         return OptaxState(params=params, opt_state=opt.init(params))
        ...     def step(self):
        ...         s = self.state
        ...         loss, grads = jax.value_and_grad(lambda p: (p**2).sum())(s.params)
        ...         updates, s.opt_state = opt.update(grads, s.opt_state, s.params)
        ...         s.params = s.params + updates
        ...         return {"loss": float(loss)}
        >>> result = gp.run(Quadratic, gp.Space(learning_rate=gp.Float(0.01, 0.3)),
        ...     metric="loss", mode="min", population=2, ready=gp.Every(2),
        ...     budget=gp.Budget(steps=4), seed=0)
        >>> result.best.step
        4
    """

    state: OptaxState

    @abstractmethod
    def build(self, hparams: Mapping[str, Any]) -> OptaxState:
        """Build the params and the optimizer state; return their :class:`OptaxState`."""

    def next_key(self) -> jax.Array:
        """A new random key, drawn from the member's stream."""
        return key(self.member.rng)

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.state = self.build(hparams)
        if not isinstance(self.state, OptaxState):
            got = f"{shown(self.state)} ({type(self.state).__name__})"
            raise invalid(type(self).__name__, "build", "a function returning an OptaxState", got)
        member = getattr(self, "member", None)  # None when used outside a run
        if member is not None:
            self.state.reseed(member, loaded=False)
        self.state.apply(hparams)

    def save(self) -> Any:
        return self.state.state_dict()

    def load(self, state: Any) -> None:
        self.state.load_state_dict(state)
        member = getattr(self, "member", None)
        if member is not None:
            self.state.reseed(member, loaded=True)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.state.apply(hparams)

    def hparams_in_effect(self) -> Mapping[str, Any] | None:
        return self.state.in_effect()
