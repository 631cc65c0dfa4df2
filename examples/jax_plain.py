"""A plain JAX + optax script: an MLP on scikit-learn's digits, SGD with momentum.
examples/jax_pbt.py is the same script trained with PBT.

The optimizer is built with ``optax.inject_hyperparams``: its learning rate and momentum
live in the optimizer's state (``opt_state.hyperparams``), where an update reads them.

Run: python examples/jax_plain.py
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from sklearn.datasets import load_digits  # type: ignore[import-untyped]

x, y = load_digits(return_X_y=True)
X, Y = jnp.asarray(x / 16.0, jnp.float32), jnp.asarray(y)
X_TRAIN, Y_TRAIN, X_VAL, Y_VAL = X[:1400], Y[:1400], X[1400:], Y[1400:]
optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=0.05, momentum=0.9)


def init(key: jax.Array) -> dict[str, jax.Array]:
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (64, 64)) / 8.0,
        "b1": jnp.zeros(64),
        "w2": jax.random.normal(k2, (64, 10)) / 8.0,
        "b2": jnp.zeros(10),
    }


def logits(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    return jax.nn.relu(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def update(params: dict[str, jax.Array], opt_state: Any, key: jax.Array) -> tuple[Any, Any, Any]:
    """One step of SGD on a batch of 32 drawn with ``key``."""
    i = jax.random.randint(key, (32,), 0, len(X_TRAIN))

    def loss_fn(p: dict[str, jax.Array]) -> Any:
        return optax.softmax_cross_entropy_with_integer_labels(
            logits(p, X_TRAIN[i]), Y_TRAIN[i]
        ).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def evaluate(params: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return {"val_acc": (logits(params, X_VAL).argmax(-1) == Y_VAL).mean()}


if __name__ == "__main__":
    key = jax.random.key(0)
    params = init(key)
    opt_state = optimizer.init(params)
    step = jax.jit(update)
    for _ in range(1000):
        key, sub = jax.random.split(key)
        params, opt_state, loss = step(params, opt_state, sub)
    print(float(evaluate(params)["val_acc"]))
