"""examples/keras_plain.py trained with PBT: a population of four Keras models in this
process, each member exploiting (weights and Adam's state copied in place) and exploring
its learning rate and beta_1 (genepool.integrations.keras).

Run: python examples/keras_pbt.py
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 on PyTorch: no TensorFlow

import keras
from sklearn.datasets import load_digits  # type: ignore[import-untyped]

import genepool as gp
from genepool.integrations import keras as gpk


def make_model(learning_rate: float = 1e-3, beta_1: float = 0.9) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def data() -> dict[str, Any]:
    """Training and validation arrays of scikit-learn's digits (shipped with it)."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return {"x": x[:1400], "y": y[:1400], "validation_data": (x[1400:], y[1400:]), "batch_size": 32}


def main(epochs: int = 12, population: int = 4) -> float | None:
    keras.utils.set_random_seed(0)
    space = gp.Space(learning_rate=gp.Float(1e-4, 1e-2, log=True), beta_1=gp.Float(0.5, 0.99))
    rules = {"ready": gp.Every(2), "budget": gp.Budget(steps=epochs), "population": population}
    pbt = gp.AskTell(space, metric="val_accuracy", **rules)
    result = gpk.fit(pbt, model=make_model, **data(), verbose=0)
    return result.best.score


if __name__ == "__main__":
    print(main())
