"""Energy of a Lightning Fabric loop: `EnergyLoop` figures logged with ``fabric.log_dict``.

    python examples/loops/fabric_loop.py

Fabric owns the devices and the loggers (here a CSV logger under runs/fabric); the loop
calls `EnergyLoop.step` after each optimizer step and logs what it returns. In a
multi-process Fabric job, pass ``ranks=fabric_ranks(fabric)`` so the figures are the
job's (summed with ``fabric.all_reduce``).
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
from lightning.fabric.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from energy_core import EnergyLoop, Ranks


def fabric_ranks(fabric: L.Fabric) -> Ranks:
    """This process's part in a Fabric job, with Fabric's collectives."""

    def total(values: list[float]) -> list[float]:
        return fabric.all_reduce(torch.tensor(values, dtype=torch.float64), reduce_op="sum").tolist()

    def any_rank(flag: bool) -> bool:
        return bool(fabric.all_reduce(torch.tensor(float(flag)), reduce_op="sum").item() > 0)

    gpu = fabric.device.index if fabric.device.type == "cuda" else None
    return Ranks(fabric.global_rank, fabric.local_rank, fabric.world_size, gpu, total, None, any_rank)


def main(argv: list[str] | None = None) -> EnergyLoop:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--logs", default="runs/fabric")
    args = parser.parse_args(argv)
    fabric = L.Fabric(accelerator="cpu", devices=1, loggers=CSVLogger(args.logs, name="energy"))
    fabric.launch()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))
    model, optimizer = fabric.setup(model, torch.optim.Adam(model.parameters(), lr=1e-3))
    x = torch.randn(640, 16, generator=torch.Generator().manual_seed(0))
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(x, x[:, :3].sum(1, keepdim=True)), batch_size=16))

    with EnergyLoop(log_every_n_steps=10, country="DEU", ranks=fabric_ranks(fabric)) as energy:
        for _ in range(args.epochs):
            energy.start_epoch()
            for batch in loader:
                optimizer.zero_grad()
                fabric.backward(nn.functional.mse_loss(model(batch[0]), batch[1]))
                optimizer.step()
                if metrics := energy.step(batch):
                    fabric.log_dict(metrics, step=energy.steps)
            fabric.log_dict(energy.end_epoch(), step=energy.steps)
    fabric.logger.finalize("success")
    print(energy.summary)
    return energy


if __name__ == "__main__":
    main()
