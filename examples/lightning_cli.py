"""The callbacks from a LightningCLI YAML config (``trainer.callbacks`` with ``class_path``).

The `lightning` extra brings jsonargparse[signatures], which LightningCLI needs:

    pip install torch==2.13.0 -e ".[lightning]"
    python examples/lightning_cli.py fit --config examples/lightning_cli.yaml
"""

from __future__ import annotations

import lightning.pytorch as L
import torch
from lightning.pytorch.cli import LightningCLI
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Regressor(L.LightningModule):
    def __init__(self, width: int = 64, lr: float = 1e-3) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, 1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class SyntheticData(L.LightningDataModule):
    def __init__(self, samples: int = 2048, batch_size: int = 32) -> None:
        super().__init__()
        self.samples, self.batch_size = samples, batch_size

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(self.samples, 16, generator=g)
        return DataLoader(TensorDataset(x, x[:, :3].sum(1, keepdim=True)), batch_size=self.batch_size)


if __name__ == "__main__":
    LightningCLI(Regressor, SyntheticData)
