"""Tiny Lightning modules and data for both flavours (``lightning.pytorch``, ``pytorch_lightning``)."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from types import ModuleType

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

FLAVOURS = ["lightning.pytorch", "pytorch_lightning"]


def flavour(name: str) -> ModuleType:
    return importlib.import_module(name)


def make_module(pl: ModuleType, step_sleep_s: float = 0.0, val_sleep_s: float = 0.0, token_batches: bool = False):
    """A linear regressor; sleeps stretch steps to a realistic, known duration."""

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(8, 1)

        def _loss(self, batch) -> torch.Tensor:
            if token_batches:
                x = batch["input_ids"].float()
                return self.layer(x).pow(2).mean()
            x, y = batch
            return nn.functional.mse_loss(self.layer(x), y)

        def training_step(self, batch, batch_idx):
            if step_sleep_s:
                time.sleep(step_sleep_s)
            loss = self._loss(batch)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            if val_sleep_s:
                time.sleep(val_sleep_s)
            self.log("val_loss", self._loss(batch))

        def test_step(self, batch, batch_idx):
            if val_sleep_s:
                time.sleep(val_sleep_s)
            self.log("test_loss", self._loss(batch))

        def predict_step(self, batch, batch_idx):
            if val_sleep_s:
                time.sleep(val_sleep_s)
            return self.layer(batch[0])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return Tiny()


def raise_at(module, hook: str, batch_idx: int, error: BaseException) -> None:
    """Make ``module``'s ``hook`` (``"training_step"``, ``"validation_step"``) raise ``error`` at ``batch_idx``."""
    original = getattr(module, hook)

    def failing(batch, index, *args):
        if index == batch_idx:
            raise error
        return original(batch, index, *args)

    setattr(module, hook, failing)


def at_train_start(pl: ModuleType, act: Callable[[], None]):
    """A callback that calls ``act`` when training starts: a simulated fault timed from there, not from the
    board's making (the Trainer's and its loggers' set-up before it take as long as the machine is busy)."""

    class AtTrainStart(pl.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            act()

    return AtTrainStart()


def regression_data(n: int, batch_size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, 8, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=batch_size)


class TokenData(Dataset):
    """Sequences of 8 tokens whose attention mask keeps the first ``3 + i % 4`` of them."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        mask = torch.zeros(8, dtype=torch.long)
        mask[: 3 + i % 4] = 1
        return {"input_ids": torch.arange(8) * mask, "attention_mask": mask}

    def tokens(self) -> int:
        return sum(3 + i % 4 for i in range(self.n))
