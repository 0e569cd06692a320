"""The sampler and the meter's marks: the ring buffer and marks with exact figures on a manual clock, and
the sampler never holding the caller longer than `DRIVER_WAIT_S` for a driver call: at start, at stop,
and at a start after a read that has not returned (another stage of the same run).

A source whose read blocks until the test releases it stands in for a hung driver call;
the bound is shortened to keep the tests short. Each test releases the read and joins the
thread it left, as the conftest requires.
"""

from __future__ import annotations

import threading
import time

import pytest

from energy_core.devices import EnergySource, Reading, SourceInfo, deadline
from energy_core.sampling.meter import EnergyMeter
from energy_core.sampling.sampler import Mark, SampleBuffer, Sampler
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import ManualClock, SimGpu

BOUND_S = 0.3
PATIENCE_S = 60.0  # how long a test waits for the sampler thread on a loaded machine


class Blocking(EnergySource):
    """A counter of 100 J per read that blocks, from its ``hang_from``-th read on, until released."""

    info = SourceInfo(name="gpu0", kind="gpu", method="test")

    def __init__(self, hang_from: int) -> None:
        self.hang_from = hang_from
        self.reads = 0
        self.release = threading.Event()

    def read(self, now: float) -> Reading:
        self.reads += 1
        if self.reads >= self.hang_from:
            self.release.wait()
        return Reading(joules=100.0 * self.reads)


@pytest.fixture
def short_bound(monkeypatch):
    monkeypatch.setattr(deadline, "DRIVER_WAIT_S", BOUND_S)


def samplers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "energy-sampler"]


def until(condition, what: str) -> None:
    end = time.monotonic() + PATIENCE_S
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_a_first_reading_that_hangs_does_not_hold_the_start(short_bound) -> None:
    source = Blocking(hang_from=1)
    sampler = Sampler([source], 0.01)
    try:
        assert sampler.start() is False and sampler.running and sampler.hung  # back after the bound
        assert len(sampler.buffer) == 0
        assert sampler.stop() is False  # known hung: not waited for again
        assert sampler.start() is False and len(samplers()) == 1  # another stage: the same thread, no new wait
        source.release.set()  # the driver answers at last: the thread takes up its readings
        until(lambda: len(sampler.buffer) >= 3, "readings after the release")
        assert not sampler.hung
    finally:
        source.release.set()
        assert sampler.stop() is True
    assert samplers() == []


def test_a_read_that_hangs_mid_run_holds_neither_the_end_nor_the_next_stage(short_bound) -> None:
    source = Blocking(hang_from=5)
    sampler = Sampler([source], 0.01)
    try:
        assert sampler.start() is True
        until(lambda: source.reads >= 5, "the read that hangs")
        mark = Mark(sampler.clock())
        sampler.watch_mark(mark)
        assert sampler.stop() is False  # waited for at most the bound: the figures end at the last reading
        assert sampler.start() is False  # the next stage starts at once, on the thread left in the read
        assert sampler.stop() is False and len(samplers()) == 1
        assert mark.joules is None
        assert sampler.start() is False
        source.release.set()
        until(lambda: mark.joules is not None, "the mark fixed by the readings that resume")
        assert mark.joules[0] == pytest.approx(500.0, abs=100.0)  # between the 4th reading and the next ones
    finally:
        source.release.set()
        assert sampler.stop() is True
    assert samplers() == []


def test_a_start_covers_the_first_mark_and_a_stop_takes_a_last_reading() -> None:
    source = Blocking(hang_from=10**9)
    sampler = Sampler([source], 60.0)  # no reading of its own between the two
    assert sampler.start() is True and len(sampler.buffer) == 1  # taken before start() returns
    mark = Mark(sampler.clock())
    sampler.watch_mark(mark)
    assert sampler.stop() is True and samplers() == []
    assert len(sampler.buffer) == 2 and mark.joules is not None and mark.joules[0] == pytest.approx(100.0, abs=100.0)


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


def test_a_stall_before_a_validation_in_the_fit_is_still_counted_from_its_start(sim_gpus) -> None:
    # Every stage's start opened the meter again, which took its moment for the start of a run of its own:
    # a read hung 700 s before a validation inside the fit was counted from the validation's start.
    from tests.helpers.manual import manual_run

    clock = ManualClock(1000.0)
    sim_gpus(SimGpu("GPU-1", Constant(300.0)), clock=clock)
    run = manual_run(clock, devices=["gpu"])
    run.advance(1.0)
    clock.advance(700.0)  # no reading for 700 s: a driver call that has not returned
    before = run.tracker.meter.quality()["gpu0"]["unmeasured_s"]
    run.tracker.start_stage("val")
    clock.advance(1.0)
    after = run.tracker.meter.quality()["gpu0"]
    run.tracker.meter.sampler.hung = True  # no last reading to wait for at the close
    run.tracker.close()
    assert before == pytest.approx(700.0)
    assert after["unmeasured_s"] == pytest.approx(701.0) and after["estimated_j"] == pytest.approx(300.0 * 701.0)
