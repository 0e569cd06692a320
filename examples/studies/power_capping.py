"""Study 4 (McDonald et al. 2022): energy and time per step across GPU power caps.

    python examples/studies/power_capping.py [--fractions 1 0.9 0.8 0.7 0.6 0.5] [--steps 300]
        [--out runs/studies/power_capping]

Trains the same small transformer (Lightning, generated tokens) for ``--steps`` steps
under each cap, set with `lightning_energy.PowerCap(fraction=f)` (a share of each GPU's
default limit, restored after every run) and measured with `EnergyMonitor`. The first
logging window of each run is left out as warm-up; energy and time per step come from
the rest of the run record. report.md has the table, relative to the uncapped run.

It needs an NVIDIA GPU and permission to set power limits (root or CAP_SYS_ADMIN).
Without them it says what it would have done and why it cannot, writes that to
report.md, and exits with status 0. Every run uses ``PowerCap(strict=True)``, which
refuses before training when the driver denies the limit, so nothing runs uncapped
under a capped label.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as L
import pynvml
import torch
from study_kit import markdown_table, quiet, read_record, write_report
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from energy_core import J_PER_KWH
from lightning_energy import EnergyMonitor, PowerCap

COLUMNS = {
    "fraction": "cap (x default)",
    "cap_w": "cap W",
    "gpu_w": "GPU W",
    "gpu_j_per_step": "GPU J/step",
    "ms_per_step": "ms/step",
    "energy_vs_uncapped": "energy vs 100%",
    "time_vs_uncapped": "time vs 100%",
}


def nvidia_gpus() -> tuple[int, str]:
    """The number of NVIDIA GPUs NVML sees, and a reason when it is none."""
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError as error:
        return 0, f"no NVIDIA driver here (NVML: {error})"
    return count, "" if count else "the NVIDIA driver sees no GPU"


class Transformer(L.LightningModule):
    """An encoder predicting the next token of generated sequences; its size follows the device."""

    def __init__(self, width: int, layers: int, vocab: int = 512) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(
            width, nhead=max(1, width // 64), dim_feedforward=4 * width, batch_first=True
        )
        self.body = nn.TransformerEncoder(layer, num_layers=layers)
        self.head = nn.Linear(width, vocab)

    def training_step(self, batch, batch_idx):
        (tokens,) = batch
        logits = self.head(self.body(self.embed(tokens[:, :-1])))
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-4)


def run_at(fraction: float, args: argparse.Namespace) -> dict[str, object]:
    """Train ``args.steps`` steps under a cap of ``fraction``; figures after the first window."""
    cuda = torch.cuda.is_available()
    width, layers, batch, length = (1024, 8, 32, 257) if cuda else (64, 1, 8, 33)
    torch.manual_seed(0)
    tokens = torch.randint(0, 512, (args.steps * batch, length), generator=torch.Generator().manual_seed(0))
    record = args.out / f"cap_{fraction:g}.jsonl"
    record.unlink(missing_ok=True)
    every = max(1, args.steps // 10)
    trainer = L.Trainer(
        max_steps=args.steps,
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        logger=False,
        precision="bf16-mixed" if cuda else "32-true",
        log_every_n_steps=every,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[EnergyMonitor(record_path=str(record), summary=False), PowerCap(fraction=fraction, strict=True)],
    )
    trainer.fit(Transformer(width, layers), DataLoader(TensorDataset(tokens), batch_size=batch))
    rec = read_record(record)
    first, last = rec["window"][0], rec["window"][-1]
    steps = last["step"] - first["step"]
    gpu_j = (last["metrics"]["energy/gpu_kwh"] - first["metrics"]["energy/gpu_kwh"]) * J_PER_KWH
    seconds = last["elapsed_s"] - first["elapsed_s"]
    (applied,) = [c for c in rec["power_cap"] if c["event"] == "applied"]
    return {
        "fraction": fraction,
        "cap_w": sum(c["cap_w"] for c in applied["caps"]),
        "gpu_w": gpu_j / seconds,
        "gpu_j_per_step": gpu_j / steps,
        "ms_per_step": 1000 * seconds / steps,
        "record": str(record),
        "driver": rec["header"]["hardware"]["drivers"].get("nvidia"),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
    parser.add_argument("--steps", type=int, default=300, help="training steps under each cap")
    parser.add_argument("--out", type=Path, default=Path("runs/studies/power_capping"))
    args = parser.parse_args(argv)
    quiet()
    args.out.mkdir(parents=True, exist_ok=True)
    plan = (
        f"train {args.steps} steps under each cap of "
        f"{', '.join(f'{f:.0%}' for f in args.fractions)} of each GPU's default power limit "
        "(PowerCap(fraction=f), restored after each run) and compare GPU energy and time per step"
    )
    count, reason = nvidia_gpus()
    rows: list[dict[str, object]] = []
    if count:
        try:
            rows.append(run_at(args.fractions[0], args))
        except PermissionError as error:
            reason = f"no permission to set GPU power limits: {error}"
    if not rows:
        lines = [
            "# Power capping study: not run",
            "",
            f"Would {plan}.",
            "",
            f"Not run: {reason}.",
            "Run it on a machine with an NVIDIA GPU, as root or with CAP_SYS_ADMIN.",
        ]
        result = {"ran": False, "reason": reason, "plan": plan}
        write_report(args.out, result, lines, [])
        return result
    for fraction in args.fractions[1:]:
        try:
            rows.append(run_at(fraction, args))
        except ValueError as error:  # below the board's minimum limit: said, and skipped
            print(f"skipped {fraction:.0%}: {error}")
    base = rows[0]
    for r in rows:
        r["energy_vs_uncapped"] = float(r["gpu_j_per_step"]) / float(base["gpu_j_per_step"])
        r["time_vs_uncapped"] = float(r["ms_per_step"]) / float(base["ms_per_step"])
    gpu = f"{torch.cuda.get_device_name(0)}, " if torch.cuda.is_available() else ""
    result = {"ran": True, "rows": rows, "driver": base["driver"]}
    lines = [
        f"# Energy and time per step by GPU power cap (McDonald et al. 2022), {gpu}driver {result['driver']}",
        "",
        *markdown_table(rows, COLUMNS),
    ]
    write_report(args.out, result, lines, [str(r["record"]) for r in rows])
    return result


if __name__ == "__main__":
    main()
