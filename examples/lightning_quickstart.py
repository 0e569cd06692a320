"""Train a small MLP on synthetic data with EnergyMonitor: its summary, then the same totals as logged.

Runs on a CPU in well under a minute, after the `lightning` extra (TensorBoard included):

    pip install torch==2.13.0 -e ".[lightning]" && python examples/lightning_quickstart.py

Logs go to ./runs/quickstart (CSV and TensorBoard); the run record to
./runs/quickstart/energy.jsonl.
"""

from __future__ import annotations

import json
import os

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_energy import EnergyMonitor

OUT = os.environ.get("QUICKSTART_DIR", "runs/quickstart")


class Regressor(L.LightningModule):
    def __init__(self, width: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(32, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1)
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def data(n: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 32, generator=g)
    y = x[:, :4].sum(dim=1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=64, shuffle=seed == 0)


def main() -> None:
    torch.manual_seed(0)
    monitor = EnergyMonitor(country="FRA", pue=1.1, record_path=f"{OUT}/energy.jsonl")
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        log_every_n_steps=50,
        logger=[CSVLogger(OUT, name="csv"), TensorBoardLogger(OUT, name="tb")],
        callbacks=[monitor],
        enable_checkpointing=False,
    )
    trainer.fit(Regressor(), data(16384, 0), data(2048, 1))

    with open(f"{OUT}/energy.jsonl") as f:
        summary = [json.loads(line) for line in f][-1]  # the run record's summary line
    m = summary["metrics"]
    print(f"\nThe run's totals at its end (the CSV and TensorBoard logs in {OUT} hold them to the last logged step):")
    for key in sorted(k for k in m if k.startswith(("energy/", "carbon/")) and k != "energy/epoch_kwh"):
        print(f"  {key:<28} {m[key]:.4g}")
    print(f"  estimated: {', '.join(summary['estimated']) or 'nothing'}; run record: {OUT}/energy.jsonl")


if __name__ == "__main__":
    main()
