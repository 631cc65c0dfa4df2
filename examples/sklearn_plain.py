"""A plain scikit-learn script: a multi-layer perceptron on scikit-learn's digits, one
partial_fit pass a step. examples/sklearn_pbt.py is the same script trained with PBT.

Run: python examples/sklearn_plain.py
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]
from sklearn.neural_network import MLPClassifier  # type: ignore[import-untyped]

X, Y = load_digits(return_X_y=True)
X_TRAIN, X_VAL, Y_TRAIN, Y_VAL = train_test_split(X / 16.0, Y, test_size=0.25, random_state=0)


def train(model: MLPClassifier) -> None:
    """One pass over the training data."""
    model.partial_fit(X_TRAIN, Y_TRAIN, classes=np.arange(10))


def accuracy(model: MLPClassifier) -> float:
    return float(model.score(X_VAL, Y_VAL))


def main(steps: int = 30) -> Any:
    model = MLPClassifier(
        hidden_layer_sizes=(64,), solver="sgd", learning_rate_init=0.01, random_state=0
    )
    for _ in range(steps):
        train(model)
    print(accuracy(model))
    return model


if __name__ == "__main__":
    main()
