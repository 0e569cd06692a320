"""Two CPU processes (gloo): a budget stop lands on both ranks at the same step, and nothing hangs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from energy_core.integration import UNLOGGED_DECIDE_EVERY
from tests.helpers import ROOT
from tests.helpers.records import read_record

SCRIPT = ["-m", "tests.scripts.distributed_budget"]


def free_port() -> int:
    """A port no one listens on now (other test runs on this machine may use fixed ones)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(*args: str) -> list[str]:
    """``args`` (``-m module ...``) in two processes started together by torchrun, on a free port."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}", *args]


def run_ranks(command: list[str], out: Path, world: int = 2) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    (out / "output.txt").write_text(done.stdout + done.stderr)  # what the job said
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.mark.slow  # about 8 s: the decision's unit tests (Ranks.agree, BudgetGuard) stay in the default set
@pytest.mark.timeout(300)
def test_lightning_ddp_budget_stops_every_rank_at_the_same_step(tmp_path) -> None:
    rank0, rank1 = run_ranks([sys.executable, *SCRIPT, "lightning", str(tmp_path)], tmp_path)
    assert rank0["stopped"] and rank1["stopped"]
    assert rank0["step"] == rank1["step"] < 20 * 40  # long before 20 epochs
    assert rank0["kwh"] > 0  # rank 1 measured nothing of its own: it followed the job's decision


@pytest.mark.slow  # about 8 s: the decision's unit tests (Ranks.agree, BudgetGuard) stay in the default set
@pytest.mark.timeout(300)
def test_hf_torchrun_budget_stops_every_rank_at_the_same_step(tmp_path) -> None:
    rank0, rank1 = run_ranks(torchrun(*SCRIPT, "hf", str(tmp_path)), tmp_path)
    assert rank0["stopped"] and rank1["stopped"]
    assert rank0["step"] == rank1["step"] < 20 * 20
    assert rank0["kwh"] > 0


@pytest.mark.slow  # about 10 s: the cadence's rule is in the default set (tests/hf_energy/test_budget.py)
@pytest.mark.timeout(300)
def test_hf_torchrun_budget_without_logging_steps_stops_within_the_epoch(tmp_path) -> None:
    """``logging_strategy="no"``: no step is logged, so the decisions are taken every
    `UNLOGGED_DECIDE_EVERY` steps. The limit (about 1.5 s) is crossed long before step 50 (at
    30 ms a step and more), so both ranks stop there, not at the epoch's end (80)."""
    rank0, rank1 = run_ranks(torchrun(*SCRIPT, "hf", str(tmp_path), "no"), tmp_path)
    assert rank0["max_steps"] == 80
    assert rank0["stopped"] and rank1["stopped"]
    assert rank0["step"] == rank1["step"] == UNLOGGED_DECIDE_EVERY


@pytest.mark.slow  # about 10 s of two processes
@pytest.mark.timeout(300)
def test_torchrun_cpu_estimate_counts_every_rank_of_the_node(tmp_path) -> None:
    """Without RAPL the CPU is estimated from process time. torchrun starts the ranks beside each other:
    the node's local rank 0 counted its own tree alone, half the job's CPU energy."""
    rank0, rank1 = run_ranks(torchrun("-m", "tests.scripts.cpu_estimate_job", str(tmp_path)), tmp_path)
    per_thread = rank0["w_per_thread"]
    assert per_thread and rank1["w_per_thread"] is None  # the node's CPU, measured by its local rank 0
    assert rank1["cpu_j"] == pytest.approx(rank0["cpu_j"])  # the job's figure on every rank
    both = per_thread * (rank0["cpu_s"] + rank1["cpu_s"])  # each busy over 1 s; the estimate's span a little wider
    # The kernel counts CPU time in clock ticks: each process's time over a span, read twice by the rank
    # and twice by the estimate, may be off by a tick either way; and rank 1 may start its loop a few ms
    # before rank 0's first reading of it (4.60 J against 4.59 J seen in CI). Half the job's time is 2.3 J.
    ticks = per_thread * 4 / os.sysconf("SC_CLK_TCK")
    assert both - ticks <= rank0["cpu_j"] <= both * 1.15 + ticks


@pytest.mark.slow  # about 9 s of two processes
@pytest.mark.timeout(300)
def test_an_exception_on_one_rank_does_not_hang_the_job(tmp_path) -> None:
    """Rank 0 fails mid-epoch: our exception hooks end its figures without waiting for rank 1."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}  # fmt: skip
    command = [sys.executable, *SCRIPT, "lightning", str(tmp_path), "raise"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode != 0 and "rank 0 fails" in done.stderr


# ------------------------------------------------------------------ one total for the whole job
TOTALS = ["-m", "tests.scripts.distributed_totals"]
CPU_W = 50.0


def gpu_watts(rank: int) -> float:
    return 200.0 + 100.0 * rank


def check_job_totals(ranks: list[dict], record: Path) -> None:
    from energy_core import J_PER_KWH

    first = ranks[0]["metrics"]
    for other in ranks[1:]:  # every rank holds the same, global figures
        for key in ("energy/total_kwh", "energy/gpu_kwh", "energy/cpu_kwh"):
            assert other["metrics"][key] == pytest.approx(first[key], rel=1e-9)
    # each rank measured its own GPU over its own fit: the sum is exact within one update of each rank's counter
    # (every 5 ms: tests/scripts/distributed_totals.py) at each end of its fit
    gpu_j = sum(gpu_watts(r) * rank["seconds"] for r, rank in enumerate(ranks))
    counter_j = sum(2 * 0.005 * gpu_watts(r) for r in range(len(ranks)))
    assert abs(first["energy/gpu_kwh"] * J_PER_KWH - gpu_j) <= counter_j
    # the CPU package is the host's: counted once, by the host's first rank (every job here runs on one host,
    # two launcher "nodes" on loopback included: they share that package)
    # The fake RAPL file is rewritten by a thread that waits for the GIL: at each end a read may be as stale as
    # its longest gap (a counter period: tests/doubles/fake_rapl.py), besides the 2% the marks' alignment allows.
    stale_j = 2 * CPU_W * ranks[0]["rapl_gap_s"]
    assert first["energy/cpu_kwh"] * J_PER_KWH == pytest.approx(
        CPU_W * ranks[0]["seconds"], abs=0.02 * CPU_W * ranks[0]["seconds"] + stale_j
    )
    assert [len([s for s in r["sources"] if s.startswith("cpu")]) for r in ranks] == [1] + [0] * (len(ranks) - 1)
    lines = read_record(record)
    header = lines[0]
    assert [r["rank"] for r in header["ranks"]] == list(range(len(ranks)))
    assert {s["detail"].split()[-1] for r in header["ranks"] for s in r["sources"] if s["kind"] == "gpu"} == {
        f"GPU-rank{r}" for r in range(len(ranks))
    }
    windows = [x for x in lines if x["type"] == "window"]
    # the per-rank breakdown is kept in the record (over the run: ranks' windows are not aligned to the ms)
    per_rank = [sum(w["ranks"]["rank_gpu_j"][r] for w in windows) for r in range(len(ranks))]
    assert per_rank[1] / per_rank[0] == pytest.approx(gpu_watts(1) / gpu_watts(0), rel=0.05)
    powers = [w["metrics"]["power/gpu1_w"] for w in windows]
    assert sum(powers) / len(powers) == pytest.approx(gpu_watts(1), rel=0.1)


@pytest.mark.slow  # about 11 s of two processes; a torchrun job's totals run by default in test_launchers
@pytest.mark.timeout(300)
@pytest.mark.parametrize("vendor", ["nvml", "amdsmi"])
def test_lightning_ddp_totals_are_summed_once_across_ranks(tmp_path, vendor) -> None:
    ranks = run_ranks([sys.executable, *TOTALS, "lightning", str(tmp_path), vendor], tmp_path, 2)
    check_job_totals(ranks, record=tmp_path / "energy.jsonl")


@pytest.mark.slow  # about 7 s; HF's shape comes from torch_distributed, which test_launchers' loop cell runs by default
@pytest.mark.timeout(300)
def test_hf_torchrun_totals_are_summed_once_across_ranks(tmp_path) -> None:
    ranks = run_ranks(torchrun(*TOTALS, "hf", str(tmp_path)), tmp_path, 2)
    check_job_totals(ranks, record=tmp_path / "energy.jsonl")


@pytest.mark.slow  # about 11 s of four processes
@pytest.mark.timeout(300)
def test_two_nodes_on_one_host_count_its_cpu_once(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    port = free_port()
    nodes = []
    for node_rank in (0, 1):
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            "--nproc_per_node=2",
            f"--node_rank={node_rank}",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            *TOTALS,
            "hf",
            str(tmp_path),
        ]
        nodes.append(
            subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    for node in nodes:
        output, _ = node.communicate(timeout=240)
        assert node.returncode == 0, output[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    check_job_totals(ranks, record=tmp_path / "energy.jsonl")


# ------------------------------------------------------------------ energy to target
TARGET = ["-m", "tests.scripts.distributed_target"]


def check_target(rank0: dict, rank1: dict, record: Path) -> None:
    from energy_core import J_PER_KWH

    assert rank0["step"] == rank1["step"] == 12  # the third evaluation, on both ranks
    assert rank0["stopped"] == rank1["stopped"] == "target"
    first, second = rank0["reached"], rank1["reached"]
    assert first["target/step"] == second["target/step"] == 12
    assert first["target/energy_kwh"] == pytest.approx(second["target/energy_kwh"], rel=1e-9)  # the job's, summed
    # only rank 0 measures (the node's CPU at 60 W): its fit up to the end of that evaluation
    stale_j = 2 * 60.0 * rank0["rapl_gap_s"]  # the fake RAPL writer's longest gap, at each end (see check_job_totals)
    assert first["target/energy_kwh"] * J_PER_KWH == pytest.approx(
        60.0 * first["target/seconds"], abs=0.03 * 60.0 * first["target/seconds"] + stale_j
    )
    lines = [x for x in read_record(record) if x["type"] == "target"]
    assert [x["event"] for x in lines] == ["evaluation", "evaluation", "reached"]  # written once, by rank 0


@pytest.mark.slow  # about 8 s; the target's rank agreement is unit-tested by default
@pytest.mark.timeout(300)
def test_lightning_ddp_target_stops_every_rank_where_any_rank_reached_it(tmp_path) -> None:
    rank0, rank1 = run_ranks([sys.executable, *TARGET, "lightning", str(tmp_path)], tmp_path)
    check_target(rank0, rank1, tmp_path / "energy.jsonl")


@pytest.mark.slow  # the second framework of the same rule (about 10 s)
@pytest.mark.timeout(300)
def test_hf_torchrun_target_stops_every_rank_at_the_same_evaluation(tmp_path) -> None:
    rank0, rank1 = run_ranks(torchrun(*TARGET, "hf", str(tmp_path)), tmp_path)
    check_target(rank0, rank1, tmp_path / "energy.jsonl")
