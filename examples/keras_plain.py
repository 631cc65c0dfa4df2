"""A plain Keras 3 script on its PyTorch backend (no TensorFlow): an MLP with dropout on
scikit-learn's digits, trained with Adam. examples/keras_pbt.py is the same script
trained with PBT.

Run: python examples/keras_plain.py
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 on PyTorch: no TensorFlow

import keras
from sklearn.datasets import load_digits  # type: ignore[import-untyped]


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


def main(epochs: int = 12) -> float:
    keras.utils.set_random_seed(0)
    history = make_model().fit(**data(), epochs=epochs, verbose=0)
    return float(history.history["val_accuracy"][-1])


if __name__ == "__main__":
    print(main())
