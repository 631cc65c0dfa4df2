"""A plain Hugging Face Trainer script: a tiny BERT built in code (no download) learns
whether a token occurs in a sequence; AdamW with linear warm-up and decay.
examples/huggingface_pbt.py is the same script trained with PBT.

Run: python examples/huggingface_plain.py
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded


class Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Sequences of 16 token ids; the label says whether token 7 occurs."""

    def __init__(self, n: int, seed: int) -> None:
        self.x = torch.randint(1, 50, (n, 16), generator=torch.Generator().manual_seed(seed))
        self.y = (self.x == 7).any(-1).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.y[i]}


def make_trainer(callbacks: list[Any]) -> Trainer:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    config.num_labels = 2
    args = TrainingArguments(
        output_dir="hf-out",
        learning_rate=5e-4,
        weight_decay=0.01,
        warmup_steps=10,
        max_steps=480,
        per_device_train_batch_size=16,
        eval_strategy="steps",
        eval_steps=20,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
    )
    return Trainer(
        model=BertForSequenceClassification(config),
        args=args,
        callbacks=callbacks,
        train_dataset=Tokens(512, 0),
        eval_dataset=Tokens(128, 1),
    )


if __name__ == "__main__":
    trainer = make_trainer(callbacks=[])
    trainer.train()
    print(trainer.evaluate()["eval_loss"])
