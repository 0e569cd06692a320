"""A linear regressor at module level, as Lightning's ``strategy="ddp_spawn"`` needs: it pickles the
module to the processes it starts (`tests.helpers.lightning_models.make_module` builds its class in a
function, which pickle cannot name)."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch
from torch import nn


class Regressor(pl.LightningModule):
    def __init__(self, step_sleep_s: float) -> None:
        super().__init__()
        self.layer = nn.Linear(8, 1)
        self.step_sleep_s = step_sleep_s

    def training_step(self, batch, batch_idx):
        time.sleep(self.step_sleep_s)
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)
