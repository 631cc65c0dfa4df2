"""examples/jax_plain.py trained with PBT: a population of 16 members trained at once,
stacked along a member axis and stepped by one ``jax.vmap`` of the same ``update``
(genepool.integrations.jax). Each member's learning rate and momentum are its entries of
the stacked ``opt_state.hyperparams``; an exploit copies the donor's params and optimizer
state by index. To train the members one at a time instead (any executor), pass
``gpj.trainable(init=init, update=update, optimizer=optimizer, evaluate=evaluate,
ready=rules["ready"])`` to ``gp.run``.

Run: python examples/jax_pbt.py
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from sklearn.datasets import load_digits  # type: ignore[import-untyped]

import genepool as gp
from genepool.integrations import jax as gpj

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
    space = gp.Space(learning_rate=gp.Float(0.005, 0.5, log=True), momentum=gp.Float(0.5, 0.99))
    rules: dict[str, Any] = {"ready": gp.Every(100), "budget": gp.Budget(steps=1000)}
    fns: dict[str, Any] = {"init": init, "update": update, "evaluate": evaluate}
    result = gpj.run(
        **fns, optimizer=optimizer, space=space, metric="val_acc", population=16, **rules
    )
    print(result.best.hparams, result.best.score)
