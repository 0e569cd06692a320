"""Memory of the per-step path: peak RSS growth over one million simulated steps.

    python -m benchmarks.memory [--steps 1000000]

A real `EnergyTracker` with a simulated GPU (the sampler thread running at 10 ms) sees one
million batches (`add_batch`) and a logging window every 50 steps, with a run record
written to a temporary file. RSS is read after a warm-up of 20,000 steps and at the end;
the bounded ring buffer and the absence of per-step lists keep it flat.

Target (issue 8): growth under 5 MB. The last line is the verdict.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psutil
import torch

from energy_core import EnergyTracker
from tests.doubles.power_traces import Noisy
from tests.doubles.sim_nvml import SimGpu, SimNvml, install_for_process

WARMUP_STEPS = 20_000  # RSS is read here and at the end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.steps <= WARMUP_STEPS:  # no warm-up reading to measure growth from
        parser.error(f"--steps must be more than the {WARMUP_STEPS:,}-step warm-up (got {args.steps:,})")
    install_for_process(SimNvml([SimGpu("GPU-mem", Noisy(250.0, 100.0), counter_period_s=0.02)]))
    process = psutil.Process()
    batch = {"input_ids": torch.ones(8, 32, dtype=torch.long), "attention_mask": torch.ones(8, 32, dtype=torch.long)}
    with tempfile.TemporaryDirectory() as tmp:
        tracker = EnergyTracker(
            devices=["gpu"],
            sample_interval_s=0.01,
            carbon_intensity_g_per_kwh=400,
            record_path=Path(tmp) / "energy.jsonl",
        )
        tracker.start_fit(0)
        start = time.perf_counter()
        baseline = 0
        for step in range(1, args.steps + 1):
            tracker.add_batch(batch)
            if step % 50 == 0:
                tracker.window(step)
            if step == WARMUP_STEPS:
                baseline = process.memory_info().rss
        tracker.end_fit(args.steps)
        tracker.close()
        final = process.memory_info().rss
        seconds = time.perf_counter() - start
        rows = len(tracker.meter.sampler.buffer) if tracker.meter.sampler else 0
    growth_mb = (final - baseline) / 2**20
    print(
        f"{args.steps:,} steps in {seconds:.1f} s ({1e6 * seconds / args.steps:.2f} us per step incl. windows), "
        f"{rows:,} sampler rows kept"
    )
    print(f"RSS after warm-up {baseline / 2**20:.1f} MB, at the end {final / 2**20:.1f} MB")
    print(f"RSS growth: {growth_mb:.2f} MB (target < 5 MB): {'PASS' if growth_mb < 5 else 'FAIL'}")


if __name__ == "__main__":
    main()
