"""What a documentation snippet may take as given: the user's own model and data.

A page says, in prose, "given your LightningModule ``model`` and its loaders"; the snippet
under it uses those names. tests/docs/test_blocks.py puts them in the snippet's namespace when
the block is preceded by ``<!-- docs-test: given NAME -->`` (one of `GIVEN`'s keys).
Each call builds fresh objects, small enough for a CPU in a second or two; steps are
stretched to a few milliseconds (a realistic length) so that logging windows outlast the
sampler's readings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def lightning() -> dict[str, Any]:
    """``model`` (a LightningModule for ``lightning.pytorch``), ``train_loader``, ``val_loader``."""
    import lightning.pytorch as L

    from tests.helpers.lightning_models import make_module, regression_data

    return {
        "model": make_module(L, step_sleep_s=0.005, val_sleep_s=0.005),
        "train_loader": regression_data(256),
        "val_loader": regression_data(64),
    }


def hf() -> dict[str, Any]:
    """``model`` (a tiny GPT-2), ``train_dataset``, ``eval_dataset``, ``data_collator`` (padding)."""
    from tests.helpers.hf_models import Collator, SeqData, tiny_gpt2

    return {
        "model": tiny_gpt2(),
        "train_dataset": SeqData(96),
        "eval_dataset": SeqData(16),
        "data_collator": Collator(sleep_s=0.03),
    }


def loop() -> dict[str, Any]:
    """``model``, ``optimizer``, ``loader`` and ``val_loader`` of (x, y) batches, and
    ``train_step(batch)`` / ``validate()`` that do one optimizer step / one pass over ``val_loader``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def data(n: int) -> DataLoader:
        x = torch.randn(n, 16, generator=torch.Generator().manual_seed(n))
        return DataLoader(TensorDataset(x, x[:, :3].sum(1, keepdim=True)), batch_size=16)

    loader, val_loader = data(320), data(64)

    def train_step(batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        time.sleep(0.005)  # a step of realistic length: the sampler reads every 0.1 s
        x, y = batch
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    def validate() -> None:
        with torch.no_grad():
            for x, _ in val_loader:
                model(x)

    return {"model": model, "optimizer": optimizer, "loader": loader, "val_loader": val_loader,
            "train_step": train_step, "validate": validate}  # fmt: skip


GIVEN: dict[str, Callable[[], dict[str, Any]]] = {"lightning": lightning, "hf": hf, "loop": loop}
