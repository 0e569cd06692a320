"""A training process with a power cap, to be signalled or killed by test_power_cap.py.

    python -m tests.scripts.power_cap_child STATE_FILE [lightning|hf] [run|raise] [--vendor=nvml|amdsmi]
        [--workers=N]

The simulated driver keeps its limits in STATE_FILE (as persistence mode keeps them on
a real GPU), so the parent can see what this process left behind, and logs every limit
set to STATE_FILE.sets (``PID MW`` lines: which process asked). ``raise`` makes the
sixth training step raise an exception; ``--vendor`` picks the simulated library;
``--workers`` loads the Lightning run's data in N forked DataLoader workers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.doubles.sim_gpu import SimGpu
from tests.doubles.vendors import simulate_for_process


def lightning_run(fail: bool, workers: int = 0) -> None:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from lightning_energy import PowerCap
    from tests.helpers.lightning_models import make_module, raise_at, regression_data

    module = make_module(pl, step_sleep_s=0.02)
    if fail:
        raise_at(module, "training_step", 5, RuntimeError("boom"))
    trainer = pl.Trainer(
        max_epochs=1000,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[PowerCap(watts=250)],
    )
    data = regression_data(64)
    if workers:
        data = DataLoader(data.dataset, batch_size=8, num_workers=workers, persistent_workers=True,
                          multiprocessing_context="fork")  # fmt: skip
    trainer.fit(module, data)


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
    options = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    board = SimGpu("GPU-child", default_limit_mw=400_000, min_limit_mw=100_000, max_limit_mw=450_000)
    sim = simulate_for_process(options.get("vendor", "nvml"), [board], state_file=Path(args[0]))
    store = sim._store_limit

    def logged(gpu: SimGpu, mw: int) -> None:
        with open(f"{args[0]}.sets", "a") as log:
            log.write(f"{os.getpid()} {mw}\n")
        store(gpu, mw)

    sim._store_limit = logged  # type: ignore[method-assign]
    framework = args[1] if len(args) > 1 else "lightning"
    fail = len(args) > 2 and args[2] == "raise"
    if framework == "lightning":
        lightning_run(fail, int(options.get("workers", 0)))
    else:
        hf_run(fail)
