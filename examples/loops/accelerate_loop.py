"""Energy of an HF Accelerate loop: `EnergyLoop` figures logged with ``accelerator.log``.

    python examples/loops/accelerate_loop.py

Accelerate's trackers (here TensorBoard under runs/accelerate) receive the figures; in a
multi-process launch, `energy_core.torch_distributed` gives the job's sums.
"""

from __future__ import annotations

import argparse

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from energy_core import EnergyLoop, torch_distributed


def main(argv: list[str] | None = None) -> EnergyLoop:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--logs", default="runs/accelerate")
    args = parser.parse_args(argv)
    accelerator = Accelerator(cpu=True, log_with="tensorboard", project_dir=args.logs)
    accelerator.init_trackers("energy")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(640, 16, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x, x[:, :3].sum(1, keepdim=True)), batch_size=16)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    gpu = accelerator.device.index if accelerator.device.type == "cuda" else None
    ranks = torch_distributed(accelerator.local_process_index, gpu, accelerator.device)

    with EnergyLoop(log_every_n_steps=10, pue=1.2, ranks=ranks) as energy:
        for _ in range(args.epochs):
            energy.start_epoch()
            for batch in loader:
                optimizer.zero_grad()
                accelerator.backward(nn.functional.mse_loss(model(batch[0]), batch[1]))
                optimizer.step()
                if metrics := energy.step(batch):
                    accelerator.log(metrics, step=energy.steps)
            accelerator.log(energy.end_epoch(), step=energy.steps)
    accelerator.end_training()
    print(energy.summary)
    return energy


if __name__ == "__main__":
    main()
