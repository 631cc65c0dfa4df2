"""The paper's toy (examples/toy.py) sent to MLflow as it runs: a parent run for the PBT
run, a nested run per member with its scores, hyperparameters and exploits, and each
member's lineage as one curve (``lineage/Q``) once the run ends. Then it reads the best
member's lineage back with MLflow's client.

Needs ``pip install 'genepool[mlflow]'``. By default MLflow writes into the folder
``mlruns/`` (MLflow 3 wants ``MLFLOW_ALLOW_FILE_STORE=true`` for a folder store, which this
script sets for itself); ``--tracking-uri sqlite:///mlflow.db`` for MLflow's database store
(which needs the full ``mlflow`` package). View it with ``mlflow ui --backend-store-uri
URI``.

Run: python examples/mlflow_pbt.py [--tracking-uri file:///path/mlruns]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import toy

import genepool as gp


def main(tracking_uri: str | None = None) -> tuple[gp.Result, list[tuple[int, float]]]:
    """Run the toy with an MLflow logger; return the result and the best member's lineage
    curve as MLflow holds it."""
    from mlflow.tracking import MlflowClient

    if tracking_uri is None:
        tracking_uri = (Path.cwd() / "mlruns").as_uri()
    if tracking_uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    logger = gp.MLflowLogger(tracking_uri=tracking_uri, experiment="genepool-toy")
    result = gp.run(
        toy.Toy,
        toy.SPACE,
        metric="Q",
        population=4,
        ready=gp.Every(4),
        budget=gp.Budget(steps=40),
        explore=gp.GaussianNoise(0.1),
        seed=0,
        loggers=[logger],
    )
    client: Any = MlflowClient(tracking_uri=tracking_uri)
    best = logger.run_ids[result.best.id]
    line = [(m.step, m.value) for m in client.get_metric_history(best, "lineage/Q")]
    print(f"best member {result.best.id}: Q {result.best.score:.4f}; its MLflow run {best}")
    print(f"its line: {client.get_run(best).data.tags['genepool.lineage']}")
    return result, line


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", help="default: the folder mlruns/ here")
    main(parser.parse_args().tracking_uri)
