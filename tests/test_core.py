"""Fast in-process tests of the core's pieces: options, totals, sums over ranks, the budget forecast.

No Trainer here: the sums over ranks run with a fake collective (two ranks in one
process), and the forecast runs on a simulated GPU driven by a manual clock, so every
figure is exact and nothing depends on the machine's speed.
"""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from energy_core import J_PER_KWH, EnergyTracker, MeasureArgs, MeasureOptions, Ranks, RunTotals
from energy_core.accounting.figures import WindowFigures
from energy_core.accounting.ranks import sum_over_ranks
from energy_core.budget.guard import BudgetGuard
from energy_core.budget.rule import BudgetRule
from energy_core.budget.run import BudgetArgs
from energy_core.power import CapArgs, PowerCapRun
from hf_energy import EnergyBudgetCallback, EnergyCallback, PowerCapCallback
from lightning_energy import EnergyBudget, EnergyMonitor, PowerCap
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import ManualClock, SimGpu
from tests.helpers.manual import manual_run


def test_argument_lists_are_written_once_and_forwarded() -> None:
    names = {f.name for f in fields(MeasureOptions)}
    assert set(MeasureArgs.__annotations__) == names
    assert set(BudgetArgs.__annotations__) == names | {"max_kwh", "max_co2e_kg", "max_cost", "forecast"}
    assert set(CapArgs.__annotations__) == set(inspect.signature(PowerCapRun).parameters)
    forwarded = {
        EnergyTracker: "measure",
        EnergyMonitor: "measure",
        EnergyCallback: "measure",
        EnergyBudget: "budget",
        EnergyBudgetCallback: "budget",
        PowerCap: "cap",
        PowerCapCallback: "cap",
    }
    for cls, name in forwarded.items():
        assert inspect.signature(cls).parameters[name].kind is inspect.Parameter.VAR_KEYWORD
    assert MeasureOptions(devices=["gpu"], pue=1.5).as_args() == {
        **MeasureOptions().as_args(),
        "devices": ["gpu"],
        "pue": 1.5,
    }
    with pytest.raises(TypeError, match=r"EnergyMonitor got unexpected keyword arguments \['countr'\]"):
        EnergyMonitor(countr="FRA")


def test_run_totals_round_trip_through_a_checkpoint() -> None:
    totals = RunTotals({"gpu": 7200.0, "cpu": 360.0}, {"val": 36.0}, samples=64, tokens=1000, fit_s=12.5)
    state = totals.to_state()
    assert state["stage_j"] == {"val": 36.0, "test": 0.0, "predict": 0.0}
    again = RunTotals.from_state(state)
    assert again.total_kwh == pytest.approx(7560.0 / J_PER_KWH)
    assert (again.samples, again.tokens, again.fit_s) == (64, 1000, 12.5)
    assert (totals + again).energy_j == {"gpu": 14400.0, "cpu": 720.0}


def _two_ranks(local: list[RunTotals], windows: list[WindowFigures]) -> list:
    """sum_over_ranks on ranks 0 and 1 of a two-process job, with a collective faked in one process."""
    vectors: dict[int, list[float]] = {}
    for rank in (0, 1):  # first pass: what each rank contributes
        ranks = Ranks(rank=rank, world_size=2, sum=lambda v, r=rank: vectors.setdefault(r, v))
        sum_over_ranks(ranks, local[rank], windows[rank], epoch_j=10.0 * (rank + 1))
    total = [a + b for a, b in zip(vectors[0], vectors[1])]
    return [
        sum_over_ranks(Ranks(rank=r, world_size=2, sum=lambda v: total), local[r], windows[r], 10.0 * (r + 1))
        for r in (0, 1)
    ]


def test_sums_over_ranks_pack_figures_by_name() -> None:
    local = [
        RunTotals({"gpu": 100.0, "cpu": 40.0}, samples=8, tokens=80, fit_s=2.0),
        RunTotals({"gpu": 300.0}, samples=8, fit_s=2.1),
    ]
    windows = [WindowFigures(5, 1.0, 50.0, {"gpu0": 30.0}, 8, 80), WindowFigures(5, 1.1, 90.0, {"gpu0": 90.0}, 8, 0)]
    rank0, rank1 = _two_ranks(local, windows)
    for job in (rank0, rank1):  # every rank holds the same job figures
        assert job.totals.energy_j == {"gpu": 400.0, "cpu": 40.0}  # CPU measured on rank 0 only
        assert (job.totals.samples, job.totals.tokens) == (16, 80)
        assert job.window.joules == 140.0 and job.window.gpu_j == {"gpu0": 30.0, "gpu1": 90.0}
        assert (job.window.samples, job.window.tokens) == (16, 80)
        assert job.epoch_j == 30.0
        assert job.breakdown == {"rank_j": [50.0, 90.0], "rank_gpu_j": [30.0, 90.0]}
    assert (rank0.totals.fit_s, rank1.totals.fit_s) == (2.0, 2.1)  # seconds stay each rank's own
    assert rank0.window.seconds == 1.0  # and so does the window's time


def test_one_process_sums_are_the_identity() -> None:
    local = RunTotals({"gpu": 100.0}, {"val": 5.0}, samples=8, fit_s=2.0)
    window = WindowFigures(5, 1.0, 50.0, {"gpu0": 20.0, "gpu1": 30.0}, 8, 0)
    job = sum_over_ranks(Ranks(), local, window, epoch_j=7.0)
    assert job.totals.energy_j == local.energy_j and job.totals.stage_j == {"val": 5.0, "test": 0.0, "predict": 0.0}
    assert (job.totals.samples, job.totals.fit_s) == (8, 2.0)
    assert job.window == window and job.epoch_j == 7.0 and job.breakdown is None


@pytest.fixture
def manual_gpu(sim_gpus):
    """A 300 W simulated GPU and a tracker on the same manual clock; ``step(n)`` trains n steps of 0.1 s."""
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", Constant(300.0), counter_period_s=0.02), clock=clock)
    run = manual_run(clock, devices=["gpu"])
    yield run.tracker, lambda n: run.advance(0.1 * n)
    run.tracker.end_fit(step=0)


def test_the_forecast_is_the_rate_so_far_times_the_steps_left(manual_gpu) -> None:
    tracker, step = manual_gpu
    guard = BudgetGuard(BudgetRule(max_kwh=1.0, forecast="warn"), tracker, total_steps=500, epoch_steps=50)
    assert guard.begin(0) is None
    step(40)
    metrics, action = guard.review(40, epochs_done=0)
    assert "budget/forecast_kwh" not in metrics  # waits for the first epoch
    assert metrics["budget/remaining_kwh"] == pytest.approx(1.0 - 300.0 * 4.0 / J_PER_KWH)
    step(10)
    metrics, action = guard.review(50, epochs_done=1)
    assert metrics["budget/forecast_kwh"] * J_PER_KWH == pytest.approx(300.0 * 0.1 * 500, rel=1e-9)
    assert action is None  # 4.2 Wh, far under 1 kWh


def test_a_forecast_over_the_limit_stops_and_a_crossing_is_seen_by_the_sampler(manual_gpu) -> None:
    tracker, step = manual_gpu
    limit_kwh = 300.0 * 0.1 * 99.5 / J_PER_KWH  # reached during the 100th step
    guard = BudgetGuard(BudgetRule(max_kwh=limit_kwh, forecast="stop"), tracker, total_steps=500, epoch_steps=50)
    guard.begin(0)
    step(50)
    _, action = guard.review(50, epochs_done=1)
    assert action is not None and action.kind == "stop" and "projected to use" in action.reason
    assert not guard.crossed()
    step(49)
    assert not guard.crossed()
    step(1)  # the 100th step reaches the limit: the sampler's listener raises the flag
    assert guard.crossed()
