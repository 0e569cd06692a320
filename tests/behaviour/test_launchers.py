"""The launcher matrix: one 2-process job per launcher and framework, on a node of two simulated
GPUs of different power (150 W and 250 W) on which no rank trains (CPU workers).

Each cell (tests/scripts/launcher_job.py) asserts what a user relies on: the GPU energy is
power x the measured interval, each board counted once (by the node's local rank 0, over its
fit); every rank holds the same job figures; the per-GPU power keys name the boards they are
(``power/gpu0_w`` 150 W, ``power/gpu1_w`` 250 W); the job exits by itself; the record holds one
run of two ranks. The processes are paced by sleeps in each step (about a second of fit), and
the bounds come from the counters' period and the sampler, not from the machine's speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from energy_core import J_PER_KWH, read_runs
from tests.behaviour.test_distributed import free_port, torchrun
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.helpers import ROOT
from tests.scripts.launcher_job import BOARDS, COUNTER_PERIOD_S

WATTS = list(BOARDS.values())  # gpu0, gpu1 in the node's order
JOB_S = 240  # the most a cell may take, start to exit, beside two CPU-bound processes
RAY_JOB_S = 500  # a Ray cell, with Ray's start and stop (about 40 s alone, 90 s on a busy machine)


def launch(command: list[str], out: Path, limit_s: float = JOB_S, ranks: int = 2) -> list[dict]:
    """Run a launcher to its end (a hang fails at ``limit_s``); each of ``ranks`` ranks' figures."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}  # fmt: skip
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"the job did not exit within {limit_s} s: {str(hung.stderr)[-3000:]}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    (out / "output.txt").write_text(done.stdout + done.stderr)  # what the job said, for the cells to read
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(ranks)]


def check_cell(ranks: list[dict], out: Path, world: int = 2, runs_after: int = 0) -> None:
    """Counted once, keyed by board, the same on every rank, one run in the record (then ``runs_after`` more)."""
    assert [r["seen"] for r in ranks] == [{"rank": r, "local_rank": r, "world_size": world} for r in range(2)]
    # the node's local rank 0 measures both boards; rank 1 none
    assert [len(r["sources"]) for r in ranks] == [2, 0]
    assert [s["detail"].split()[-1] for s in ranks[0]["sources"]] == list(BOARDS)
    first = ranks[0]["metrics"]
    # the job's figures, rates too: each rank's seconds gave its own power and throughput (5% apart)
    for key in ("energy/total_kwh", "energy/gpu_kwh", "power/total_w", "power/gpu0_w", "throughput/samples_per_s"):
        assert ranks[1]["metrics"][key] == pytest.approx(first[key], rel=1e-9), key
    # power x the measured interval: the boards draw constant power, read through counters that
    # advance every COUNTER_PERIOD_S, so each fit's energy is exact to one period per board
    seconds = ranks[0]["seconds"]
    bound_j = len(WATTS) * max(WATTS) * COUNTER_PERIOD_S
    assert first["energy/gpu_kwh"] * J_PER_KWH == pytest.approx(sum(WATTS) * seconds, abs=2 * bound_j)
    assert "power/gpu2_w" not in first  # two boards, named once each
    for name, watts in zip(("power/gpu0_w", "power/gpu1_w"), WATTS, strict=True):
        # the last window's mean power, over at least one sampler period
        assert first[name] == pytest.approx(watts, rel=0.1)
    runs, notes = read_runs(out / "energy.jsonl")
    assert len(runs) == 1 + runs_after and not notes
    header = runs[0][0]
    assert [r["rank"] for r in header["ranks"]] == [0, 1]
    assert (header.get("trainer") or header["loop"])["world_size"] == world  # the job's shape, as measured
    windows = [line for line in runs[0] if line["type"] == "window"]
    assert windows and all(set(w["ranks"]) >= {"rank_gpu_j"} for w in windows)
    assert sum(w["ranks"]["rank_gpu_j"][1] for w in windows) == 0.0  # rank 1 measured no board


JOB = ["-m", "tests.scripts.launcher_job"]


SLOW = pytest.mark.slow  # about 10 to 25 s each on 2 cores; the default run keeps the loop cell (and Fabric's)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "cell",
    [
        pytest.param("lightning", marks=SLOW),  # also in test_distributed.py, on GPUs its ranks train on
        pytest.param("hf", marks=SLOW),  # HF's ranks_of reads torch_distributed, as the default "loop" cell does
        pytest.param("hf-cpu", marks=SLOW),
        "loop",
        pytest.param("accelerate", marks=SLOW),
    ],
)
def test_torchrun_counts_each_board_once(tmp_path, cell) -> None:
    """torchrun: Lightning DDP, HF with default arguments (its Trainer is not parallel on CPU
    workers) and with ``use_cpu``, a plain DDP loop with ``EnergyLoop()`` as the README has it,
    and Accelerate with a tracker."""
    check_cell(launch(torchrun(*JOB, cell, str(tmp_path)), tmp_path), tmp_path)
    said = (tmp_path / "output.txt").read_text()
    alone = "torch.distributed is initialised with 2 processes but the Trainer is not parallel"
    assert said.count(alone) == (cell == "hf")  # once, by rank 0, where HF trains each process alone


@SLOW
@pytest.mark.timeout(300)
def test_hf_budget_beside_the_monitor_is_said_once_by_the_job(tmp_path) -> None:
    """Every process of a Trainer that is not parallel (HF's default arguments on CPU workers) is HF's
    world process zero: each said the budget's stop, where the monitor beside it spoke once."""
    ranks = launch(torchrun(*JOB, "hf-budget", str(tmp_path)), tmp_path)
    assert ranks[1]["metrics"]["energy/total_kwh"] == pytest.approx(ranks[0]["metrics"]["energy/total_kwh"])
    assert (tmp_path / "output.txt").read_text().count("Energy budget spent at step") == 1


@SLOW
@pytest.mark.timeout(300)
@pytest.mark.parametrize("cell", ["lightning-test-alone", "hf-evaluate-alone-job", "loop-stage-alone"])
def test_a_stage_run_before_any_training_is_recorded_once(tmp_path, cell) -> None:
    """``trainer.test()``, HF's ``evaluate()`` or an ``EnergyLoop.stage`` block, twice, in an evaluation script
    under torchrun: the job's ranks were found only when a fit started, so each rank measured both boards
    and wrote a run of its own. Lightning and HF's parallel Trainer now find the job there (each board
    once, the job's figure on every rank; HF's second evaluation was rank 0's share); the loop, where one
    rank may evaluate alone, makes no collective and global rank 0 alone writes the record."""
    ranks = launch(torchrun(*JOB, cell, str(tmp_path)), tmp_path)
    runs, notes = read_runs(tmp_path / "energy.jsonl")
    assert len(runs) == 2 and not notes  # one run per stage run, not one per rank
    for run in runs:
        header = run[0]
        if cell == "loop-stage-alone":
            assert len(header["hardware"]["sources"]) == 2  # rank 0 measured both boards, alone
        else:
            assert [len(r["sources"]) for r in header["ranks"]] == [2, 0]  # the node's local rank 0
        [stage] = [line for line in run if line["type"] == "stage"]
        bound_j = 2 * len(WATTS) * max(WATTS) * COUNTER_PERIOD_S + stage["kwh_err"] * J_PER_KWH
        assert stage["kwh"] * J_PER_KWH == pytest.approx(sum(WATTS) * stage["seconds"], abs=bound_j)
    key = "energy/val_kwh" if cell.startswith("hf") else "energy/test_kwh"
    assert ranks[0]["metrics"][key] == pytest.approx(stage["kwh"])  # rank 0's is the record's
    if cell != "loop-stage-alone":
        assert ranks[1]["metrics"][key] == ranks[0]["metrics"][key]  # the job's, on every rank


def test_the_callbacks_pickle_whole_and_their_copies_charge_energy() -> None:
    """What ``ddp_spawn`` (and any launcher that pickles a callback) needs, in one process: a copy that works."""
    import pickle

    from hf_energy import EnergyCallback
    from lightning_energy import EnergyMonitor

    for callback in (EnergyMonitor(country="FRA", pue=1.5), EnergyCallback(country="FRA", pue=1.5)):
        charges = pickle.loads(pickle.dumps(callback)).run.tracker._accounts.charges
        charges.restart(0.0)
        charges.take(J_PER_KWH, when=3600.0)  # a kWh, read an hour in, at France's 56.039 g/kWh x PUE 1.5
        assert charges.at(J_PER_KWH, when=3600.0)[0] == pytest.approx(56.039e-3 * 1.5)
    live = pickle.loads(pickle.dumps(EnergyMonitor(electricity_maps_zone="DE"))).run.tracker.factors.carbon
    assert live.zone == "DE" and live.at(0.0).value > 0  # its lock and refresh made again: not started yet


@SLOW
@pytest.mark.timeout(300)
def test_lightning_ddp_spawn_takes_the_monitor_to_its_processes(tmp_path) -> None:
    """``strategy="ddp_spawn"`` pickles the Trainer, callbacks and all, to the processes it starts: the
    monitor's lock made ``fit`` raise ``TypeError: cannot pickle '_thread.lock' object``. The spawned
    ranks measure (this process's monitor is the copy they were started from): the record is theirs."""
    launch([sys.executable, *JOB, "lightning-spawn", str(tmp_path)], tmp_path, ranks=0)
    runs, notes = read_runs(tmp_path / "energy.jsonl")
    assert len(runs) == 1 and not notes
    header, summary = runs[0][0], runs[0][-1]
    assert [len(r["sources"]) for r in header["ranks"]] == [2, 0]  # the node's local rank 0, each board once
    assert header["trainer"]["world_size"] == 2 and summary["type"] == "summary"
    bound_j = len(WATTS) * max(WATTS) * COUNTER_PERIOD_S
    joules = summary["metrics"]["energy/gpu_kwh"] * J_PER_KWH
    assert joules == pytest.approx(sum(WATTS) * summary["seconds"], abs=2 * bound_j)
    assert (tmp_path / "output.txt").read_text().count("Energy: ") == 1  # one summary, by rank 0


@SLOW
@pytest.mark.timeout(300)
def test_hf_evaluation_by_one_process_of_a_job_neither_hangs_nor_raises(tmp_path) -> None:
    """HF's Trainer not parallel under torchrun (each process trains alone): rank 0 alone evaluates after
    training. The evaluation's run began with a gather over the job, which rank 1 never reached: rank 0's
    evaluate() raised (or, with a barrier after it, the job hung). Also a log of the user's on rank 0 alone
    during training (hf_job's callback): a window at every log call was a collective, and the job hung."""
    check_cell(launch(torchrun(*JOB, "hf-evaluate-alone", str(tmp_path)), tmp_path), tmp_path, runs_after=1)
    evaluated = json.loads((tmp_path / "evaluated.json").read_text())
    assert evaluated["energy/val_kwh"] > 0 and evaluated["energy/val_kwh_err"] >= 0
    runs, notes = read_runs(tmp_path / "energy.jsonl")
    assert len(runs) == 2 and not notes  # the fit, and the evaluation's run of its own, written once
    assert "ranks" not in runs[1][0]  # a run of one process: rank 0's evaluation
    assert [line["stage"] for line in runs[1] if line["type"] == "stage"] == ["val"]


@SLOW
@pytest.mark.timeout(300)
def test_a_wrapper_around_the_launcher_counts_launch_and_set_up(tmp_path, sim_gpus) -> None:
    """docs/guides/distributed.md's way to count from the job's start: an EnergyLoop around
    torchrun, in this process, on the same two boards, counts the whole job's wall time, which
    the callbacks (from fit start) do not."""
    from energy_core import EnergyLoop

    sim_gpus(*(SimGpu(uuid, Constant(w), counter_period_s=COUNTER_PERIOD_S) for uuid, w in BOARDS.items()))
    with EnergyLoop(
        devices=["gpu"], country="FRA", sample_interval_s=0.02, record_path=tmp_path / "whole.jsonl"
    ) as whole:
        ranks = launch(torchrun(*JOB, "loop", str(tmp_path)), tmp_path)
    seconds = whole.tracker.fit_seconds()
    bound_j = len(WATTS) * max(WATTS) * COUNTER_PERIOD_S
    whole_j = whole.last_metrics["energy/gpu_kwh"] * J_PER_KWH
    assert whole_j == pytest.approx(sum(WATTS) * seconds, abs=2 * bound_j)
    # the launch, imports and set-up: a whole second at least on any machine (torch's import alone)
    assert seconds > ranks[0]["seconds"] + 1.0
    assert whole_j > ranks[0]["metrics"]["energy/gpu_kwh"] * J_PER_KWH + sum(WATTS) * 1.0


@SLOW
@pytest.mark.timeout(300)
def test_accelerate_launch_counts_each_board_once(tmp_path) -> None:
    """``accelerate launch`` with two CPU processes (``--multi_gpu`` makes two on a CPU machine:
    ``--cpu`` alone runs one process)."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2"]
    launcher += [
        f"--main_process_port={free_port()}",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
    ]
    check_cell(launch([*launcher, *JOB, "accelerate", str(tmp_path)], tmp_path), tmp_path)


@SLOW
@pytest.mark.timeout(300)
def test_fabric_run_counts_each_board_once(tmp_path) -> None:
    """``fabric run`` with two CPU processes, the figures summed with Fabric's collectives."""
    launcher = [sys.executable, "-m", "lightning.fabric.cli", "--accelerator=cpu", "--devices=2", "--strategy=ddp"]
    check_cell(launch([*launcher, "tests/scripts/launcher_job.py", "fabric", str(tmp_path)], tmp_path), tmp_path)


@pytest.mark.slow  # a Ray instance starts and stops: about 30 s on 2 cores
@pytest.mark.timeout(RAY_JOB_S + 60)
@pytest.mark.parametrize("cell", ["ray-lightning", "ray-hf", "ray-loop"])
def test_ray_train_counts_each_board_once(tmp_path, cell) -> None:
    """Ray Train's TorchTrainer with 2 CPU workers: Lightning with RayDDPStrategy (its report
    callback given before the monitor, as Ray's example has it), HF with ``prepare_trainer``, a
    plain loop with ``ray.train.report``. The energy keys reach Ray's reported metrics, and the
    last checkpoint's are the job's figures at the last epoch's end, not the epoch before."""
    pytest.importorskip("ray.train")
    ranks = launch([sys.executable, *JOB, cell, str(tmp_path)], tmp_path, RAY_JOB_S)
    check_cell(ranks, tmp_path)
    reported = json.loads((tmp_path / "driver.json").read_text())["metrics"]
    runs, _ = read_runs(tmp_path / "energy.jsonl")
    last_epoch = [line for line in runs[0] if line["type"] == "epoch"][-1]["metrics"]
    assert reported["energy/total_kwh"] == pytest.approx(last_epoch["energy/total_kwh"], rel=1e-9)
    # each worker runs in a folder of Ray's session (the guide's "where files land")
    assert all("/session_" in rank["cwd"] and rank["cwd"] != str(ROOT) for rank in ranks)
