"""Study 2 (Geißler et al. 2024): the same model trained to the same target loss with
different batch sizes and learning rates: how much energy does each setup need?

    python examples/studies/setup_sweep.py [--batch-sizes 16 64 256] [--lrs 0.0003 0.003 0.03]
        [--target 0.03] [--max-epochs 40] [--hopeless 3] [--out runs/studies/setup_sweep]

A small MLP (Lightning) learns a fixed random "teacher" network from generated data. Each
setup trains until its validation loss reaches ``--target`` (`EnergyToTarget`, which logs
the energy, CO2e and time since fit start up to the end of that validation and stops
there), or until `EnergyBudget` stops it as hopeless: once a setup has reached the
target, every later one gets a budget of ``--hopeless`` x the least energy to target any
setup has needed so far (``max_kwh``), so a setup that cannot beat that by much stops
without burning more. `EnergyMonitor` writes one run record per setup; report.md ranks the
setups by energy to the target and `energy-report` draws their validation loss against
kWh together, the target marked.

The budget's forecast is off here: it projects the energy of the whole ``max_epochs`` run,
and these runs end earlier, at the target; the measured total is the right test.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import lightning.pytorch as L
import torch
from study_kit import markdown_table, quiet, read_record, write_report
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from energy_core import J_PER_KWH
from lightning_energy import EnergyBudget, EnergyMonitor, EnergyToTarget

COLUMNS = {
    "setup": "setup",
    "outcome": "outcome",
    "epochs": "epochs",
    "steps": "steps",
    "target_j": "J to target",
    "joules": "J",
    "x_best": "x best",
    "val_loss": "last val loss",
    "seconds": "s",
}


def teacher_data(n: int, seed: int) -> TensorDataset:
    """Inputs and the outputs of a fixed random network (the same teacher for every seed)."""
    teacher = torch.Generator().manual_seed(1234)
    w1, w2 = torch.randn(32, 64, generator=teacher) / 32**0.5, torch.randn(64, 1, generator=teacher) / 8
    x = torch.randn(n, 32, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, torch.tanh(x @ w1) @ w2)


class Student(L.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))

    def training_step(self, batch, batch_idx):
        loss = nn.functional.mse_loss(self.net(batch[0]), batch[1])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", nn.functional.mse_loss(self.net(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def train(batch_size: int, lr: float, args: argparse.Namespace, max_kwh: float | None) -> dict[str, object]:
    """One setup to the target (or the budget, or max epochs); its figures from the record."""
    name = f"bs{batch_size}-lr{lr:g}"
    record = args.out / f"{name}.jsonl"
    record.unlink(missing_ok=True)
    L.seed_everything(0, verbose=False)
    train_data = DataLoader(teacher_data(args.samples, seed=0), batch_size=batch_size, shuffle=True)
    val_data = DataLoader(teacher_data(1024, seed=1), batch_size=512)
    callbacks = [
        EnergyMonitor(record_path=str(record), summary=False),
        EnergyToTarget("val_loss", args.target, mode="min"),
    ]
    if max_kwh is not None:
        callbacks.append(EnergyBudget(max_kwh=max_kwh, forecast="off"))
    trainer = L.Trainer(
        max_epochs=args.max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=20,
        callbacks=callbacks,
    )
    trainer.fit(Student(lr), train_data, val_data)
    val_loss = float(trainer.callback_metrics["val_loss"])
    rec = read_record(record)
    stopped = [b for b in rec["budget"] if b["event"] == "stop"]
    reached = [t for t in rec["target"] if t["event"] == "reached"]
    outcome = "target" if reached else ("hopeless (budget)" if stopped else "max epochs")
    if reached and reached[0]["energy_kwh"] is None:  # before the sampler's second reading: no figure to rank by
        outcome = "target (too soon to measure)"
    return {
        "setup": name,
        "batch_size": batch_size,
        "lr": lr,
        "outcome": outcome,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "target_j": reached[0]["energy_kwh"] * J_PER_KWH if outcome == "target" else "-",
        "joules": rec["summary"]["metrics"]["energy/total_kwh"] * J_PER_KWH,
        "val_loss": val_loss,
        "seconds": rec["summary"]["seconds"],
        "budget_kwh": max_kwh,
        "record": str(record),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 3e-3, 3e-2])
    parser.add_argument("--target", type=float, default=0.03, help="validation MSE to reach")
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--samples", type=int, default=4096, help="training samples per epoch")
    parser.add_argument("--hopeless", type=float, default=3.0, help="budget = this x the best energy so far")
    parser.add_argument("--out", type=Path, default=Path("runs/studies/setup_sweep"))
    args = parser.parse_args(argv)
    quiet()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    best_j = math.inf
    for batch_size in args.batch_sizes:
        for lr in args.lrs:
            budget = args.hopeless * best_j / J_PER_KWH if math.isfinite(best_j) else None
            row = train(batch_size, lr, args, budget)
            rows.append(row)
            if row["outcome"] == "target":
                best_j = min(best_j, float(row["target_j"]))
    reached = [r for r in rows if r["outcome"] == "target"]
    for r in rows:  # energy to target against the best; for a setup that never got there, all it spent
        spent = r["target_j"] if r["outcome"] == "target" else r["joules"]
        r["x_best"] = float(spent) / best_j if reached else float("nan")
    rows.sort(key=lambda r: (r["outcome"] != "target", r["target_j"] if r["outcome"] == "target" else r["joules"]))
    spread = max(float(r["target_j"]) for r in reached) / best_j if reached else float("nan")
    result = {"target": args.target, "rows": rows, "reached": len(reached), "spread_worst_over_best": spread}
    lines = [
        f"# Energy to reach val MSE {args.target} by batch size and learning rate (Geißler et al. 2024)",
        "",
        *markdown_table(rows, COLUMNS),
        "",
        f"{len(reached)} of {len(rows)} setups reached the target; the costliest of them needed "
        f"{spread:.1f}x the energy to target of the cheapest (J to target: since fit start up to the end "
        f"of the validation that first reached it, every validation included). Setups stopped as hopeless "
        f"had spent {args.hopeless:g}x the best energy to target known when they ran.",
    ]
    write_report(args.out, result, lines, [str(r["record"]) for r in rows])
    return result


if __name__ == "__main__":
    main()
