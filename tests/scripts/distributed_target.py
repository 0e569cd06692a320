"""A 2-process CPU (gloo) training run with an energy target, for test_distributed.py.

    python -m tests.scripts.distributed_target lightning OUT   # Lightning starts rank 1 itself
    torchrun --nproc_per_node=2 -m tests.scripts.distributed_target hf OUT

Lightning: each rank logs its own validation score (not synchronised): rank 0's reaches
the target at the third validation, rank 1's never does, so both ranks must take rank 0's
decision at the same step. HF: the evaluation's metrics are the same on every rank; the
collectives of every evaluation must line up. Only local rank 0 measures the node's CPU (a
fake RAPL tree at a known 60 W). Each rank writes OUT/rank<r>.json with its last step, the
target's figures and whether it stopped.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from tests.doubles.fake_rapl import FakeRapl
from tests.doubles.sim_nvml import end_process_group
from tests.scripts.distributed_budget import fake_hardware

TARGET = 0.9
CURVES = {0: [0.3, 0.6, 0.95, 0.97, 0.99, 0.99], 1: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}
SLEEP_S = 0.03
TREE: list[FakeRapl] = []  # this process's fake RAPL tree


def write(out: Path, rank: int, step: int, target) -> None:
    (out / f"rank{rank}.json").write_text(
        json.dumps(
            {
                "step": step,
                "reached": target.reached,
                "stopped": target.run.stopped,
                "rapl_gap_s": TREE[0].longest_gap_s,
            }
        )  # fmt: skip
    )


def run_lightning(out: Path) -> None:
    import lightning.pytorch as pl
    import torch
    from torch import nn

    from lightning_energy import EnergyMonitor, EnergyToTarget
    from tests.helpers.lightning_models import regression_data

    class Scripted(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(8, 1)
            self.evaluations = 0

        def training_step(self, batch, batch_idx):
            time.sleep(SLEEP_S)
            return nn.functional.mse_loss(self.layer(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            time.sleep(SLEEP_S)

        def on_validation_epoch_end(self) -> None:
            if self.trainer.sanity_checking:
                return
            self.log("score", CURVES[self.global_rank][self.evaluations])  # this rank's own value
            self.evaluations += 1

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    target = EnergyToTarget("score", TARGET)
    trainer = pl.Trainer(
        max_epochs=6,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        log_every_n_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[EnergyMonitor(sample_interval_s=0.02, record_path=out / "energy.jsonl"), target],
    )
    trainer.fit(Scripted(), regression_data(64), regression_data(32))
    write(out, trainer.global_rank, trainer.global_step, target)


def run_hf(out: Path) -> None:
    from hf_energy import EnergyCallback, EnergyToTargetCallback, attach
    from tests.helpers.hf_models import SeqData, make_trainer

    trainer = make_trainer(out / "hf", SeqData(64), sleep_s=SLEEP_S, eval_data=SeqData(16), eval_strategy="epoch",
                           num_train_epochs=6, logging_steps=2)  # fmt: skip
    values = iter(CURVES[0])
    trainer.compute_metrics = lambda prediction: {"score": next(values)}
    target = EnergyToTargetCallback("score", TARGET)
    attach(trainer, EnergyCallback(sample_interval_s=0.02, record_path=out / "energy.jsonl", summary=False), target)
    trainer.train()
    write(out, int(os.environ.get("RANK", "0")), trainer.state.global_step, target)


if __name__ == "__main__":
    framework, out_dir = sys.argv[1], Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    TREE.append(fake_hardware())
    run_lightning(out_dir) if framework == "lightning" else run_hf(out_dir)
    end_process_group()
