"""Energy of a plain PyTorch training loop, with `energy_core.EnergyLoop` (no Trainer).

    python examples/loops/plain_pytorch.py

A small regression MLP on generated data, 3 epochs with a validation pass each; the
window figures are printed every 20 steps and the run's summary at the end.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from energy_core import EnergyLoop


def data(samples: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 16, generator=g)
    return DataLoader(TensorDataset(x, x[:, :3].sum(1, keepdim=True)), batch_size=16)


def main(argv: list[str] | None = None) -> EnergyLoop:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--record", default=None, help="a JSON-lines run record to write")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train, val = data(640, 0), data(64, 1)

    with EnergyLoop(log_every_n_steps=20, country="FRA", record_path=args.record) as energy:
        for _ in range(args.epochs):
            energy.start_epoch()
            for x, y in train:
                optimizer.zero_grad()
                nn.functional.mse_loss(model(x), y).backward()
                optimizer.step()
                if metrics := energy.step((x, y)):
                    print(
                        f"step {energy.steps}: {metrics['power/total_w']:.1f} W, {metrics['energy/total_kwh']:.3g} kWh"
                    )
            with energy.stage("val"), torch.no_grad():
                for x, _ in val:
                    model(x)
            print(f"epoch {energy.epochs}: {energy.end_epoch().get('energy/epoch_kwh', float('nan')):.3g} kWh")
    print(energy.summary)
    return energy


if __name__ == "__main__":
    main()
