"""Energy of a Lightning Fabric loop: `EnergyLoop` figures logged with ``fabric.log_dict``.

    python examples/loops/fabric_loop.py

Fabric owns the devices and the loggers (here a CSV logger under runs/fabric); the loop
calls `EnergyLoop.step` after each optimizer step and logs what it returns.
``ranks=fabric_ranks(fabric)`` makes the figures the job's in a multi-process Fabric job
(summed with ``fabric.all_reduce``, each device counted once): to launch one with
``fabric run --devices 2 ...``, construct ``L.Fabric()`` without arguments, as
tests/scripts/launcher_job.py does (Fabric refuses settings the script and the command
both give).
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
from lightning.fabric.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from energy_core import EnergyLoop, fabric_ranks


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
