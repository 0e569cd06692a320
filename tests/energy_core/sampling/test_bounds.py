"""The bound of a span (`energy_core.sampling.bounds`) holds the true energy, on random traces (hypothesis).

A simulated board follows a random piecewise-constant power trace whose integral is exact; the meter
reads it on a manual clock at a random dithered interval, the way a run does: at each logging
boundary (random, 1-6 s apart) a mark is read at once, extrapolated past the newest reading, and the
next window starts from it; the fit's total is read once the readings after its end are in. Every
window's and the total's true energy must lie within the bound, on the energy counter (levels within
a factor of 2 of each other, any segment length: the model's assumption past the newest reading) and
on the 1 s averaged power (segments of a second or more: slower than the average; read every 0.1 s
or less).

The bound must hold exactly: no slack. The examples hypothesis once found beyond the model are kept
below as fixed tests (each failed on the model before its fix). A model that leaves out a term fails
at once (checked by hand: a bound of a fifth of the spreads alone fails on the first examples).
"""

from __future__ import annotations

import numpy as np
import pynvml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energy_core.devices import nvidia
from energy_core.sampling.bounds import MarkBound, between
from energy_core.sampling.meter import EnergyMeter
from energy_core.sampling.sampler import Sampler
from tests.doubles.power_traces import Square, Steps, Trace
from tests.doubles.sim_nvml import ARCH_AMPERE, ARCH_HOPPER, ARCH_PASCAL, ManualClock, SimGpu, SimNvml

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class NoCounterNvml(SimNvml):
    def nvmlDeviceGetTotalEnergyConsumption(self, gpu):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)


BOARDS = {  # reading path: (architecture, seconds the power reading averages over)
    "counter": (ARCH_HOPPER, 1.0),
    "averaged": (ARCH_AMPERE, 1.0),
    "instantaneous": (ARCH_PASCAL, 0.0),
}


def run(monkeypatch, trace: Trace, path: str, interval: float, gaps: list[float], seconds: float):
    """[(true J, figure J, bound J)] of every window, and the total's, on one reading path (`BOARDS`)."""
    clock = ManualClock()
    arch, average_s = BOARDS[path]
    board = SimGpu("GPU-a", trace, arch=arch, counter_period_s=0.1, power_average_s=average_s)
    sim = (SimNvml if path == "counter" else NoCounterNvml)([board], clock=clock)
    for name in dir(SimNvml):
        if name.startswith("nvml"):
            monkeypatch.setattr(pynvml, name, getattr(sim, name))
    sources, _ = nvidia.discover_gpus()
    meter = EnergyMeter(devices=["gpu"], sample_interval_s=interval, clock=clock)
    meter.sources = sources
    sampler = meter.sampler = Sampler(sources, interval, clock=clock)
    sampler.sample_once()
    while clock() - sim.t0 < 2.0:  # the board was on before the fit
        clock.advance(sampler.next_interval())
        sampler.sample_once()
    start = meter.mark()
    [carried], [carried_bound] = meter.read(start)
    windows: list[tuple[float, float, float]] = []
    boundary, gap = start.t + gaps[0], 1
    last, last_bound_start = start, start.t
    next_reading = clock() + sampler.next_interval()
    while boundary <= start.t + seconds:
        if boundary < next_reading:
            clock.now = boundary
            opened, last = last, meter.mark()
            [joules], [bound] = meter.read(last)
            truth = sim.exact_joules(board, last_bound_start, boundary)
            start_bound = meter.restate(opened, carried, carried_bound)  # as `Window` does when it closes
            windows.append((truth, float(joules[0] - carried[0]), float(between(start_bound, bound)[0])))
            carried, carried_bound, last_bound_start = joules, bound, boundary
            boundary += gaps[gap % len(gaps)]
            gap += 1
            continue
        clock.now = next_reading
        sampler.sample_once()
        next_reading += sampler.next_interval()
    for _ in range(40):
        clock.now = next_reading
        sampler.sample_once()
        next_reading += sampler.next_interval()
    (first, final), (first_bound, final_bound) = meter.read(start, last)
    total = (
        sim.exact_joules(board, start.t, last.t),
        float(final[0] - first[0]),
        float(between(first_bound, final_bound)[0]),
    )
    return windows, total


def covered(figures: tuple[float, float, float]) -> bool:
    truth, figure, bound = figures
    return abs(figure - truth) <= bound


@SETTINGS
@given(
    levels=st.lists(st.floats(150.0, 300.0), min_size=2, max_size=12),
    durations=st.lists(st.floats(0.01, 4.0), min_size=12, max_size=12),
    interval=st.floats(0.02, 0.3),
    gaps=st.lists(st.floats(1.0, 6.0), min_size=1, max_size=5),
)
def test_the_counters_bound_holds_every_window_and_the_total(monkeypatch, levels, durations, interval, gaps) -> None:
    trace = Steps(levels * 4, durations * 4)
    windows, total = run(monkeypatch, trace, "counter", interval, gaps, seconds=25.0)
    assert windows and all(map(covered, windows)), [w for w in windows if not covered(w)]
    assert covered(total)


@SETTINGS
@given(
    levels=st.lists(st.floats(150.0, 300.0), min_size=2, max_size=8),
    durations=st.lists(st.floats(1.0, 6.0), min_size=8, max_size=8),
    interval=st.floats(0.02, 0.1),  # at 0.2 s a step just before a boundary is missed by up to 10% of the bound
    gaps=st.lists(st.floats(1.0, 6.0), min_size=1, max_size=5),
)
def test_the_averaged_powers_bound_holds_every_window_and_the_total(
    monkeypatch, levels, durations, interval, gaps
) -> None:
    trace = Steps(levels * 4, durations * 4)
    windows, total = run(monkeypatch, trace, "averaged", interval, gaps, seconds=25.0)
    assert windows and all(map(covered, windows)), [w for w in windows if not covered(w)]
    assert covered(total)


def test_a_span_adds_the_spreads_and_only_the_difference_of_the_lags() -> None:
    """Two marks each trailing the truth by up to 30 J: the span is off by up to 30 J, not 60."""
    a = MarkBound(spread=np.array([2.0]), lag=np.array([30.0]), accumulated=np.array([5.0]))
    b = MarkBound(spread=np.array([3.0]), lag=np.array([20.0]), accumulated=np.array([9.0]))
    assert between(a, b).tolist() == [2.0 + 3.0 + 30.0 + 4.0]


def test_a_step_inside_the_counters_last_update_period_is_covered(monkeypatch) -> None:
    """150 W for 3.875 s, then 219 W, a level no reading has shown yet: the counter's update at 3.9 s
    shows only 25 ms of it, and the boundary at 4 s is read before the next update. The window is
    short of 100 ms at 219 W; the bound covers it (before the fix the lag counted only levels seen)."""
    trace = Steps([150.0, 219.0] * 4, ([3.875] + [1.0] * 11) * 4)
    windows, total = run(monkeypatch, trace, "counter", 0.02, [1.0], seconds=25.0)
    assert all(map(covered, windows)), [w for w in windows if not covered(w)]
    assert covered(total)


def test_a_polled_powers_resolution_is_in_the_bound(monkeypatch) -> None:
    """NVML reports whole mW: 150.8125 W reads 150.812 W, 0.5 mW short all along. On a constant power
    nothing else is off, so the total's bound is that resolution times the time, and it covers."""
    windows, total = run(monkeypatch, Steps([150.8125], [1000.0]), "averaged", 0.0625, [1.0], seconds=25.0)
    truth, figure, bound = total
    seconds = truth / 150.8125
    assert abs(figure - truth) > 0.4e-3 * seconds  # the rounding is there to be covered
    assert covered(total) and all(map(covered, windows))
    assert bound < 2e-3 * seconds  # about 1 mW times the seconds, not more


def test_instantaneous_polling_in_step_with_the_load_is_covered(monkeypatch) -> None:
    """Polled every 0.5 s (+-20%), a 100/400 W square wave of period 0.5 s puts runs of readings on one
    level (aliasing): no spread in them shows the error. The spread is taken over 32 readings, which the
    dither walks across the period, and over the whole plausible range before that: every window and
    the total are covered (before the fix some 5 s windows were not)."""
    windows, total = run(monkeypatch, Square(100.0, 400.0, 0.5), "instantaneous", 0.5, [5.0], seconds=120.0)
    assert len(windows) >= 20
    assert all(map(covered, windows)), [w for w in windows if not covered(w)]
    assert covered(total)


def test_a_step_just_before_an_averaged_powers_window_end_is_covered(monkeypatch) -> None:
    """150 W, then 246 W from 60 ms before a window's end, read every 62.5 ms: the 1 s average has
    risen by 6 W at the newest reading, its trapezoids by half that, yet its lag has grown by the
    rise times the average's whole second. The window's start, restated from the readings since,
    has no slack to lend: the end's lag alone must cover it (it did not with one spread of margin)."""
    trace = Steps([150.0, 246.0] * 16, [1.0, 1.125, 1.625, 4.75, 5.625, 1.0, 1.0, 1.0] * 4)
    windows, total = run(monkeypatch, trace, "averaged", 0.0625, [1.5625, 1.59375, 5.875], seconds=25.0)
    assert all(map(covered, windows)), [w for w in windows if not covered(w)]
    assert covered(total)


def test_a_reading_a_moment_after_the_last_is_no_power_surge(monkeypatch) -> None:
    """A constant 200 W, its counter updated every 100 ms, read every 0.45 s up to 0.4 ms before an update,
    then 0.4 ms after it (as `end_fit`'s own reading may come right after the sampler's): the 20 J update
    over those 0.8 ms is no 25 kW level. A mark there trails the truth by at most the counter's period
    at the board's power; before the fix its bound was 2,500 J for a 3 s span of 600 J."""
    clock = ManualClock()
    board = SimGpu("GPU-a", Steps([200.0], [1000.0]), arch=ARCH_HOPPER, counter_period_s=0.1)
    sim = SimNvml([board], clock=clock)
    for name in dir(SimNvml):
        if name.startswith("nvml"):
            monkeypatch.setattr(pynvml, name, getattr(sim, name))
    sources, _ = nvidia.discover_gpus()
    meter = EnergyMeter(devices=["gpu"], sample_interval_s=0.45, clock=clock)
    meter.sources = sources
    sampler = meter.sampler = Sampler(sources, 0.45, clock=clock)
    for at in [3.0 - 0.45 * m - 0.0004 for m in range(6, -1, -1)] + [3.0004]:
        clock.now = sim.t0 + at
        sampler.sample_once()
    start_t = sim.t0 + 3.0 - 0.45 * 6 - 0.0004
    clock.now = start_t
    start = meter.mark()
    clock.now = sim.t0 + 3.0004
    end = meter.mark()
    (first, last), (first_bound, last_bound) = meter.read(start, end)
    assert float(last_bound.lag[0]) <= 1.25 * 200.0 * 0.1
    truth = sim.exact_joules(board, start.t, end.t)
    assert abs(float(last[0] - first[0]) - truth) <= float(between(first_bound, last_bound)[0]) <= 0.1 * truth
