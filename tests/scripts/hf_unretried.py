"""An HF training whose ``train()`` raises and is never retried, for the test of what the exit ends.

    python -m tests.scripts.hf_unretried RECORD [--attach]

One simulated GPU (a constant 300 W, an energy counter), an `EnergyCallback` given in
``callbacks=[...]`` (or `attach`ed), a collator that raises after a few steps. The script
catches nothing: the exception leaves the interpreter, whose exit ends the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hf_energy import EnergyCallback, attach
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu, SimNvml, install_for_process
from tests.helpers.hf_models import SeqData, fail_from_batch, make_trainer

GPU_W = 300.0


def main(argv: list[str]) -> None:
    install_for_process(SimNvml([SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02)]))
    record = Path(argv[0])
    monitor = EnergyCallback(devices=["gpu"], sample_interval_s=0.01, record_path=record)
    trainer = make_trainer(record.parent / "out", SeqData(64), sleep_s=0.01, logging_steps=2,
                           callbacks=None if "--attach" in argv else [monitor])  # fmt: skip
    if "--attach" in argv:
        attach(trainer, monitor)
    fail_from_batch(trainer, 6, before=lambda: print(f"raising after step {trainer.state.global_step}", flush=True))
    trainer.train()


if __name__ == "__main__":
    main(sys.argv[1:])
