"""A training process with a power cap, to be signalled or killed by test_power_cap.py.

    python -m tests.scripts.power_cap_child STATE_FILE [lightning|hf] [run|raise]

The simulated driver keeps its limits in STATE_FILE (as persistence mode keeps them on
a real GPU), so the parent can see what this process left behind. ``raise`` makes the
sixth training step raise an exception.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.doubles.sim_nvml import SimGpu, SimNvml, install_for_process


def lightning_run(fail: bool) -> None:
    import lightning.pytorch as pl

    from lightning_energy import PowerCap
    from tests.helpers.lightning_models import make_module, regression_data

    module = make_module(pl, step_sleep_s=0.02)
    if fail:
        original = module.training_step

        def failing_step(batch, batch_idx):
            if batch_idx == 5:
                raise RuntimeError("boom")
            return original(batch, batch_idx)

        module.training_step = failing_step
    trainer = pl.Trainer(
        max_epochs=1000,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[PowerCap(watts=250)],
    )
    trainer.fit(module, regression_data(64))


def hf_run(fail: bool) -> None:
    from transformers import TrainerCallback

    from hf_energy import PowerCapCallback, attach
    from tests.helpers.hf_models import SeqData, make_trainer

    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if fail and state.global_step == 5:
                raise RuntimeError("boom")

    trainer = make_trainer(Path(sys.argv[1]).parent / "hf", SeqData(64), sleep_s=0.02, num_train_epochs=1000)
    trainer.add_callback(Boom())
    attach(trainer, PowerCapCallback(watts=250))
    trainer.train()


if __name__ == "__main__":
    sim = SimNvml(
        [SimGpu("GPU-child", default_limit_mw=400_000, min_limit_mw=100_000, max_limit_mw=450_000)],
        state_file=Path(sys.argv[1]),
    )
    install_for_process(sim)
    framework = sys.argv[2] if len(sys.argv) > 2 else "lightning"
    fail = len(sys.argv) > 3 and sys.argv[3] == "raise"
    (lightning_run if framework == "lightning" else hf_run)(fail)
