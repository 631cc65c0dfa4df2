"""The paper's toy (examples/toy.py) sent to Weights & Biases as it runs, offline: a W&B
run per member (in a group named after the PBT run) with its scores, hyperparameters and
exploits, and each member's lineage as one curve (``lineage/Q`` against ``lineage/step``)
once the run ends. Offline, W&B writes files only and contacts no server; send them later
with ``wandb sync wandb-runs/wandb/offline-run-*``.

Needs ``pip install 'genepool[wandb]'``.

Run: python examples/wandb_pbt.py [--dir wandb-runs]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import toy

import genepool as gp


def main(folder: str | os.PathLike[str] = "wandb-runs") -> gp.Result:
    """Run the toy with an offline W&B logger writing under ``folder``."""
    os.environ.setdefault("WANDB_SILENT", "true")
    logger = gp.WandbLogger(project="genepool-toy", mode="offline", dir=folder)
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
    runs = sorted(Path(folder).glob("wandb/offline-run-*"))
    print(f"best member {result.best.id}: Q {result.best.score:.4f}; {len(runs)} offline runs")
    print(f"send them with: wandb sync {Path(folder) / 'wandb'}/offline-run-*")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="wandb-runs", help="where W&B writes its files")
    main(parser.parse_args().dir)
