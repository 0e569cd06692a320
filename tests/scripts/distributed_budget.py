"""A 2-process CPU (gloo) training run with an energy budget, for test_distributed.py.

    python -m tests.scripts.distributed_budget lightning OUT        # Lightning starts rank 1 itself
    torchrun --nproc_per_node=2 -m tests.scripts.distributed_budget hf OUT
    torchrun --nproc_per_node=2 -m tests.scripts.distributed_budget hf OUT no  # logging_strategy="no", 1 epoch
    python -m tests.scripts.distributed_budget lightning OUT raise  # rank 0 fails at its 5th step

Only local rank 0 measures the node's CPU (a fake RAPL tree at a known 60 W); rank 1
measures nothing, so it would never stop on its own: both ranks must take rank 0's
decision at the same step. Each rank writes OUT/rank<r>.json with its last step.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from energy_core import J_PER_KWH
from energy_core.devices import rapl
from tests.doubles.fake_rapl import FakeRapl
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimNvml, end_process_group, install_for_process

CPU_W = 60.0
LIMIT_KWH = CPU_W * 1.5 / J_PER_KWH  # about 1.5 s of training
SLEEP_S = 0.03


def fake_hardware() -> FakeRapl:
    sim = SimNvml([], library=False)  # no GPU on this machine
    install_for_process(sim)
    tree = FakeRapl(Path(tempfile.mkdtemp()) / "powercap", dram=False)
    tree.run({"cpu": Constant(CPU_W)})
    rapl.POWERCAP_ROOT = tree.root
    return tree


def run_lightning(out: Path, fail: bool = False) -> None:
    import lightning.pytorch as pl

    from lightning_energy import EnergyBudget, EnergyMonitor
    from tests.helpers.lightning_models import make_module, regression_data

    budget = EnergyBudget(max_kwh=LIMIT_KWH, forecast="off", sample_interval_s=0.02)
    trainer = pl.Trainer(
        max_epochs=20,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        log_every_n_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[EnergyMonitor(sample_interval_s=0.02), budget] if fail else [budget],
    )
    module = make_module(pl, step_sleep_s=SLEEP_S)
    if fail:
        original = module.training_step

        def failing_step(batch, batch_idx):
            if batch_idx == 5 and trainer.global_rank == 0:
                raise RuntimeError("rank 0 fails")
            return original(batch, batch_idx)

        module.training_step = failing_step
    trainer.fit(module, regression_data(160))
    rank = trainer.global_rank
    measured = budget.tracker.totals()["energy/total_kwh"]
    (out / f"rank{rank}.json").write_text(
        json.dumps({"step": trainer.global_step, "kwh": measured, "stopped": budget.guard.stopped is not None})
    )


def run_hf(out: Path, logging: str = "steps") -> None:
    """``logging``: the Trainer's ``logging_strategy``; with ``"no"``, one epoch of 80 steps, whose end
    would otherwise be the job's first decision."""
    from hf_energy import EnergyBudgetCallback, attach
    from tests.helpers.hf_models import SeqData, make_trainer

    if logging == "steps":
        trainer = make_trainer(out / "hf", SeqData(320), sleep_s=SLEEP_S, num_train_epochs=20, logging_steps=2)
    else:
        trainer = make_trainer(out / "hf", SeqData(1280), sleep_s=SLEEP_S, num_train_epochs=1, logging_strategy=logging)
    budget = EnergyBudgetCallback(max_kwh=LIMIT_KWH, forecast="off", sample_interval_s=0.02)
    attach(trainer, budget)
    trainer.train()
    rank = int(os.environ.get("RANK", "0"))
    (out / f"rank{rank}.json").write_text(
        json.dumps(
            {
                "step": trainer.state.global_step,
                "max_steps": trainer.state.max_steps,
                "kwh": budget.tracker.totals()["energy/total_kwh"],
                "stopped": budget.guard.stopped is not None,
            }
        )
    )


if __name__ == "__main__":
    framework, out_dir = sys.argv[1], Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    fake_hardware()
    if framework == "lightning":
        run_lightning(out_dir, fail=sys.argv[3:] == ["raise"])
    else:
        run_hf(out_dir, *sys.argv[3:])
    end_process_group()
