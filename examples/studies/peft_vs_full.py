"""Study 3 (Chen et al., DSEE): full fine-tuning vs LoRA vs a sparse update (biases only),
by energy, energy per token, trainable parameters and final loss.

    python examples/studies/peft_vs_full.py [--pretrain-epochs 10] [--epochs 10] [--out runs/studies/peft_vs_full]

A small GPT-2 (built from a config, byte-level tokens, nothing downloaded) is first
"pre-trained" on the docstrings of the first half of Python's built-ins (not measured),
then adapted to the second half three ways, each from the same pre-trained weights and
measured by `hf_energy.EnergyCallback`:

* full: every weight trains (lr 1e-3);
* LoRA (the ``peft`` package): rank-8 adapters on every attention and MLP projection,
  base weights frozen (lr 5e-3);
* bias-only (BitFit, a sparse update): only the bias vectors train (lr 5e-3).

The final loss is the evaluation loss on held-out lines of the second half. Writes
report.md, report.json and one `energy-report` page comparing the three runs. Needs
``pip install peft``.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from study_kit import PAD, Collator, TextData, markdown_table, quiet, read_record, text_lines, write_report
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from energy_core import J_PER_KWH
from hf_energy import EnergyCallback, attach

LEARNING_RATES = {"full": 1e-3, "lora": 5e-3, "bias-only": 5e-3}
COLUMNS = {
    "method": "method",
    "trainable": "trainable params",
    "trainable_pct": "% of model",
    "joules": "J",
    "mj_per_token": "mJ/token",
    "seconds": "s",
    "eval_loss_before": "eval loss before",
    "eval_loss": "eval loss after",
}


def arguments(out: Path, epochs: float, lr: float) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out),
        num_train_epochs=epochs,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=32,
        learning_rate=lr,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )


def pretrained(lines: list[str], epochs: float, out: Path) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=256,
        n_positions=128,
        n_embd=128,
        n_layer=2,
        n_head=4,
        pad_token_id=PAD,
        bos_token_id=None,
        eos_token_id=None,
    )
    model = GPT2LMHeadModel(config)
    Trainer(
        model=model,
        args=arguments(out / "pretrain", epochs, 1e-3),
        train_dataset=TextData(lines),
        data_collator=Collator(),
    ).train()
    return model


def adapt(method: str, base: GPT2LMHeadModel) -> torch.nn.Module:
    """A copy of the pre-trained model with only ``method``'s parameters trainable."""
    model = copy.deepcopy(base)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            fan_in_fan_out=True,
            target_modules=["c_attn", "c_proj", "c_fc"],
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, config)
    if method == "bias-only":
        for name, p in model.named_parameters():
            p.requires_grad = name.endswith(".bias")
    return model


def fine_tune(
    method: str, base: GPT2LMHeadModel, train: TextData, held_out: TextData, epochs: float, out: Path
) -> dict[str, object]:
    model = adapt(method, base)
    total = sum(p.numel() for p in base.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainer = Trainer(
        model=model,
        args=arguments(out / method, epochs, LEARNING_RATES[method]),
        train_dataset=train,
        eval_dataset=held_out,
        data_collator=Collator(),
    )
    before = trainer.evaluate()["eval_loss"]  # not measured: the callback is attached after
    record = out / f"{method}.jsonl"
    record.unlink(missing_ok=True)
    attach(trainer, EnergyCallback(record_path=record, summary=False))
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    summary = read_record(record)["summary"]
    return {
        "method": method,
        "trainable": trainable,
        "trainable_pct": 100.0 * trainable / total,
        "joules": summary["metrics"]["energy/total_kwh"] * J_PER_KWH,
        "tokens": summary["tokens"],
        "mj_per_token": 1000 * summary["j_per_token"],
        "seconds": summary["seconds"],
        "eval_loss_before": before,
        "eval_loss": after,
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-epochs", type=float, default=10.0)
    parser.add_argument("--epochs", type=float, default=10.0, help="fine-tuning epochs for each method")
    parser.add_argument("--methods", nargs="+", default=list(LEARNING_RATES), choices=list(LEARNING_RATES))
    parser.add_argument("--out", type=Path, default=Path("runs/studies/peft_vs_full"))
    args = parser.parse_args(argv)
    quiet()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = text_lines()
    half = len(lines) // 2
    adapt_lines = lines[half:]
    cut = len(adapt_lines) * 9 // 10
    base = pretrained(lines[:half], args.pretrain_epochs, args.out)
    train, held_out = TextData(adapt_lines[:cut]), TextData(adapt_lines[cut:])
    rows = [fine_tune(m, base, train, held_out, args.epochs, args.out) for m in args.methods]
    by = {r["method"]: r for r in rows}
    result: dict[str, object] = {"rows": rows}
    if "full" in by:
        result.update(
            {f"{m}_energy_over_full": float(r["joules"]) / float(by["full"]["joules"]) for m, r in by.items()}
        )
    lines_md = ["# Full fine-tuning vs LoRA vs bias-only (Chen et al., DSEE)", "", *markdown_table(rows, COLUMNS), ""]
    lines_md += [
        f"{m}: {result[f'{m}_energy_over_full']:.2f}x the energy of full fine-tuning."
        for m in by
        if f"{m}_energy_over_full" in result and m != "full"
    ]
    write_report(args.out, result, lines_md, [args.out / f"{m}.jsonl" for m in args.methods])
    return result


if __name__ == "__main__":
    main()
