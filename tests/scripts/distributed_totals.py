"""A multi-process CPU (gloo) training run measured by the monitors, for test_distributed.py.

    python -m tests.scripts.distributed_totals lightning OUT [nvml|amdsmi]   # Lightning starts rank 1 itself
    torchrun --nproc_per_node=2 -m tests.scripts.distributed_totals hf OUT [nvml|amdsmi]

Simulated hardware, as if each rank trained on a GPU of its own: global rank r sees one
GPU drawing 200 + 100 r W (as with CUDA_VISIBLE_DEVICES=<its GPU>), and every node has a
CPU package drawing 50 W (a fake RAPL tree) that only its local rank 0 may read. The GPUs
are NVIDIA's (simulated NVML, the default) or AMD's (simulated amdsmi). Each rank writes
OUT/rank<r>.json with the totals it ended with.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from energy_core.devices import rapl
from tests.doubles.fake_rapl import FakeRapl
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu, end_process_group
from tests.doubles.vendors import simulate_for_process

CPU_W = 50.0
TREE: list[FakeRapl] = []  # this process's fake RAPL tree


def gpu_watts(rank: int) -> float:
    return 200.0 + 100.0 * rank


def fake_hardware(rank: int, vendor: str) -> FakeRapl:
    # a 5 ms counter period: these runs last about a second, and the test checks the sum to 1%
    simulate_for_process(vendor, [SimGpu(f"GPU-rank{rank}", Constant(gpu_watts(rank)), counter_period_s=0.005)])
    tree = FakeRapl(Path(tempfile.mkdtemp()) / "powercap", dram=False)
    tree.run({"cpu": Constant(CPU_W)})
    rapl.POWERCAP_ROOT = tree.root
    return tree


def report(out: Path, rank: int, tracker, metrics: dict) -> None:
    (out / f"rank{rank}.json").write_text(
        json.dumps(
            {
                "metrics": metrics,
                "seconds": tracker.fit_seconds(),
                "sources": [s.info.name for s in tracker.meter.sources],
                "rapl_gap_s": TREE[0].longest_gap_s,  # how stale this rank's RAPL reads could be
            }
        )
    )


def run_lightning(out: Path) -> None:
    import lightning.pytorch as pl

    import lightning_energy.framework as compat
    from lightning_energy import EnergyMonitor
    from tests.helpers.lightning_models import make_module, regression_data

    compat.rank_gpu = lambda trainer: 0  # each rank "trains on" its one visible GPU
    monitor = EnergyMonitor(sample_interval_s=0.02, record_path=out / "energy.jsonl")
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        log_every_n_steps=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor],
    )
    trainer.fit(make_module(pl, step_sleep_s=0.03), regression_data(320))
    report(out, trainer.global_rank, monitor.tracker, monitor.last_metrics)


def run_hf(out: Path) -> None:
    import hf_energy.framework as hf_framework
    from hf_energy import EnergyCallback, attach
    from tests.helpers.hf_models import SeqData, make_trainer

    hf_framework.rank_gpu = lambda args: 0
    trainer = make_trainer(out / "hf", SeqData(256), sleep_s=0.03, num_train_epochs=2, logging_steps=4)
    energy = attach(trainer, EnergyCallback(sample_interval_s=0.02, record_path=out / "energy.jsonl"))
    trainer.train()
    report(out, int(os.environ["RANK"]), energy.tracker, energy.last_metrics)


if __name__ == "__main__":
    framework, out_dir = sys.argv[1], Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    TREE.append(fake_hardware(rank, sys.argv[3] if len(sys.argv) > 3 else "nvml"))
    run_lightning(out_dir) if framework == "lightning" else run_hf(out_dir)
    end_process_group()
