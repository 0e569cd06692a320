"""Two instruments, one answer: a board's energy counter checked against its own power readings.

A simulated Hopper board has an energy counter (updated every 100 ms) and a 1 s averaged
power reading; the sampler reads it on a manual clock. Where both tell the truth they agree
within their joint bound over every 60 s span; a power sensor that reads 30% high is caught:
a ``check`` line in the run record and one notice.
"""

from __future__ import annotations

import pynvml
import pytest

from energy_core import EnergyTracker
from energy_core.devices import crosscheck, nvidia
from energy_core.devices.ledger import Ledger
from tests.doubles.power_traces import Constant, Square, Trace
from tests.doubles.sim_nvml import ManualClock, SimGpu, SimNvml
from tests.helpers.records import read_record


def read_for(ledger: Ledger, clock: ManualClock, seconds: float, interval: float = 0.1) -> None:
    end = clock() + seconds
    while clock() < end:
        clock.advance(interval)
        ledger.update(clock())


@pytest.mark.parametrize("trace", [Constant(300.0), Square(100.0, 400.0, 5.0)], ids=["constant", "square"])
def test_a_counter_and_a_true_power_agree_over_every_span(sim_gpus, trace) -> None:
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", trace, counter_period_s=0.1), clock=clock)
    [source], _ = nvidia.discover_gpus()
    ledger = Ledger(source)
    assert ledger.check is not None
    ledger.update(clock())
    read_for(ledger, clock, 3 * crosscheck.SPAN_S + 2)
    assert ledger.check.spans == 3
    assert ledger.check.take() == []


class Bursts(Trace):
    """100 W, with 400 W for the first 1.5 s of every 10 s."""

    def power(self, t: float) -> float:
        return 400.0 if (t % 10.0) < 1.5 else 100.0

    def energy(self, t: float) -> float:
        full, rest = divmod(max(t, 0.0), 10.0)
        return full * (400 * 1.5 + 100 * 8.5) + 400 * min(rest, 1.5) + 100 * max(rest - 1.5, 0.0)


@pytest.mark.parametrize("interval", [0.1, 0.5, 2.0, 10.0])
def test_power_read_too_seldom_to_integrate_is_not_checked(sim_gpus, interval) -> None:
    # Read every 10 s (dithered), the power at its readings is 100 W while bursts of 400 W come and go
    # between them: the integrated power missed them, the counter did not. Such spans are not compared
    # (they were: 4 of 5 warned that one instrument was wrong); read every second they are.
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", Bursts(), counter_period_s=0.1), clock=clock)
    [source], _ = nvidia.discover_gpus()
    ledger = Ledger(source)
    assert ledger.check is not None
    ledger.update(clock())
    end, k = clock() + 5 * crosscheck.SPAN_S + 2 * interval, 0
    while clock() < end:
        k += 1
        clock.advance(interval * (1.0 + 0.2 * ((-1) ** k)))  # the sampler's dither: +-20%
        ledger.update(clock())
    assert ledger.check.take() == []
    if 0.8 * interval > crosscheck.GAP_S:
        assert ledger.check.spans == 0
    else:  # 5 spans of 60 s, the first begun at the first power reading due
        assert ledger.check.spans in (4, 5)


class HighSensor(SimNvml):
    """A board whose power sensor reads 30% high (its counter is right)."""

    def nvmlDeviceGetPowerUsage(self, gpu):
        return int(1.3 * super().nvmlDeviceGetPowerUsage(gpu))


def test_a_power_sensor_that_reads_high_is_a_notice_and_a_record_line(monkeypatch, tmp_path) -> None:
    clock = ManualClock()
    sim = HighSensor([SimGpu("GPU-a", Constant(300.0), counter_period_s=0.1)], clock=clock)
    for name in dir(SimNvml):
        if name.startswith("nvml"):
            monkeypatch.setattr(pynvml, name, getattr(sim, name))
    record = tmp_path / "run.jsonl"
    tracker = EnergyTracker(devices=["gpu"], sample_interval_s=60, country="FRA", record_path=record)
    tracker.meter.clock = clock
    try:
        tracker.start_fit(step=0)
        for step in range(1, 4):
            for _ in range(int(crosscheck.SPAN_S / 0.1) + 5):
                clock.advance(0.1)
                tracker.meter.sampler.sample_once()
            tracker.add_batch({"input_ids": [[0]]})
            tracker.window(step)
        tracker.end_fit(step=3)
        notices = tracker.pop_notices()
    finally:
        tracker.close()
    checks = [line for line in read_record(record) if line["type"] == "check"]
    assert len(checks) == 3  # one per 60 s span
    for line in checks:
        assert line["source"] == "gpu0" and line["seconds"] == pytest.approx(crosscheck.SPAN_S, abs=1.0)
        assert line["counter_j"] == pytest.approx(300.0 * line["seconds"], rel=0.01)
        assert line["power_j"] == pytest.approx(1.3 * 300.0 * line["seconds"], rel=0.01)
        assert abs(line["power_j"] - line["counter_j"]) > line["bound_j"]
    said = [n for n in notices if "disagree" in n.text]
    assert len(said) == 1 and said[0].level == "warn" and said[0].text.startswith("gpu0: its energy counter")
