"""A short Lightning fit with EnergyMonitor and Lightning's rich progress bar, for a test that
reads what a terminal shows (tests/lightning_energy/test_terminal.py runs it inside tmux)."""

from __future__ import annotations

import sys

import lightning.pytorch as pl
import torch

from lightning_energy import EnergyMonitor
from tests.helpers.lightning_models import make_module, regression_data


def main(record: str) -> None:
    torch.manual_seed(0)
    monitor = EnergyMonitor(devices=["cpu"], country="FRA", record_path=record)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        log_every_n_steps=5,
        logger=False,
        callbacks=[monitor, pl.callbacks.RichProgressBar()],
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=2,
    )
    trainer.fit(make_module(pl, step_sleep_s=0.02), regression_data(240), regression_data(32))
    print("FIT RETURNED")


if __name__ == "__main__":
    main(sys.argv[1])
