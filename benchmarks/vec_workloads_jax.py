"""The JAX column of benchmarks/vectorised.py: the MLP 64-32-10 on scikit-learn's digits
trained by ``genepool.integrations.jax.run`` (one ``jax.vmap`` of a plain-JAX update over
the members), with the arithmetic of the torch columns (benchmarks/vec_workloads.py): the
same split, batch 32 drawn at random from the training split, cross entropy, SGD with
momentum (``optax.inject_hyperparams(optax.sgd)``), validation and test accuracy at the
step that ends each round, the same space (``lr`` mapped to optax's ``learning_rate``).

Imported only where JAX is (``import jax`` fails here otherwise).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import vec_workloads as w

import genepool as gp
from genepool.integrations import jax as gpj

OPTIMIZER = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)


@cache
def data() -> dict[str, Any]:
    """The digits split of the torch columns, as JAX arrays (made before any tracing:
    :func:`run_jax` calls it first)."""
    with jax.ensure_compile_time_eval():
        return {k: jnp.asarray(v.numpy()) for k, v in w.digits().items()}


def init(key: jax.Array) -> dict[str, jax.Array]:
    """64-32-10, initialised as ``torch.nn.Linear`` is (uniform, bound 1/sqrt(fan_in))."""
    keys = jax.random.split(key, 4)
    params = {}
    for i, (k, fan_in, fan_out) in enumerate(((keys[0], 64, 32), (keys[2], 32, 10))):
        bound = 1 / np.sqrt(fan_in)
        params[f"w{i}"] = jax.random.uniform(k, (fan_in, fan_out), minval=-bound, maxval=bound)
        params[f"b{i}"] = jax.random.uniform(
            keys[2 * i + 1], (fan_out,), minval=-bound, maxval=bound
        )
    return params


def logits(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    return jax.nn.relu(x @ params["w0"] + params["b0"]) @ params["w1"] + params["b1"]


def update(params: dict[str, jax.Array], opt_state: Any, key: jax.Array) -> tuple[Any, Any, Any]:
    d = data()
    i = jax.random.randint(key, (w.BATCH,), 0, len(d["x_train"]))

    def loss_fn(p: dict[str, jax.Array]) -> Any:
        out = logits(p, d["x_train"][i])
        return optax.softmax_cross_entropy_with_integer_labels(out, d["y_train"][i]).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def evaluate(params: dict[str, jax.Array]) -> dict[str, jax.Array]:
    d = data()
    val = (logits(params, d["x_val"]).argmax(-1) == d["y_val"]).mean()
    return {
        "val_acc": val,
        "test_acc": (logits(params, d["x_test"]).argmax(-1) == d["y_test"]).mean(),
    }


def column(
    sz: dict[str, Any], vec: dict[int, Any], pbt: dict[str, Any], say: Callable[[Any], None]
) -> dict[int, Any]:
    """:func:`run_jax` at each of ``sz["jax_sizes"]``, beside the torch vectorised figure
    (``vec``: population -> its row) at the same size."""
    out: dict[int, Any] = {}
    for n in sz["jax_sizes"]:
        row = out[n] = run_jax(n, sz, pbt)
        say(row)
        if n in vec:
            torch_rate = vec[n]["member_steps_per_s"]
            row["torch_vectorised_member_steps_per_s"] = torch_rate
            row["jax_over_torch_vectorised"] = round(row["member_steps_per_s"] / torch_rate, 2)
            print(f"mlp jax / torch vectorised at n={n}: {row['jax_over_torch_vectorised']}x")
    return out


def run_jax(n: int, sz: dict[str, Any], pbt: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """``gpj.run`` of ``n`` members on a new SQLite store, durable checkpoints at every
    ready round; compiled first by a run of the same size and 2 steps (not timed)."""
    data()
    with tempfile.TemporaryDirectory(prefix="gp-jax-") as tmp:
        began = time.perf_counter()
        _run(n, {"steps": 2, "ready": 2}, pbt, seed, f"sqlite:///{tmp}/warm.db").close()
        compile_s = time.perf_counter() - began
        with w.PeakMemory() as mem:
            start = time.perf_counter()
            result = _run(n, sz, pbt, seed, f"sqlite:///{tmp}/run.db")
            wall = time.perf_counter() - start
        done = len(result.reports)
        like = init(jax.random.key(0))
        params = gpj.from_plain(result.load()["params"], like=like, where="the best member")
        acc = float(evaluate(params)["test_acc"])  # the best member's, by validation
        result.close()
    return {
        "population": n,
        "wall_s": round(wall, 3),
        "member_steps": done,
        "member_steps_per_s": round(done / wall, 1),
        "completed": done >= n * sz["steps"],
        "test_acc": round(float(acc), 4),
        "first_run_compile_s": round(compile_s, 2),
        "jax": jax.__version__,
        "optax": optax.__version__,
        **mem.as_dict(),
    }


def _run(n: int, sz: dict[str, Any], pbt: dict[str, Any], seed: int, storage: str) -> gp.Result:
    return gpj.run(
        init=init,
        update=update,
        optimizer=OPTIMIZER,
        evaluate=evaluate,
        hparams={"lr": "learning_rate"},
        space=w.SPACE,
        metric="val_acc",
        population=n,
        ready=gp.Every(sz["ready"]),
        budget=gp.Budget(steps=sz["steps"]),
        seed=seed,
        storage=storage,
        checkpoint_every=1,
        **pbt,
    )
