"""An exploit in place against a restart, in a framework's trainer (issue 18).

For PyTorch Lightning: the time from the decision to the recipient's first optimizer
step after an exploit, on a model of about 1.3M parameters (an MLP 256-1024-1024-10 on
random data), two ways, both reading the donor's checkpoint from the same folder:

- **in place** (genepool.integrations.lightning): the recipient's ``Trainer`` is at the
  end of a validation run, where its round was told; the donor's state is read from
  genepool's checkpoint store (``LocalCheckpoints``, the safe format), loaded into the
  same trainer (module, optimizer, scheduler, loop counters) and the new hyperparameters
  set and verified; the clock stops at the next ``on_train_batch_start``.
- **restart**, as Ray Tune does it with actor reuse (a new ``Trainer`` in the same
  process, no process start counted): a new module and ``Trainer``, then
  ``fit(ckpt_path=...)`` from the donor's Lightning checkpoint (``Trainer.save_checkpoint``
  in the same folder), the new hyperparameters set after Lightning's restore; the clock
  stops at the first ``on_train_batch_start``.

For the Hugging Face ``Trainer``, the same two ways on a BERT of about 1.3M parameters
built in code (no download): in place at the end of an evaluation; a restart as a new
``Trainer`` and ``train(resume_from_checkpoint=...)`` from the donor's own Hugging Face
checkpoint folder (``save_strategy="steps"``), the new rate set at ``on_train_begin``.

Each is timed ``--repeats`` times; the medians and their ratio are printed, with the
target: the in-place exploit at least 5x cheaper.

Run: python benchmarks/integrations.py [--quick]. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import integrations_hf as hf
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from genepool.checkpoints import LocalCheckpoints, decode, encode

try:
    import lightning as L

    from genepool.integrations import lightning as gpl
    from genepool.integrations import torch as gpt
except ImportError as err:  # pragma: no cover
    sys.exit(f"benchmarks/integrations.py needs genepool[lightning]: {err}")

TARGET = 5.0
HPARAMS = {"lr": 0.02, "momentum": 0.8}


class Model(L.LightningModule):
    """An MLP 256-1024-1024-10 (about 1.3M parameters), SGD with a step schedule."""

    def __init__(self, lr: float = 0.05, momentum: float = 0.9) -> None:
        super().__init__()
        self.lr, self.momentum = lr, momentum
        self.net = torch.nn.Sequential(
            torch.nn.Linear(256, 1024),
            torch.nn.ReLU(),
            torch.nn.Linear(1024, 1024),
            torch.nn.ReLU(),
            torch.nn.Linear(1024, 10),
        )

    def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
        return F.cross_entropy(self.net(batch[0]), batch[1])

    def validation_step(self, batch: list[torch.Tensor], _: int) -> None:
        self.log("val_loss", F.cross_entropy(self.net(batch[0]), batch[1]))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)]


def loaders() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(512, 256, generator=g), torch.randint(0, 10, (512,), generator=g)
    data = TensorDataset(x, y)
    return {
        "train_dataloaders": DataLoader(data, batch_size=64, shuffle=True),
        "val_dataloaders": DataLoader(data, batch_size=512),
    }


def trainer(callbacks: list[Any], max_epochs: int = 1000) -> L.Trainer:
    return L.Trainer(
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


class _Stop(Exception):
    """Ends a timed fit once its clock has stopped."""


class _Clock(L.Callback):
    """Stops the clock at the first training batch after ``start`` is set; then ends."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.took: float | None = None

    def on_train_batch_start(self, *args: Any) -> None:
        if self.start is not None and self.took is None:
            self.took = time.perf_counter() - self.start
            raise _Stop()


class _InPlace(_Clock):
    """At the end of the ``after``-th validation run: the donor's state read from the
    checkpoint store and loaded in place, with the new hyperparameters."""

    def __init__(self, store: LocalCheckpoints, donor: str, after: int) -> None:
        super().__init__()
        self.store, self.donor, self.after, self.seen = store, donor, after, 0

    def on_validation_end(self, t: L.Trainer, module: L.LightningModule) -> None:
        self.seen += 1
        if self.seen < self.after:
            return
        self.start = time.perf_counter()
        payload = decode(self.store.get(self.donor))
        targets: dict[str, Any] = {k: gpt.Optimizer("0", k) for k in HPARAMS}
        state = gpl._State(t, module, targets)
        state.load(payload, starting=False)
        state.torch.apply(HPARAMS)


def donor_checkpoints(folder: Path) -> tuple[LocalCheckpoints, str, str]:
    """A donor trained for two epochs, saved both ways into ``folder``: genepool's
    checkpoint (its id) and Lightning's (its path)."""

    class Save(L.Callback):
        def on_train_end(self, t: L.Trainer, module: L.LightningModule) -> None:
            self.payload = gpl._State(t, module, {}).saved()

    save = Save()
    t = trainer([save], max_epochs=2)
    t.fit(Model(), **loaders())
    store = LocalCheckpoints(folder / "genepool")
    ckpt_id = store.put("bench", 0, 2, encode(save.payload))
    path = str(folder / "donor.ckpt")
    t.save_checkpoint(path)
    return store, ckpt_id, path


def in_place(store: LocalCheckpoints, donor: str) -> float:
    clock = _InPlace(store, donor, after=2)
    with contextlib.suppress(_Stop):
        trainer([clock]).fit(Model(), **loaders())
    assert clock.took is not None
    return clock.took


def restart(path: str) -> float:
    clock = _Clock()
    clock.start = time.perf_counter()

    class Apply(L.Callback):  # Lightning restored the donor's rate: set the new one
        def on_train_start(self, t: L.Trainer, module: L.LightningModule) -> None:
            for group in t.optimizers[0].param_groups:
                group.update(HPARAMS)

    with contextlib.suppress(_Stop):
        trainer([Apply(), clock]).fit(Model(**HPARAMS), ckpt_path=path, **loaders())
    assert clock.took is not None
    return clock.took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repeat each (CI)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")  # Lightning's own notices, at every Trainer
    torch.set_num_threads(2)
    params = sum(p.numel() for p in Model().parameters())
    with tempfile.TemporaryDirectory(prefix="gp-integrations-") as tmp:
        store, ckpt_id, path = donor_checkpoints(Path(tmp))
        in_place(store, ckpt_id), restart(path)  # warm-up
        a, b = [], []
        for _ in range(repeats):  # interleaved: the machine's drift falls on both
            a.append(in_place(store, ckpt_id))
            b.append(restart(path))
    ms_a, ms_b = statistics.median(a) * 1e3, statistics.median(b) * 1e3
    ratio = ms_b / ms_a
    lightning = {
        "parameters": params,
        "in_place_ms": [round(x * 1e3, 2) for x in a],
        "restart_ms": [round(x * 1e3, 2) for x in b],
        "in_place_median_ms": round(ms_a, 2),
        "restart_median_ms": round(ms_b, 2),
        "restart_over_in_place": round(ratio, 2),
        "target": TARGET,
        "meets_target": ratio >= TARGET,
    }
    print(f"lightning: in place {ms_a:.1f} ms, restart {ms_b:.1f} ms, {ratio:.1f}x")
    hugging = hf.measure(repeats)
    print(f"hugging face: {hugging}")
    summary = {
        "benchmark": "integrations",
        "quick": args.quick,
        "torch": torch.__version__,
        "lightning": L.__version__,
        "lightning_exploit": lightning,
        "transformers": hf.transformers.__version__,
        "hugging_face_exploit": hugging,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
