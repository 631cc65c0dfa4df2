"""The Hugging Face half of benchmarks/integrations.py: an exploit in place in a
``transformers.Trainer`` against a restart from the donor's Hugging Face checkpoint."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import contextlib

import torch
import transformers
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from genepool.checkpoints import LocalCheckpoints, decode, encode
from genepool.integrations import huggingface as gph
from genepool.integrations import torch as gpt

__all__ = ["measure", "transformers"]

HPARAMS = {"lr": 2e-4}


class Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int, seed: int) -> None:
        self.x = torch.randint(1, 1000, (n, 32), generator=torch.Generator().manual_seed(seed))
        self.y = (self.x < 100).any(-1).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.y[i]}


def model() -> BertForSequenceClassification:
    """A BERT of about 1.3M parameters."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=1000,
        hidden_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=64,
    )
    return BertForSequenceClassification(config)


def trainer(folder: Path, callbacks: list[Any], **more: Any) -> Trainer:
    settings: dict[str, Any] = {"save_strategy": "no", **more}
    args = TrainingArguments(
        output_dir=str(folder / "hf"),
        learning_rate=5e-4,
        max_steps=1000,
        per_device_train_batch_size=16,
        eval_strategy="steps",
        eval_steps=4,
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        **settings,
    )
    return Trainer(
        model=model(),
        args=args,
        callbacks=callbacks,
        train_dataset=Tokens(256, 0),
        eval_dataset=Tokens(32, 1),
    )


class _Stop(Exception):
    pass


class _Clock(transformers.TrainerCallback):
    def __init__(self) -> None:
        self.start: float | None = None
        self.took: float | None = None

    def on_step_begin(self, *args: Any, **kw: Any) -> None:
        if self.start is not None and self.took is None:
            self.took = time.perf_counter() - self.start
            raise _Stop()


class _InPlace(_Clock):
    def __init__(self, store: LocalCheckpoints, donor: str) -> None:
        super().__init__()
        self.store, self.donor, self.seen = store, donor, 0

    def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.seen += 1
        if self.seen < 2:
            return
        self.start = time.perf_counter()
        payload = decode(self.store.get(self.donor))
        ts = gpt.TorchState(
            models={"model": kw["model"]},
            optimizers={"0": kw["optimizer"]},
            schedulers={"0": kw["lr_scheduler"]},
            hparams={"lr": gpt.Optimizer("0", "lr")},
            rng=False,
        )
        gph._State(state, ts).load(payload, starting=False)
        ts.apply(HPARAMS)


class _Save(transformers.TrainerCallback):
    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        ts = gpt.TorchState(
            models={"model": kw["model"]},
            optimizers={"0": kw["optimizer"]},
            schedulers={"0": kw["lr_scheduler"]},
            rng=False,
        )
        self.payload = gph._State(state, ts).saved()


def donor(folder: Path) -> tuple[LocalCheckpoints, str, str]:
    save = _Save()
    t = trainer(folder, [save], save_strategy="steps", save_steps=8)
    t.args.max_steps = 8
    t.train()
    store = LocalCheckpoints(folder / "genepool")
    return (
        store,
        store.put("bench", 0, 8, encode(save.payload)),
        str(folder / "hf" / "checkpoint-8"),
    )


def in_place(folder: Path, store: LocalCheckpoints, ckpt: str) -> float:
    clock = _InPlace(store, ckpt)
    with contextlib.suppress(_Stop):
        trainer(folder, [clock]).train()
    assert clock.took is not None
    return clock.took


def restart(folder: Path, path: str) -> float:
    clock = _Clock()

    class Apply(transformers.TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            for group in kw["optimizer"].param_groups:
                group["lr"] = HPARAMS["lr"]

    clock.start = time.perf_counter()
    with contextlib.suppress(_Stop):
        trainer(folder, [Apply(), clock]).train(resume_from_checkpoint=path)
    assert clock.took is not None
    return clock.took


def measure(repeats: int) -> dict[str, Any]:
    """Medians of ``repeats`` timings of each way, interleaved."""
    with tempfile.TemporaryDirectory(prefix="gp-hf-") as tmp:
        folder = Path(tmp)
        store, ckpt, path = donor(folder)
        in_place(folder, store, ckpt), restart(folder, path)  # warm-up
        a, b = [], []
        for _ in range(repeats):
            a.append(in_place(folder, store, ckpt))
            b.append(restart(folder, path))
    ms_a, ms_b = statistics.median(a) * 1e3, statistics.median(b) * 1e3
    return {
        "parameters": sum(p.numel() for p in model().parameters()),
        "in_place_ms": [round(x * 1e3, 2) for x in a],
        "restart_ms": [round(x * 1e3, 2) for x in b],
        "in_place_median_ms": round(ms_a, 2),
        "restart_median_ms": round(ms_b, 2),
        "restart_over_in_place": round(ms_b / ms_a, 2),
        "target": 5.0,
        "meets_target": ms_b / ms_a >= 5.0,
    }
