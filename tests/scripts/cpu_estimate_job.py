"""A 2-process plain DDP loop under torchrun on a machine without RAPL: the CPU is estimated from
process time, for tests/behaviour/test_distributed.py.

    torchrun --nproc_per_node=2 -m tests.scripts.cpu_estimate_job OUT

torchrun starts the ranks beside each other, not one under the other: the node's local rank 0, which
measures the node's CPU, must count the other rank's CPU time with its own. Each rank burns CPU and
writes OUT/rank<r>.json with its own CPU seconds over the loop and the job's estimated CPU joules.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import psutil
import torch
import torch.distributed as dist

from energy_core import J_PER_KWH, EnergyLoop
from energy_core.devices import rapl
from tests.doubles.sim_nvml import SimNvml, end_process_group, install_for_process

TDP_W = 20.0

if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    install_for_process(SimNvml([], library=False))  # no GPU
    rapl.POWERCAP_ROOT = Path(tempfile.mkdtemp())  # and no RAPL: the CPU is estimated
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(64, 64))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    me = psutil.Process()
    with EnergyLoop(log_every_n_steps=10, devices=["cpu"], cpu_tdp_w=TDP_W, sample_interval_s=0.05,
                    country="FRA") as energy:  # fmt: skip
        start_s = sum(me.cpu_times()[:2])
        for _ in range(30):
            x = torch.randn(64, 64)
            for _ in range(200):
                x = x @ torch.randn(64, 64) / 8  # this rank's CPU work
            optimizer.zero_grad()
            model(x).sum().backward()
            optimizer.step()
            energy.step(x)
        cpu_s = sum(me.cpu_times()[:2]) - start_s
    source = next((s for s in energy.tracker.meter.sources if s.info.kind == "cpu"), None)
    (out / f"rank{dist.get_rank()}.json").write_text(
        json.dumps(
            {
                "cpu_s": cpu_s,
                "cpu_j": energy.last_metrics["energy/cpu_kwh"] * J_PER_KWH,
                "w_per_thread": getattr(source, "w_per_thread", None),
            }
        )
    )
    end_process_group()
