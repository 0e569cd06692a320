"""The issue's targets on synthetic hourly series (solar-like, wind-like, flat; seeded).

With a perfect forecast the plan must save at least 95% of what the optimum of its mode's cost
model saves, and never end after the deadline; with a forecast off by up to 10% each hour, the
saving it realises (its runs priced on the true series) must be at least 70% of the optimum's.
The optima here come from the classic exact solutions of the cases without resume costs
(`reference`), not from the planner. docs/guides/time-shifting.md quotes the figures.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from energy_core import plan_time_shift
from energy_core.shift.intensity import Intensity
from tests.energy_core.shift.reference import cost_kg, pause_optimum, requeue_optimum, wait_optimum
from tests.helpers.grid_series import SHAPES, hourly, noisy

JOBS = [(4, 20), (8, 16), (24, 24)]  # hours of work, hours of slack
BUSY_W = 400.0
IDLE_SHARES = (0.0, 0.1)  # idle power as a share of busy power: none, and a GPU idling at a tenth of its load
DAYS = 30


def optimum(mode: str, curve: Intensity, t0: float, t1: float, work: float, idle_w: float) -> float:
    if mode == "wait":
        return wait_optimum(curve, t0, t1, work, BUSY_W, idle_w)
    if mode == "pause":
        return pause_optimum(curve, t0, t1, work, BUSY_W, idle_w)
    return requeue_optimum(curve, t0, t1, work, BUSY_W)


def figures(shape: str, mode: str, idle_share: float, submits: int, seed: int = 1) -> dict[str, float]:
    """Sums over random submit times of each job: the run-now, optimal, planned and realised CO2e."""
    truth = hourly(shape, DAYS, seed)
    curve = Intensity.of(truth)
    rng = np.random.default_rng(seed)
    sums = dict.fromkeys(("now", "optimum", "planned", "realised"), 0.0)
    for work_h, slack_h in JOBS:
        for k in range(submits):
            start = truth[0][0] + timedelta(seconds=float(rng.uniform(0, (DAYS - 3) * 86400)))
            deadline = start + timedelta(hours=work_h + slack_h)
            t0, t1, work = start.timestamp(), deadline.timestamp(), work_h * 3600.0
            idle_w = idle_share * BUSY_W
            arguments = dict(work_s=work, start=start, deadline=deadline, busy_w=BUSY_W, idle_w=idle_w, mode=mode)
            planned = plan_time_shift(truth, **arguments)
            best = optimum(mode, curve, t0, t1, work, idle_w)
            assert planned.runs[-1][1] <= deadline  # the deadline is always met
            assert planned.co2e_kg <= best * (1 + 1e-6) + 1e-12  # at least as good as the optimum found
            blind = plan_time_shift(noisy(truth, 0.10, seed=1000 * seed + k), **arguments)
            assert blind.runs[-1][1] <= deadline
            runs = [(a.timestamp(), b.timestamp()) for a, b in blind.runs]
            sums["now"] += planned.run_now_co2e_kg
            sums["optimum"] += best
            sums["planned"] += planned.co2e_kg
            sums["realised"] += cost_kg(curve, runs, t0, mode, BUSY_W, idle_w)
    return sums


def savings(sums: dict[str, float]) -> tuple[float, float, float]:
    """(optimal, planned, realised) savings against starting at once."""
    return tuple(1 - sums[k] / sums["now"] for k in ("optimum", "planned", "realised"))  # type: ignore[return-value]


@pytest.mark.parametrize("mode", ["wait", "pause", "requeue"])
def test_one_solar_month_meets_the_targets(mode) -> None:
    best, planned, realised = savings(figures("solar", mode, 0.0, submits=2))
    assert best > 0.05
    assert planned >= 0.95 * best
    assert realised >= 0.70 * best


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["wait", "pause", "requeue"])
@pytest.mark.parametrize("idle_share", IDLE_SHARES)
def test_the_targets_on_every_shape(shape, mode, idle_share) -> None:
    if mode == "requeue" and idle_share:
        pytest.skip("requeue draws nothing between runs")
    best, planned, realised = savings(figures(shape, mode, idle_share, submits=12))
    print(f"\n{shape} {mode} idle {idle_share:.0%}: optimum {best:.1%}, planned {planned:.1%}, realised {realised:.1%}")
    assert planned >= 0.95 * best - 1e-9
    if best > 0.02:
        assert realised >= 0.70 * best
    else:  # nothing to gain (a flat grid): the forecast's noise must not cost much either
        assert realised >= -0.02
