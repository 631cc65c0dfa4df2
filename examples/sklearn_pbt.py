"""examples/sklearn_plain.py trained with PBT: a population of eight perceptrons, each
exploit and explore applied where the estimator reads its values
(genepool.integrations.sklearn).

Run: python examples/sklearn_pbt.py
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]
from sklearn.neural_network import MLPClassifier  # type: ignore[import-untyped]

import genepool as gp
from genepool.integrations import sklearn as gps

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
    rate, momentum = gp.Float(0.001, 0.3, log=True), gp.Float(0.5, 0.99)
    space = gp.Space(learning_rate_init=rate, momentum=momentum)
    rules: dict[str, Any] = {"ready": gp.Every(3), "budget": gp.Budget(steps=steps), "seed": 0}
    trainable = gps.trainable(model, fit=train, score=accuracy)
    result = gp.run(trainable, space, metric="score", population=8, **rules)
    print(result.best.hparams, result.best.score)
    return result


if __name__ == "__main__":
    main()
