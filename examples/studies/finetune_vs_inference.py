"""Study 1 (Wang et al. 2023): energy of fine-tuning vs inference, per sample and per token,
and what padding costs.

    python examples/studies/finetune_vs_inference.py [--epochs 3] [--passes 10] [--eval-steps 10]
        [--target-loss 0.3] [--out runs/studies/finetune_vs_inference]

A small BERT-style classifier (built from a config, byte-level tokens, nothing
downloaded) is fine-tuned on lines of Python's built-in docstrings (label: does the line
mention "return"), then runs inference over the held-out lines (``--passes`` times, as a
served model would), with `hf_energy.EnergyCallback` measuring both. It is done twice:
batches padded to their longest line (dynamic padding) and batches padded to a fixed 128
positions. Energy per sample and per token comes from the run records; tokens are the real
ones (``attention_mask``), "positions" include padding (the evaluations' are taken out of
fine-tuning's). The two paddings are also compared at equal quality: the held-out lines are
evaluated every ``--eval-steps`` steps, and `EnergyToTargetCallback` records the energy each
fine-tuning took to reach an eval loss of ``--target-loss`` (``stop=False``: both train to
the same epochs). Writes report.md, report.json and one `energy-report` page comparing the
two runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from study_kit import (
    PAD,
    Collator,
    TextData,
    markdown_table,
    quiet,
    read_record,
    read_runs_by_type,
    text_lines,
    write_report,
)
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from energy_core import J_PER_KWH
from hf_energy import EnergyCallback, EnergyToTargetCallback, attach

PADDINGS = {"dynamic": None, "fixed-128": 128}
COLUMNS = {
    "padding": "padding",
    "phase": "phase",
    "target_j": "J to target",
    "joules": "J",
    "samples": "samples",
    "tokens": "tokens",
    "positions": "positions (incl. padding)",
    "j_per_sample": "J/sample",
    "mj_per_token": "mJ/token",
    "mj_per_position": "mJ/position",
    "seconds": "s",
}


def bert_classifier() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=256,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=128,
        pad_token_id=PAD,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def row(padding: str, phase: str, joules: float, samples: int, tokens: int, positions: int, seconds: float) -> dict:
    return {
        "padding": padding,
        "phase": phase,
        "joules": joules,
        "samples": samples,
        "tokens": tokens,
        "positions": positions,
        "j_per_sample": joules / samples,
        "mj_per_token": 1000 * joules / tokens,
        "mj_per_position": 1000 * joules / positions,
        "seconds": seconds,
    }


def run(padding: str, options: argparse.Namespace) -> list[dict]:
    """Fine-tune (evaluating on the held-out lines), then serve them; return a row for each phase."""
    lines = text_lines()
    labels = [int("return" in line.lower()) for line in lines]
    cut = len(lines) * 4 // 5
    collate = Collator(PADDINGS[padding])
    held_out = TextData(lines[cut:], labels[cut:])
    args = TrainingArguments(
        output_dir=str(options.out / "hf"),
        num_train_epochs=options.epochs,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=16,
        learning_rate=1e-3,
        logging_steps=10,
        eval_strategy="steps",
        eval_steps=options.eval_steps,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=bert_classifier(),
        args=args,
        train_dataset=TextData(lines[:cut], labels[:cut]),
        eval_dataset=held_out,
        data_collator=collate,
    )
    record = options.out / f"{padding}.jsonl"
    record.unlink(missing_ok=True)
    to_target = EnergyToTargetCallback("eval_loss", options.target_loss, mode="min", stop=False)
    energy = attach(trainer, EnergyCallback(record_path=record, summary=False), to_target)
    trainer.train()
    _, positions = collate.reset()
    trainer.predict(TextData(lines[cut:] * options.passes, labels[cut:] * options.passes))
    infer_tokens, infer_positions = collate.reset()

    rec = read_record(record)
    alone = [run for run in read_runs_by_type(record) if "stage" in run["header"]]  # predict(): a run of its own
    summary, (predict,) = rec["summary"], [s for run in alone for s in run["stage"] if s["stage"] == "predict"]
    assert energy.last_metrics["energy/predict_kwh"] == predict["kwh"]  # the callback logged what it recorded
    train_positions = positions - len(rec["target"]) * collate.pass_counts(held_out, 16)[1]  # one per evaluation
    reached = to_target.reached
    fine_tune = row(
        padding,
        "fine-tune",
        summary["metrics"]["energy/total_kwh"] * J_PER_KWH,
        summary["samples"],
        summary["tokens"],
        train_positions,
        summary["seconds"],
    )
    fine_tune["target_j"] = reached["target/energy_kwh"] * J_PER_KWH if reached else "-"
    fine_tune["record"] = str(record)
    return [
        fine_tune,
        row(
            padding,
            "inference",
            predict["kwh"] * J_PER_KWH,
            (len(lines) - cut) * options.passes,
            infer_tokens,
            infer_positions,
            predict["seconds"],
        ),
    ]


def to_target(fine_tune: dict) -> str:
    reached = fine_tune["target_j"]
    return f"{reached:.4g} J" if isinstance(reached, float) else "did not reach it"


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=3.0, help="fine-tuning epochs")
    parser.add_argument("--passes", type=int, default=10, help="inference passes over the held-out lines")
    parser.add_argument("--eval-steps", type=int, default=10, help="evaluate on the held-out lines this often")
    parser.add_argument("--target-loss", type=float, default=0.3, help="the common target: this eval loss")
    parser.add_argument("--out", type=Path, default=Path("runs/studies/finetune_vs_inference"))
    args = parser.parse_args(argv)
    quiet()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [r for padding in PADDINGS for r in run(padding, args)]
    by = {(r["padding"], r["phase"]): r for r in rows}
    dyn_train, dyn_infer = by["dynamic", "fine-tune"], by["dynamic", "inference"]
    ratios = {
        "train_over_inference_j_per_sample": dyn_train["j_per_sample"] / dyn_infer["j_per_sample"],
        "train_over_inference_j_per_token": dyn_train["mj_per_token"] / dyn_infer["mj_per_token"],
        "padded_over_dynamic_inference_j_per_token": by["fixed-128", "inference"]["mj_per_token"]
        / dyn_infer["mj_per_token"],
        "padded_over_dynamic_inference_positions": by["fixed-128", "inference"]["positions"] / dyn_infer["positions"],
        "padded_over_dynamic_train_j_per_token": by["fixed-128", "fine-tune"]["mj_per_token"]
        / dyn_train["mj_per_token"],
        "padded_over_dynamic_train_positions": by["fixed-128", "fine-tune"]["positions"] / dyn_train["positions"],
    }
    result = {"rows": rows, **ratios}
    lines = [
        "# Fine-tuning vs inference energy, and what padding costs (Wang et al. 2023)",
        "",
        *markdown_table(rows, COLUMNS),
        "",
        f"Fine-tuning / inference: {ratios['train_over_inference_j_per_sample']:.1f}x per sample, "
        f"{ratios['train_over_inference_j_per_token']:.1f}x per token (dynamic padding).",
        f"Fixed-128 / dynamic padding, inference: {ratios['padded_over_dynamic_inference_positions']:.2f}x "
        f"positions, {ratios['padded_over_dynamic_inference_j_per_token']:.2f}x J per real token; "
        f"fine-tuning: {ratios['padded_over_dynamic_train_positions']:.2f}x positions, "
        f"{ratios['padded_over_dynamic_train_j_per_token']:.2f}x J per real token.",
        "",
        f"Energy to an eval loss of {args.target_loss:g} (since fine-tuning started up to the end of the evaluation "
        "that first reached it, every evaluation included): "
        + "; ".join(f"{p} {to_target(by[p, 'fine-tune'])}" for p in PADDINGS)
        + ".",
    ]
    write_report(args.out, result, lines, [args.out / f"{p}.jsonl" for p in PADDINGS])
    return result


if __name__ == "__main__":
    main()
