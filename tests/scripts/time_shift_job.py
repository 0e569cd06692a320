"""A Lightning run with TimeShift on a compressed grid, for test_time_shift_jobs.py.

    python -m tests.scripts.time_shift_job requeue OUT   # one process: exits 75, run it again to go on
    python -m torch.distributed.run --nproc_per_node=2 -m tests.scripts.time_shift_job ddp OUT
                                                         # two CPU processes (gloo), started together

The grid (OUT/grid.csv) is written by the first run that finds none (rank 0 of a job), as the trainer is built:
`DIRTY_HOURS` dirty hours, then clean ones, then dirty again, one hour lasting ``HOUR_S``
seconds (OUT/hour_s). A fake RAPL tree at 60 W is the only device. Each rank writes
OUT/rank<r>.json with the wall time of every step it trained and its last step, when its fit
ends normally.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from energy_core.devices import rapl
from tests.doubles.fake_rapl import FakeRapl
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimNvml, end_process_group, install_for_process
from tests.helpers.grid_series import write_csv

DIRTY_HOURS, CLEAN_HOURS = 4, 6
STEPS = 40


def fake_hardware() -> None:
    install_for_process(SimNvml([], library=False))
    tree = FakeRapl(Path(tempfile.mkdtemp()) / "powercap", dram=False)
    tree.run({"cpu": Constant(60.0)})
    rapl.POWERCAP_ROOT = tree.root


def grid(out: Path, hour_s: float) -> float:
    """The grid's start (unix time): written now by the first run, read back by the others."""
    path = out / "grid.csv"
    if not path.exists() and os.environ.get("RANK", "0") == "0":
        begin = datetime.now(timezone.utc)
        hours = [600.0] * DIRTY_HOURS + [60.0] * CLEAN_HOURS + [600.0] * 10
        write_csv(out / "grid.tmp", [(begin + timedelta(seconds=i * hour_s), v) for i, v in enumerate(hours)])
        os.replace(out / "grid.tmp", path)  # rank 1 reads a whole file or none
    while not path.exists():  # rank 1 waits for rank 0's
        time.sleep(0.01)
    return grid_start(out)


def grid_start(out: Path) -> float:
    """The unix time of the grid's first hour."""
    first = (out / "grid.csv").read_text().splitlines()[1].split(",")[0]
    return datetime.fromisoformat(first).timestamp()


def main(mode: str, out: Path) -> None:
    import lightning.pytorch as pl

    from lightning_energy import EnergyMonitor, TimeShift
    from tests.helpers.lightning_models import make_module, regression_data

    hour_s = float((out / "hour_s").read_text())
    start = grid(out, hour_s)
    deadline = datetime.fromtimestamp(start + 20 * hour_s, timezone.utc)
    shift = TimeShift(deadline=deadline, mode="pause" if mode == "ddp" else "requeue", resume_s=hour_s,
                      checkpoint_path=str(out / "time_shift.ckpt"))  # fmt: skip
    monitor = EnergyMonitor(sample_interval_s=0.01, record_path=out / "energy.jsonl",
                            carbon_intensity_series=str(out / "grid.csv"))  # fmt: skip
    steps: list[float] = []
    # Pausing pays only when the work moved is long beside the pause, whose idle power (a quarter of
    # the busy power, the planner's assumption) is drawn in dirty hours too: 40 steps of 60 ms (2.4 s)
    # against at most 4 dirty hours (8 s, less the start-up): worth a pause
    module = make_module(pl, step_sleep_s=0.06 if mode == "ddp" else 0.02)
    step = module.training_step

    def timed(batch, batch_idx):
        steps.append(time.time())
        return step(batch, batch_idx)

    module.training_step = timed
    trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", devices=2 if mode == "ddp" else 1,
                         strategy="ddp" if mode == "ddp" else "auto", log_every_n_steps=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[monitor, shift])  # fmt: skip
    trainer.fit(module, regression_data(8 * STEPS), ckpt_path=shift.resume_from)
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps({"steps": steps, "step": trainer.global_step}))


if __name__ == "__main__":
    job, out_dir = sys.argv[1], Path(sys.argv[2])
    fake_hardware()
    try:
        main(job, out_dir)
    finally:
        if job == "ddp":
            end_process_group()
