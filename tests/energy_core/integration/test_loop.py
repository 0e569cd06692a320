"""EnergyLoop in loops without a Trainer: the examples (plain PyTorch, Fabric, Accelerate) on a known GPU.

The simulated GPU draws 300 W, so every figure has a known value; the loggers' files are
read back from disk.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
import warnings

import pytest

from energy_core import J_PER_KWH, BudgetRule, EnergyLoop, PowerCapRun, TargetRule
from energy_core.output import keys
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.doubles.vendors import both_vendors_end_to_end
from tests.helpers import ROOT
from tests.helpers.readback import csv_series, tensorboard_series
from tests.helpers.records import read_record

sys.path.insert(0, str(ROOT / "examples" / "loops"))
GPU_W = 300.0
PERIOD_S = 0.02


def known_gpu(sim_gpus):
    return sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S, default_limit_mw=400_000,
                    min_limit_mw=100_000, max_limit_mw=450_000))  # fmt: skip


@pytest.fixture
def paced(monkeypatch):
    """Run an example at a known pace: each ``nn.Linear`` call takes 5 ms at least, and the
    example's `EnergyLoop` reads the hardware every 5 ms, so every logging window outlasts
    the sampler's second reading however fast this machine is."""
    import torch

    forward = torch.nn.Linear.forward

    def slow_forward(self, x):
        time.sleep(0.005)
        return forward(self, x)

    monkeypatch.setattr(torch.nn.Linear, "forward", slow_forward)

    def use(module):
        monkeypatch.setattr(module, "EnergyLoop", functools.partial(EnergyLoop, sample_interval_s=0.005))
        return module

    return use


def median_window_bound(samples_per_s: list[tuple[int, float]]) -> float:
    """How far the median window's power may be from GPU_W: each window's is within one counter update at each end
    over its seconds (the examples' 10 steps of 16 samples, over its throughput); the median is within the (n//2)-th
    smallest of those bounds (too few windows exceed it)."""
    bounds = sorted(2 * PERIOD_S * GPU_W * rate / (10 * 16) for _, rate in samples_per_s)
    return bounds[len(bounds) // 2]


def within_counter(joules: float, seconds: float) -> bool:
    return abs(joules - GPU_W * seconds) <= 2 * PERIOD_S * GPU_W + 0.01 * GPU_W * seconds


def test_plain_pytorch_loop_figures_and_record(tmp_path, sim_gpus, paced) -> None:
    import plain_pytorch

    known_gpu(sim_gpus)
    energy = paced(plain_pytorch).main(["--record", str(tmp_path / "energy.jsonl")])
    lines = read_record(tmp_path / "energy.jsonl")
    epochs = [x for x in lines if x["type"] == "epoch"]
    assert len(epochs) == 3 and lines[-1]["type"] == "summary" and lines[-1]["samples"] == 3 * 640
    for line in epochs:  # each epoch, validation included, is the integral of the known power
        assert within_counter(line["metrics"]["energy/epoch_kwh"] * J_PER_KWH, line["seconds"])
    assert [s["stage"] for s in lines if s["type"] == "stage"] == ["val"] * 3
    windows = [x for x in lines if x["type"] == "window"]
    assert [w["step"] for w in windows if w["steps"] == 20] == [20, 40, 60, 80, 100, 120]
    summary = lines[-1]
    assert within_counter(summary["metrics"]["energy/gpu_kwh"] * J_PER_KWH, summary["seconds"])
    assert energy.last_metrics["energy/gpu_kwh"] == summary["metrics"]["energy/gpu_kwh"]


def test_fabric_loop_logs_through_fabric(tmp_path, sim_gpus, paced) -> None:
    import fabric_loop

    known_gpu(sim_gpus)
    energy = paced(fabric_loop).main(["--logs", str(tmp_path / "logs")])
    power = csv_series(tmp_path / "logs", "power/gpu0_w")
    assert [step for step, _ in power][:4] == [10, 20, 30, 40]
    median = sorted(w for _, w in power)[len(power) // 2]
    rates = csv_series(tmp_path / "logs", "throughput/samples_per_s")  # the same windows'
    assert len(rates) == len(power) and abs(median - GPU_W) <= median_window_bound(rates)
    logged = csv_series(tmp_path / "logs", "energy/gpu_kwh")
    # the final total includes the tail; the epoch's last figure was extrapolated past the newest
    # reading, so it may exceed the exact total by a counter period and a sample interval at most
    assert logged[-1][1] <= energy.last_metrics["energy/gpu_kwh"] + GPU_W * (PERIOD_S + 0.005) / J_PER_KWH


def test_accelerate_loop_logs_through_its_trackers(tmp_path, sim_gpus, paced) -> None:
    import accelerate_loop

    known_gpu(sim_gpus)
    paced(accelerate_loop).main(["--logs", str(tmp_path / "logs")])
    power = tensorboard_series(tmp_path / "logs", "power/gpu0_w")
    assert [step for step, _ in power][:3] == [10, 20, 30]
    median = sorted(w for _, w in power)[len(power) // 2]
    rates = tensorboard_series(tmp_path / "logs", "throughput/samples_per_s")
    assert len(rates) == len(power) and abs(median - GPU_W) <= median_window_bound(rates)
    co2 = tensorboard_series(tmp_path / "logs", "carbon/co2e_kg")
    total = tensorboard_series(tmp_path / "logs", "energy/total_kwh")
    assert co2[-1][1] == pytest.approx(total[-1][1] * 1.2 * 475.0 / 1000, rel=1e-3)  # PUE 1.2, world average


@both_vendors_end_to_end
def test_a_budget_and_a_cap_in_a_plain_loop(sim_gpus) -> None:
    sim = known_gpu(sim_gpus)
    seen = []
    limit = GPU_W * 0.8 / J_PER_KWH  # about 0.8 s at 300 W (the cap is above the draw)
    loop = EnergyLoop(devices=["gpu"], sample_interval_s=0.02, log_every_n_steps=5, budget=BudgetRule(max_kwh=limit),
                      power_cap=PowerCapRun(watts=350))  # fmt: skip
    with loop as energy:
        for _ in range(500):
            time.sleep(0.01)
            energy.step()
            seen.append(sim.limit_mw(sim.gpus[0]))
            if energy.should_stop:
                break
    assert energy.should_stop and energy.steps < 500
    assert set(seen) == {350_000} and energy.last_metrics["power/cap_w"] == 350.0
    assert sim.limit_mw(sim.gpus[0]) == 400_000  # put back
    assert energy.last_metrics["energy/total_kwh"] >= limit


def test_a_cap_put_back_by_a_signal_whose_handler_lets_training_go_on_is_no_longer_logged(sim_gpus) -> None:
    # A user's SIGTERM handler that only asks for a graceful stop later: the exit guard put the limit back
    # first, as it must, but every later window still logged power/cap_w = 250 W for a board at its limit.
    sim = known_gpu(sim_gpus)
    got: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    windows = []
    try:
        with EnergyLoop(devices=["gpu"], sample_interval_s=0.02, log_every_n_steps=5,
                        power_cap=PowerCapRun(watts=250)) as energy:  # fmt: skip
            for step in range(20):
                time.sleep(0.01)
                if step == 10:
                    os.kill(os.getpid(), signal.SIGTERM)
                windows.append((step + 1, sim.limit_mw(sim.gpus[0]), energy.step().get(keys.CAP_W)))
    finally:
        signal.signal(signal.SIGTERM, before)
    assert got == [signal.SIGTERM]
    logged = [(step, limit, cap) for step, limit, cap in windows if step % 5 == 0]
    assert logged == [(5, 250_000, 250.0), (10, 250_000, 250.0), (15, 400_000, None), (20, 400_000, None)]


def test_a_target_in_a_plain_loop_reports_its_cost_once_stops_and_resumes(sim_gpus) -> None:
    known_gpu(sim_gpus)
    curve = iter([0.4, 0.7, 0.92, 0.95])
    loop = EnergyLoop(devices=["gpu"], sample_interval_s=0.02, log_every_n_steps=5, target=TargetRule("val_acc", 0.9))
    figures = []
    with pytest.warns(UserWarning, match="Target reached at step 30: val_acc = 0.92"), loop as energy:
        while not energy.should_stop:
            for _ in range(10):
                time.sleep(0.01)
                energy.step()
            with energy.stage("val"):
                time.sleep(0.03)
            figures.append(energy.evaluated(next(curve)))
    assert energy.steps == 30 and figures[:2] == [{}, {}]
    reached = figures[2]
    assert reached["target/step"] == 30.0
    assert within_counter(reached["target/energy_kwh"] * J_PER_KWH, reached["target/seconds"])
    assert energy.last_metrics["target/energy_kwh"] == reached["target/energy_kwh"]

    later = EnergyLoop(devices=["gpu"], sample_interval_s=0.02, target=TargetRule("val_acc", 0.9))
    later.load_state_dict(energy.state_dict())
    with later:
        later.step()
        assert later.evaluated(0.97) == {} and not later.should_stop  # reached before: not again
    with pytest.raises(RuntimeError, match="evaluated\\(\\) needs a target"):
        EnergyLoop().evaluated(0.5)


@pytest.mark.parametrize("rank", [0, 1])
def test_a_launched_process_without_a_process_group_says_it_measures_alone(tmp_path, sim_gpus, monkeypatch, rank):
    """A torchrun rank whose script never initialises torch.distributed: rank 0 says so, and only
    rank 0 writes the record (two runs in one record would double the job)."""
    known_gpu(sim_gpus)
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")
    record = tmp_path / "energy.jsonl"
    loop = EnergyLoop(devices=["gpu"], country="FRA", sample_interval_s=0.01, record_path=record)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with loop:
            time.sleep(0.05)
            loop.step()
    alone = [w for w in shown if "launched as one of 2 (WORLD_SIZE) but torch.distributed is not" in str(w.message)]
    assert len(alone) == (rank == 0)
    assert (loop.ranks.rank, loop.ranks.local_rank, loop.ranks.world_size) == (rank, rank, 1)
    assert loop.last_metrics["energy/gpu_kwh"] > 0  # each still measures what it sees
    assert record.exists() == (rank == 0)


def test_a_start_that_fails_ends_the_run_and_stops_its_sampler(tmp_path, sim_gpus, monkeypatch) -> None:
    """`with loop:` never calls `__exit__` when `__enter__` raises: a time shift that raised as the
    loop started (e.g. a plan out of datetime's range) used to leave the sampler thread running."""
    import threading

    from energy_core import TimeShiftRun

    known_gpu(sim_gpus)

    def failing(*args, **kwargs):
        raise OverflowError("the plan's times are out of range")

    shift = TimeShiftRun(deadline="2030-01-07T06:00:00+00:00", forecast=[("2030-01-07T00:00:00+00:00", 100.0)])
    monkeypatch.setattr(shift, "begin", failing)
    record = tmp_path / "energy.jsonl"
    loop = EnergyLoop(devices=["gpu"], sample_interval_s=PERIOD_S, record_path=str(record), time_shift=shift)
    with pytest.raises(OverflowError, match="out of range"), loop:
        pytest.fail("the block ran although the start failed")
    assert [t for t in threading.enumerate() if t.name == "energy-sampler"] == []
    summary = read_record(record)[-1]
    assert summary["type"] == "summary" and summary["status"] == "exception: OverflowError"
    assert loop.close() == {}  # ended once: closing again does nothing


def test_a_resumed_loop_forecasts_its_budget_after_an_epoch_of_its_own(sim_gpus) -> None:
    # The checkpoint's two epochs used to count as seen: the first review after the resume projected the
    # run from a few steps and the start-up. The forecast now waits for an epoch of this run.
    known_gpu(sim_gpus)

    def loop() -> EnergyLoop:
        return EnergyLoop(devices=["gpu"], sample_interval_s=0.02, log_every_n_steps=5, total_steps=40,
                          epoch_steps=10, budget=BudgetRule(max_kwh=1.0, forecast="stop"))  # fmt: skip

    def epoch(energy: EnergyLoop) -> list[bool]:
        forecast = []
        energy.start_epoch()
        for _ in range(10):
            time.sleep(0.01)
            energy.step()
            forecast.append(keys.BUDGET_FORECAST in energy.last_metrics)
        energy.end_epoch()
        return forecast + [keys.BUDGET_FORECAST in energy.last_metrics]

    with loop() as first:
        assert epoch(first) == [False] * 10 + [True]  # a fresh run forecasts at its first epoch's end
        epoch(first)
    later = loop()
    later.load_state_dict(first.state_dict())
    with later:
        assert later.steps == 20 and later.epochs == 2
        assert epoch(later) == [False] * 10 + [True]  # not at step 25: an epoch of its own first
        assert not later.should_stop


def test_a_cost_limit_without_a_price_is_refused_at_construction() -> None:
    # The loop knows its own options when it is made: it accepted max_cost without price_per_kwh and refused it
    # only when the loop started.
    with pytest.raises(ValueError, match="max_cost needs a price"):
        EnergyLoop(budget=BudgetRule(max_cost=1.0), country="FRA")
    loop = EnergyLoop(budget=BudgetRule(max_cost=1.0), country="FRA", price_per_kwh=0.2, currency="EUR")
    assert loop.budget is not None and loop.budget.rule.max_cost == 1.0
