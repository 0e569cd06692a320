"""Two CPU processes (gloo): a budget stop lands on both ranks at the same step, and nothing hangs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "distributed_budget.py"


def run(command: list[str], out: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.timeout(300)
def test_lightning_ddp_budget_stops_every_rank_at_the_same_step(tmp_path) -> None:
    rank0, rank1 = run([sys.executable, str(SCRIPT), "lightning", str(tmp_path)], tmp_path)
    assert rank0["stopped"] and rank1["stopped"]
    assert rank0["step"] == rank1["step"] < 20 * 40  # long before 20 epochs
    assert rank0["kwh"] > 0 and rank1["kwh"] == 0  # rank 1 measured nothing: it followed rank 0


@pytest.mark.timeout(300)
def test_hf_torchrun_budget_stops_every_rank_at_the_same_step(tmp_path) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517"]
    rank0, rank1 = run([*torchrun, str(SCRIPT), "hf", str(tmp_path)], tmp_path)
    assert rank0["stopped"] and rank1["stopped"]
    assert rank0["step"] == rank1["step"] < 20 * 20
    assert rank0["kwh"] > 0 and rank1["kwh"] == 0
