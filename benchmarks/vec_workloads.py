"""The workloads of benchmarks/vectorised.py: scikit-learn's digits, the three models, and
one member's training written for each side (genepool's vectorised driver, a genepool
trainable built with the torch integration, Ray Tune's function trainable, plain PyTorch),
with the same arithmetic: batch 32 drawn at random from the training split, cross entropy,
SGD with momentum, accuracy on a validation split at each ready (the PBT metric) and on a
held-out test split (the reported accuracy).

Also the peak-memory meters: the process's own peak RSS (``VmHWM``, reset before each
case through ``/proc/self/clear_refs``) and a sampler of the RSS of the process and all
its descendants (worker processes, Ray's processes).
"""

from __future__ import annotations

import importlib
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import genepool as gp
from genepool import vectorised as gpv
from genepool.integrations import torch as gpt

BATCH = 32
SPACE = gp.Space(lr=gp.Float(1e-3, 0.3, log=True), momentum=gp.Float(0.5, 0.99))
MODELS = ("mlp", "cnn", "mlp_large")
DESCRIPTIONS = {
    "mlp": "MLP 64-32-10 (ReLU)",
    "cnn": "CNN 8x8x1: 3x3 conv 8, ReLU, 3x3 conv 16, ReLU (no padding), linear 256-10",
    "mlp_large": "MLP 64-256-256-10 (ReLU), ratios with no target",
}


# -- data and models -------------------------------------------------------------------------
@cache
def digits() -> dict[str, torch.Tensor]:
    """The digits (1,797 images of 8x8, scaled to [0, 1]), split 1,077 train / 360
    validation / 360 test by a fixed permutation."""
    datasets = importlib.import_module("sklearn.datasets")  # untyped: keep it Any
    x_np, y_np = datasets.load_digits(return_X_y=True)
    x = torch.tensor(x_np, dtype=torch.float32) / 16.0
    y = torch.tensor(y_np, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))
    x, y = x[order], y[order]
    return {
        "x_train": x[720:],
        "y_train": y[720:],
        "x_val": x[:360],
        "y_val": y[:360],
        "x_test": x[360:720],
        "y_test": y[360:720],
    }


class CNN(nn.Module):
    """3x3 conv 8 channels, 3x3 conv 16 (no padding: 8x8 -> 6x6 -> 4x4), linear 10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x.reshape(-1, 1, 8, 8)))
        h = F.relu(self.conv2(h))
        out: torch.Tensor = self.fc(h.flatten(1))
        return out


def make_model(kind: str) -> nn.Module:
    """A fresh model: ``mlp`` 64-32-10, ``cnn``, or ``mlp_large`` 64-256-256-10."""
    if kind == "mlp":
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    if kind == "mlp_large":
        return nn.Sequential(
            nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
        )
    if kind == "cnn":
        return CNN()
    raise ValueError(f"unknown model {kind!r}")


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def test_accuracy(kind: str, state: Mapping[str, Any]) -> float:
    """The test accuracy of a model state (a ``state_dict``)."""
    model = make_model(kind)
    model.load_state_dict(state)
    d = digits()
    return accuracy(model.eval(), d["x_test"], d["y_test"])


# -- (a) genepool.vectorised -----------------------------------------------------------------
def vec_data(generator: torch.Generator, member: int) -> tuple[torch.Tensor, torch.Tensor]:
    d = digits()
    i = torch.randint(0, len(d["x_train"]), (BATCH,), generator=generator)
    return d["x_train"][i], d["y_train"][i]


@cache
def vec_sample() -> gpv.Sample:
    """:func:`vec_data` as a ``gpv.Sample``: the same batches, every member's at once."""
    d = digits()
    return gpv.Sample(d["x_train"], d["y_train"], batch_size=BATCH)


def vec_loss(model: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def vec_evaluate(model: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """Validation accuracy (the PBT metric) and test accuracy, on one batch of both."""
    correct = (model(batch[0]).argmax(-1) == batch[1]).float()
    n = len(digits()["x_val"])
    return {"val_acc": correct[:n].mean(), "test_acc": correct[n:].mean()}


def eval_batch() -> tuple[torch.Tensor, torch.Tensor]:
    d = digits()
    return torch.cat([d["x_val"], d["x_test"]]), torch.cat([d["y_val"], d["y_test"]])


# -- (b), (c) a genepool trainable built with the torch integration ---------------------------
def _trainable(kind: str) -> type[gpt.TorchTrainable]:
    class Digits(gpt.TorchTrainable):
        """One member; evaluates on the validation split only at the step that ends a
        round (between, its last accuracy is reported again, as the metric must be)."""

        def build(self, hparams: Mapping[str, Any]) -> gpt.TorchState:
            if os.environ.get("VEC_BENCH_THREADS"):
                torch.set_num_threads(int(os.environ["VEC_BENCH_THREADS"]))
            self.model = make_model(kind)
            self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
            self.gen = torch.Generator().manual_seed(self.member.id)
            self.acc: float | None = None
            hp = {"lr": gpt.Optimizer("opt", "lr"), "momentum": gpt.Optimizer("opt", "momentum")}
            return gpt.TorchState(
                models={"model": self.model}, optimizers={"opt": self.opt}, hparams=hp
            )

        def load(self, state: Any) -> None:
            super().load(state)
            self.acc = None

        def step(self) -> Mapping[str, Any]:
            x, y = vec_data(self.gen, self.member.id)
            loss = F.cross_entropy(self.model(x), y)
            self.opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            self.opt.step()
            ends = (self.member.step + 1) % int(os.environ["VEC_BENCH_READY"]) == 0
            if ends or self.acc is None:
                d = digits()
                self.acc = accuracy(self.model, d["x_val"], d["y_val"])
            return {"loss": float(loss.detach()), "val_acc": self.acc}

    Digits.__name__ = Digits.__qualname__ = f"Digits_{kind}"
    return Digits


Digits_mlp = _trainable("mlp")
Digits_cnn = _trainable("cnn")
Digits_mlp_large = _trainable("mlp_large")
TRAINABLES: dict[str, type[gpt.TorchTrainable]] = {
    "mlp": Digits_mlp,
    "cnn": Digits_cnn,
    "mlp_large": Digits_mlp_large,
}


# -- (d) Ray Tune: a function trainable checkpointing every perturbation interval -------------
def tune_digits(config: dict[str, Any]) -> None:
    """One Tune trial: an SGD step per ``tune.report``, a checkpoint (``torch.save`` of the
    model and optimizer) every ``config["interval"]`` steps, resumed from
    ``tune.get_checkpoint()`` as Ray's PBT guide shows."""
    from ray import tune
    from ray.tune import Checkpoint

    torch.set_num_threads(1)
    d = digits()
    model = make_model(config["model"])
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    step, interval, steps = 0, int(config["interval"]), int(config["steps"])
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = torch.load(os.path.join(folder, "state.pt"), weights_only=True)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        step = int(saved["step"])
        for group in opt.param_groups:  # the perturbed config, not the donor's
            group["lr"], group["momentum"] = config["lr"], config["momentum"]
    gen = torch.Generator().manual_seed(int(config.get("seed", 0)) * 100_003 + step)
    val = accuracy(model, d["x_val"], d["y_val"])
    test = accuracy(model, d["x_test"], d["y_test"])
    while step < steps:
        x, y = vec_data(gen, 0)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        step += 1
        metrics = {"loss": float(loss), "step": step}
        if step % interval:
            tune.report({**metrics, "val_acc": val, "test_acc": test})
            continue
        val = accuracy(model, d["x_val"], d["y_val"])
        test = accuracy(model, d["x_test"], d["y_test"])
        with tempfile.TemporaryDirectory() as folder:
            state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step}
            torch.save(state, os.path.join(folder, "state.pt"))
            tune.report(
                {**metrics, "val_acc": val, "test_acc": test},
                checkpoint=Checkpoint.from_directory(folder),
            )


# -- plain PyTorch: one member, no framework --------------------------------------------------
def plain_loop(kind: str, steps: int, ready: int, seed: int = 0) -> dict[str, Any]:
    """One member trained by hand: the same steps, an evaluation at every ready."""
    d = digits()
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = make_model(kind)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    val = 0.0
    for step in range(1, steps + 1):
        x, y = vec_data(gen, 0)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if step % ready == 0:
            val = accuracy(model, d["x_val"], d["y_val"])
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "member_steps": steps,
        "val_acc": val,
        "test_acc": accuracy(model, d["x_test"], d["y_test"]),
    }


# -- memory ----------------------------------------------------------------------------------
def _rss_kb(pid: int | str) -> int:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return 0


def _tree_rss_kb() -> int:
    """RSS of this process and all its descendants (Linux /proc), in KiB."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += _rss_kb(pid)
        todo.extend(parents.get(pid, []))
    return total


class PeakMemory:
    """``with PeakMemory(tree=True) as m: ...; m.as_dict()``: the process's peak RSS during
    the block (``VmHWM`` after a reset), and with ``tree`` the peak of the summed RSS of
    the process and its descendants, sampled every 0.25 s."""

    def __init__(self, tree: bool = False) -> None:
        self.tree, self.tree_peak_kb = tree, 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            self.tree_peak_kb = max(self.tree_peak_kb, _tree_rss_kb())

    def __enter__(self) -> PeakMemory:
        self.before_kb = _rss_kb("self")
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")  # resets VmHWM (Linux >= 4.0)
            self.reset = True
        except OSError:
            self.reset = False
        if self.tree:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tree:
            self._stop.set()
            self._thread.join()
            self.tree_peak_kb = max(self.tree_peak_kb, _tree_rss_kb())
        self.peak_kb = 0
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    self.peak_kb = int(line.split()[1])

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rss_before_mb": round(self.before_kb / 1024, 1),
            "peak_rss_mb": round(self.peak_kb / 1024, 1),
            "peak_is_since_case_start": self.reset,
        }
        if self.tree:
            out["peak_rss_with_descendants_mb"] = round(self.tree_peak_kb / 1024, 1)
        return out
