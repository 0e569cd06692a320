"""Study 3 (Chen et al., DSEE): full fine-tuning vs LoRA vs a sparse update (biases only),
by energy, energy per token, trainable parameters and final loss.

    python examples/studies/peft_vs_full.py [--pretrain-epochs 10] [--epochs 10] [--eval-steps 5]
        [--target-drop 0.05] [--out runs/studies/peft_vs_full]

A small GPT-2 (built from a config, byte-level tokens, nothing downloaded) is first
"pre-trained" on the docstrings of the first half of Python's built-ins (not measured),
then adapted to the second half three ways, each from the same pre-trained weights and
measured by `hf_energy.EnergyCallback`:

* full: every weight trains (lr 1e-3);
* LoRA (the ``peft`` package): rank-8 adapters on every attention and MLP projection,
  base weights frozen (lr 5e-3);
* bias-only (BitFit, a sparse update): only the bias vectors train (lr 5e-3).

The final loss is the evaluation loss on held-out lines of the second half, evaluated
every ``--eval-steps`` steps during fine-tuning. The methods are also compared at equal
quality: `EnergyToTargetCallback` records each one's energy to a common target, an eval
loss ``--target-drop`` below the pre-trained model's (``stop=False``: every method then
trains on to the same number of epochs). Writes report.md, report.json and one
`energy-report` page comparing the three runs (their eval loss against kWh, the target
marked). Needs ``pip install peft``.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from study_kit import PAD, Collator, TextData, markdown_table, quiet, read_record, text_lines, write_report
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from energy_core import J_PER_KWH
from hf_energy import EnergyCallback, EnergyToTargetCallback, attach

LEARNING_RATES = {"full": 1e-3, "lora": 5e-3, "bias-only": 5e-3}
COLUMNS = {
    "method": "method",
    "trainable": "trainable params",
    "trainable_pct": "% of model",
    "target_j": "J to target",
    "target_step": "step at target",
    "joules": "J",
    "mj_per_token": "mJ/token",
    "seconds": "s",
    "eval_loss_before": "eval loss before",
    "eval_loss": "eval loss after",
}


def arguments(out: Path, epochs: float, lr: float, eval_steps: int | None = None) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out),
        num_train_epochs=epochs,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=32,
        learning_rate=lr,
        logging_steps=10,
        eval_strategy="steps" if eval_steps else "no",
        eval_steps=eval_steps,
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


def eval_loss(model: torch.nn.Module, held_out: TextData, out: Path) -> float:
    """The model's loss on the held-out lines (not measured)."""
    trainer = Trainer(model=model, args=arguments(out, 1, 1e-3), eval_dataset=held_out, data_collator=Collator())
    return trainer.evaluate()["eval_loss"]


def fine_tune(
    method: str, base: GPT2LMHeadModel, data: tuple[TextData, TextData], args: argparse.Namespace, target: float
) -> dict[str, object]:
    train, held_out = data
    model = adapt(method, base)
    total = sum(p.numel() for p in base.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainer = Trainer(
        model=model,
        args=arguments(args.out / method, args.epochs, LEARNING_RATES[method], args.eval_steps),
        train_dataset=train,
        eval_dataset=held_out,
        data_collator=Collator(),
    )
    record = args.out / f"{method}.jsonl"
    record.unlink(missing_ok=True)
    to_target = EnergyToTargetCallback("eval_loss", target, mode="min", stop=False)
    attach(trainer, EnergyCallback(record_path=record, summary=False), to_target)
    trainer.train()
    after = eval_loss(model, held_out, args.out / method)  # not measured: the record holds the fit alone
    summary = read_record(record)["summary"]
    reached = to_target.reached or {}
    return {
        "method": method,
        "trainable": trainable,
        "trainable_pct": 100.0 * trainable / total,
        "target_j": reached["target/energy_kwh"] * J_PER_KWH if reached else "-",
        "target_step": int(reached["target/step"]) if reached else "not reached",
        "joules": summary["metrics"]["energy/total_kwh"] * J_PER_KWH,
        "tokens": summary["tokens"],
        "mj_per_token": 1000 * summary["j_per_token"],
        "seconds": summary["seconds"],
        "eval_loss": after,
        "record": str(record),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-epochs", type=float, default=10.0)
    parser.add_argument("--epochs", type=float, default=10.0, help="fine-tuning epochs for each method")
    parser.add_argument("--methods", nargs="+", default=list(LEARNING_RATES), choices=list(LEARNING_RATES))
    parser.add_argument("--eval-steps", type=int, default=5, help="evaluate every this many steps")
    parser.add_argument(
        "--target-drop", type=float, default=0.05, help="common target: eval loss this fraction below the pre-trained"
    )
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
    before = eval_loss(base, held_out, args.out / "before")  # the same for every method: they start from it
    target = before * (1 - args.target_drop)
    rows = [{**fine_tune(m, base, (train, held_out), args, target), "eval_loss_before": before} for m in args.methods]
    by = {r["method"]: r for r in rows}
    result: dict[str, object] = {"rows": rows, "target_eval_loss": target}
    if "full" in by:
        result.update(
            {f"{m}_energy_over_full": float(r["joules"]) / float(by["full"]["joules"]) for m, r in by.items()}
        )
    lines_md = ["# Full fine-tuning vs LoRA vs bias-only (Chen et al., DSEE)", "", *markdown_table(rows, COLUMNS), ""]
    lines_md += [
        f"Common target: eval loss <= {target:.4g} ({args.target_drop:.0%} below the pre-trained model's "
        f"{before:.4g}); J to target: since fine-tuning started up to the end of the evaluation that first "
        "reached it, every evaluation included.",
        "",
    ]
    lines_md += [
        f"{m}: {result[f'{m}_energy_over_full']:.2f}x the energy of full fine-tuning"
        + (
            f"; {float(by[m]['target_j']) / float(by['full']['target_j']):.2f}x its energy to the target."
            if isinstance(by[m]["target_step"], int) and isinstance(by["full"]["target_step"], int)
            else "; one of the two did not reach the target."
        )
        for m in by
        if f"{m}_energy_over_full" in result and m != "full"
    ]
    write_report(args.out, result, lines_md, [args.out / f"{m}.jsonl" for m in args.methods])
    return result


if __name__ == "__main__":
    main()
