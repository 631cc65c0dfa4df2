"""examples/lightning_plain.py trained with PBT: a population of four trainers in this
process, each member exploiting and exploring in place (genepool.integrations.lightning).

Run: python examples/lightning_pbt.py
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from torch.utils.data import DataLoader, TensorDataset

import genepool as gp
from genepool.integrations import lightning as gpl


class Model(L.LightningModule):
    def __init__(self, lr: float = 0.05, momentum: float = 0.9) -> None:
        super().__init__()
        self.lr, self.momentum = lr, momentum
        self.net = torch.nn.Sequential(
            torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
        )

    def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch: list[torch.Tensor], _: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y))
        self.log("val_acc", (self.net(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)
        warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: min(1.0, (epoch + 1) / 3))
        return [opt], [warmup]


def loaders() -> dict[str, Any]:
    """Training and validation batches of scikit-learn's digits (shipped with it)."""
    x, y = load_digits(return_X_y=True)
    data = TensorDataset(torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y))
    train, val = torch.utils.data.random_split(data, [1400, 397], torch.Generator().manual_seed(0))
    return {
        "train_dataloaders": DataLoader(train, batch_size=32, shuffle=True),
        "val_dataloaders": DataLoader(val, batch_size=397),
    }


def make_trainer(callbacks: list[L.Callback]) -> L.Trainer:
    return L.Trainer(
        max_epochs=12,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


if __name__ == "__main__":
    L.seed_everything(0)
    space = gp.Space(lr=gp.Float(0.005, 0.5, log=True), momentum=gp.Float(0.5, 0.99))
    rules = {"ready": gp.Every(2), "budget": gp.Budget(steps=12), "population": 4}
    pbt = gp.AskTell(space, metric="val_acc", **rules)
    result = gpl.fit(pbt, module=Model, trainer=make_trainer, **loaders())
    print(result.best.hparams, result.best.score)
