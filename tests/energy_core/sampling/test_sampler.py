"""The sampler's ring buffer and the meter's marks: exact figures on a manual clock."""

from __future__ import annotations

import pytest

from energy_core.sampling.meter import EnergyMeter
from energy_core.sampling.sampler import SampleBuffer
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import ManualClock, SimGpu


def test_ring_buffer_keeps_the_newest_rows_and_interpolates() -> None:
    buffer = SampleBuffer(width=1, capacity=8)
    for i in range(20):
        buffer.append(float(i), [10.0 * i])
    assert len(buffer) == 8
    (mid, final), (old, _), (future, pending) = buffer.energy_at([15.5, 3.0, 21.0])
    assert final and mid[0] == pytest.approx(155.0)
    assert old[0] == pytest.approx(120.0)  # older than kept: clamped to the oldest row (t=12)
    assert not pending and future[0] == pytest.approx(210.0)  # extrapolated at the last second's power


def test_meter_marks_resolve_once_samples_arrive(sim_gpus) -> None:
    clock = ManualClock()
    sim = sim_gpus(SimGpu("GPU-a", Constant(250.0), counter_period_s=0.02), clock=clock)
    meter = EnergyMeter(devices=["gpu"], sample_interval_s=60, clock=clock)  # the test takes the readings
    meter.open()
    try:
        start = meter.mark()
        assert start.joules is None  # no reading after it yet
        for _ in range(15):
            clock.advance(0.1)
            meter.sampler.sample_once()
        end = meter.mark()
        assert start.joules is not None and end.joules is None  # the first fixed, the second open
        clock.advance(0.1)
        meter.sampler.sample_once()
        joules = meter.joules(start, end)
    finally:
        meter.close()
    assert end.joules is not None  # fixed by the reading after it, for good
    counter_j = 2 * 0.02 * 250.0  # a counter period at each end
    assert (joules[1] - joules[0])[0] == pytest.approx(sim.exact_joules(sim.gpus[0], start.t, end.t), abs=counter_j)
