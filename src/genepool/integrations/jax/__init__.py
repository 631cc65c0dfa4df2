"""JAX and optax: hyperparameters in ``opt_state.hyperparams``, a member's state as plain
data, and a whole population in one ``jax.vmap``.

Requires the ``jax`` extra (``pip install 'genepool[jax]'``); ``import genepool`` never
imports JAX. The optimizer must be built with :func:`optax.inject_hyperparams`: its state
holds the hyperparameters (``opt_state.hyperparams``) and every update reads them there,
so that is where genepool writes each member's values and reads them back to check them
(:class:`~genepool.HyperparameterNotAppliedError` if one differs). A name of the space
that no ``inject_hyperparams`` holds is refused (:class:`UnmappedHyperparameterError`, an
:class:`~genepool.InvalidArgumentError`), with the names that are there.

Three ways in, from the functions of a plain JAX/optax script (``init(key) -> params``;
``update(params, opt_state, key) -> (params, opt_state, loss)``, one training step;
optionally ``evaluate(params) -> {name: value}``):

- :func:`run`: the whole population at once, stacked params and optimizer states with a
  member axis, one compiled ``vmap`` of ``update`` per step; PBT through
  :class:`genepool.AskTell`, so the store, events, lineage, the report, export and replay
  are any run's (as :mod:`genepool.vectorised` for torch). See examples/jax_pbt.py.
- :func:`trainable`: one member through the same code as a :class:`genepool.Trainable`:
  ``gp.run`` trains the population one member at a time (any executor), and
  ``gp.replay`` retraces a member of a :func:`run` alone.
- :class:`OptaxState` and :class:`OptaxTrainable`: for a training loop of your own (the
  function API, ask/tell, a class): the params, optimizer state, step and key saved as
  plain data, the hyperparameters written and checked.

Modules (one thing each): :mod:`._tree` (pytrees as plain data; keys from a member's
stream), :mod:`._hparams` (the space's names onto ``opt_state.hyperparams``), :mod:`._state`
(:class:`OptaxState`, :class:`OptaxTrainable`), :mod:`._program` (the user's functions
checked, vmapped and compiled), :mod:`._stack` (the stacked members: slices in and out,
exploits by index copy), :mod:`._member` (:func:`trainable`), :mod:`._population`
(:func:`run`).

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> import genepool as gp
    >>> from genepool.integrations import jax as gpj
    >>> opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
    >>> def update(params, opt_state, key):
    ...     loss, grads = jax.value_and_grad(lambda p: ((p - 1.0) ** 2).sum())(params)
    ...     updates, opt_state = opt.update(grads, opt_state, params)
    ...     return optax.apply_updates(params, updates), opt_state, loss
    >>> result = gpj.run(init=lambda key: jnp.zeros(3), update=update, optimizer=opt,
    ...     space=gp.Space(learning_rate=gp.Float(0.01, 0.3)), metric="loss", mode="min",
    ...     population=4, ready=gp.Every(5), budget=gp.Budget(steps=20), seed=0)
    >>> result.best.step
    20
"""

from genepool._errors import missing_dependency

try:
    import jax  # noqa: F401
    import optax  # noqa: F401
except ImportError as _err:
    raise missing_dependency("jax", "jax", "genepool.integrations.jax") from _err

from genepool.integrations.jax._hparams import UnmappedHyperparameterError
from genepool.integrations.jax._member import JaxMember, initial_key, trainable
from genepool.integrations.jax._population import run
from genepool.integrations.jax._state import (
    STATE_FORMAT,
    STATE_VERSION,
    OptaxState,
    OptaxTrainable,
)
from genepool.integrations.jax._tree import from_plain, key, to_plain

__all__ = [
    "STATE_FORMAT",
    "STATE_VERSION",
    "JaxMember",
    "OptaxState",
    "OptaxTrainable",
    "UnmappedHyperparameterError",
    "from_plain",
    "initial_key",
    "key",
    "run",
    "to_plain",
    "trainable",
]
