"""A tiny GPT-2 built from a config and token data with known lengths, for real HF Trainers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments


class SeqData(torch.utils.data.Dataset):
    """Sequence i has ``4 + i % 9`` tokens (ids 1..63); padding is added by `Collator`."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": [1 + (i * 7 + j) % 63 for j in range(4 + i % 9)]}

    def tokens(self) -> int:
        return sum(4 + i % 9 for i in range(self.n))


class Collator:
    """Dynamic padding; ``sleep_s`` stretches each step to a known, realistic length."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.sleep_s = sleep_s

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, b in enumerate(batch):
            ids[row, : len(b["input_ids"])] = torch.tensor(b["input_ids"])
            mask[row, : len(b["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


class JobCollator(Collator):
    """Each batch is a step of a manual-clock job (`tests.energy_core.shift.manual_job.Job`; HF collates
    a batch ahead of its step)."""

    def __init__(self, job: Any) -> None:
        super().__init__()
        self.job = job

    def __call__(self, batch):
        if not self.job.step_times:
            self.job.wait_first_reading()
        self.job.train_step()
        return super().__call__(batch)


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=64,
        n_positions=32,
        n_embd=16,
        n_layer=1,
        n_head=2,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )
    return GPT2LMHeadModel(config)


def fail_from_batch(trainer: Trainer, n: int, error: type[BaseException] = RuntimeError,
                    before: Callable[[], None] | None = None) -> Callable:  # fmt: skip
    """Make ``trainer``'s collator raise ``error("bad batch")`` from its ``n``-th batch on (HF fetches a batch
    ahead of the step it trains), ``before()`` called first; returns the collator it wraps, to put back."""
    collate, batches = trainer.data_collator, []

    def failing(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        batches.append(1)
        if len(batches) >= n:
            if before is not None:
                before()
            raise error("bad batch")
        return collate(batch)

    trainer.data_collator = failing
    return collate


def make_trainer(
    out: Path,
    train: SeqData,
    sleep_s: float = 0.0,
    eval_data: SeqData | None = None,
    callbacks: list | None = None,
    **arguments,
) -> Trainer:
    options = {
        "output_dir": str(out),
        "num_train_epochs": 2,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "logging_steps": 4,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "learning_rate": 1e-3,
    }
    options.update(arguments)
    return Trainer(
        model=tiny_gpt2(),
        args=TrainingArguments(**options),
        train_dataset=train,
        eval_dataset=eval_data,
        data_collator=Collator(sleep_s),
        callbacks=callbacks,
    )
