"""The budget's forecast and limit watch on a simulated GPU driven by a manual clock: every figure exact."""

from __future__ import annotations

import pytest

from energy_core import J_PER_KWH
from energy_core.budget.guard import BudgetGuard
from energy_core.budget.rule import BudgetRule
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import ManualClock, SimGpu
from tests.helpers.manual import manual_run


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
