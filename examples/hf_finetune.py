"""Fine-tune a tiny GPT-2 (built from a config, nothing downloaded) with EnergyCallback.

    pip install torch==2.13.0 -e ".[hf]" && python examples/hf_finetune.py

Text: the docstrings of Python's built-in functions, which ship with every Python,
tokenised by bytes so no tokenizer has to be downloaded. Runs on a CPU in well under two
minutes; TensorBoard logs go to ./runs/hf_finetune/runs/, the run record to
./runs/hf_finetune/energy.jsonl.
"""

from __future__ import annotations

import builtins
import json
import os

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from hf_energy import EnergyCallback, attach

OUT = os.environ.get("HF_EXAMPLE_DIR", "runs/hf_finetune")
PAD = 0


def text_lines() -> list[str]:
    """Non-empty lines (at most 100 characters) of the built-in functions' docstrings."""
    docs = [getattr(obj, "__doc__", None) or "" for name, obj in sorted(vars(builtins).items()) if callable(obj)]
    return [line.strip()[:100] for doc in docs for line in doc.splitlines() if len(line.strip()) > 8]


class CharData(torch.utils.data.Dataset):
    """Each line of text as a sequence of byte ids (1-255; 0 is padding)."""

    def __init__(self, lines: list[str], repeat: int) -> None:
        self.items = [[min(255, max(1, ord(c))) for c in line] for line in lines] * repeat

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.items[i]}


def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence in the batch (dynamic padding)."""
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), PAD)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, b in enumerate(batch):
        ids[row, : len(b["input_ids"])] = torch.tensor(b["input_ids"])
        mask[row, : len(b["input_ids"])] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def main(epochs: float = 2.0) -> EnergyCallback:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=256,
        n_positions=128,
        n_embd=64,
        n_layer=2,
        n_head=2,
        pad_token_id=PAD,
        bos_token_id=None,
        eos_token_id=None,
    )
    model = GPT2LMHeadModel(config)
    lines = text_lines()
    train, evaluation = lines[: len(lines) * 9 // 10], lines[len(lines) * 9 // 10 :]
    args = TrainingArguments(
        output_dir=OUT,
        num_train_epochs=epochs,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        learning_rate=3e-3,
        logging_steps=10,
        eval_strategy="epoch",
        save_strategy="no",
        report_to=["tensorboard"],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=CharData(train, repeat=1),
        eval_dataset=CharData(evaluation, repeat=1),
        data_collator=collate,
    )
    energy = attach(trainer, EnergyCallback(country="FRA", pue=1.1, record_path=f"{OUT}/energy.jsonl"))
    trainer.train()

    with open(f"{OUT}/energy.jsonl") as f:
        summary = [json.loads(line) for line in f][-1]  # the run record's summary line
    m = summary["metrics"]
    print(f"\nThe run's totals at its end (TensorBoard in {OUT} holds them to the last logged step):")
    for key in sorted(k for k in m if k.startswith(("energy/", "carbon/")) and k != "energy/epoch_kwh"):
        print(f"  {key:<28} {m[key]:.4g}")
    print(f"  estimated: {', '.join(summary['estimated']) or 'nothing'}; run record: {OUT}/energy.jsonl")
    return energy


if __name__ == "__main__":
    main()
