"""TimeShiftRun through EnergyLoop, on a manual clock: real hours of a simulated GPU that draws
300 W while training and 60 W while paused, priced on an hourly series.

The job pauses through the dirty hours, trains in the clean ones and ends before its deadline;
its CO2e, the time paused and the CO2e saved equal the integrals of the power trace and the
series (within the counter's period); a requeue exits with 75 and a restart carries the plan on.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

import energy_core.tracker
from energy_core import J_PER_KWH, EnergyLoop, TimeShiftRun
from energy_core.accounting import accounts
from tests.doubles.power_traces import Switched
from tests.doubles.sim_nvml import ManualClock, SimGpu
from tests.helpers.grid_series import write_csv
from tests.helpers.records import read_record

BASE = datetime(2030, 1, 7, tzinfo=timezone.utc)  # the unix clock of these tests: BASE + the manual clock
HOUR = 3600.0
BUSY_W, IDLE_W = 300.0, 60.0
STEP_S = 36.0  # 100 steps an hour
READ_S = 4.0  # the sampler's readings: every switch of power falls on one
DIRTY, CLEAN = 500.0, 80.0
HOURS = [DIRTY, DIRTY, CLEAN, CLEAN, DIRTY, DIRTY]  # the grid: clean from 2 h to 4 h
STEPS = 150  # 1.5 h of training


def kg(watts: float, seconds: float, g_per_kwh: float) -> float:
    return watts * seconds / J_PER_KWH * g_per_kwh / 1000.0


class Job:
    """A training job on a simulated GPU, a manual clock and an hourly series."""

    def __init__(self, sim_gpus, monkeypatch, tmp_path, hours: list[float] = HOURS) -> None:
        self.clock = ManualClock(start=0.0)
        self.trace = Switched(BUSY_W)
        sim_gpus(SimGpu("GPU-1", self.trace, counter_period_s=0.02, power_average_s=0.0), clock=self.clock)
        unix = SimpleNamespace(time=lambda: BASE.timestamp() + self.clock.now)  # one timeline for every figure
        monkeypatch.setattr(accounts, "time", unix)
        monkeypatch.setattr(energy_core.tracker, "time", unix)
        self.series = tmp_path / "grid.csv"
        write_csv(self.series, [(BASE + timedelta(hours=h), v) for h, v in enumerate(hours)])
        self.record = tmp_path / "energy.jsonl"
        self.loop: EnergyLoop | None = None
        self.step_times: list[float] = []

    def start(self, shift: TimeShiftRun | None, **options) -> EnergyLoop:
        options = {"carbon_intensity_series": str(self.series), **options}
        self.loop = loop = EnergyLoop(devices=["gpu"], sample_interval_s=60, record_path=str(self.record),
                                      time_shift=shift, log_every_n_steps=10, total_steps=STEPS, **options)  # fmt: skip
        loop.tracker.meter.clock = self.clock
        if shift is not None:
            shift.sleep = self.idle
        return loop

    def wait_first_reading(self) -> None:
        deadline = time.monotonic() + 30
        while len(self.loop.tracker.meter.sampler.buffer) == 0 and time.monotonic() < deadline:
            time.sleep(0.001)

    def advance(self, seconds: float) -> None:
        for _ in range(round(seconds / READ_S)):
            self.clock.advance(READ_S)
            self.loop.tracker.meter.sampler.sample_once()

    def train_step(self) -> None:
        self.trace.set(self.clock.now, BUSY_W)
        self.advance(STEP_S)
        self.step_times.append(self.clock.now)

    def idle(self, seconds: float) -> None:
        self.trace.set(self.clock.now, IDLE_W)
        self.advance(seconds)

    def train(self, loop: EnergyLoop, steps: int) -> None:
        for _ in range(steps):
            self.train_step()
            loop.step()
            if loop.should_stop:
                break


def deadline_in(hours: float) -> datetime:
    return BASE + timedelta(hours=hours)


def test_pause_mode_trains_in_the_clean_hours_and_saves_what_it_says(sim_gpus, monkeypatch, tmp_path) -> None:
    job = Job(sim_gpus, monkeypatch, tmp_path)
    shift = TimeShiftRun(deadline=deadline_in(6), mode="pause", idle_w=IDLE_W)
    loop = job.start(shift)
    with loop:
        job.wait_first_reading()
        job.train(loop, STEPS)
    lines = read_record(job.record)
    events = [(x["event"], x["step"]) for x in lines if x["type"] == "shift"]
    assert ("pause", 3) in events and ("resume", 3) in events  # planned once the pace was measured (3 steps)
    (pause,) = [x for x in lines if x["type"] == "shift" and x["event"] == "pause"]
    assert pause["resume_at"] == pytest.approx(BASE.timestamp() + 2 * HOUR)
    trained_after = job.step_times[3:]
    assert all(2 * HOUR < t <= 4 * HOUR for t in trained_after)  # every later step in the clean hours
    assert job.step_times[-1] < 6 * HOUR and len(job.step_times) == STEPS  # done, before the deadline
    paused = 2 * HOUR - 3 * STEP_S
    final = loop.last_metrics
    assert final["carbon/paused_s"] == pytest.approx(paused, abs=1e-6)
    busy_dirty, busy_clean = 3 * STEP_S, (STEPS - 3) * STEP_S
    actual = kg(BUSY_W, busy_dirty, DIRTY) + kg(BUSY_W, busy_clean, CLEAN) + kg(IDLE_W, paused, DIRTY)
    assert final["carbon/co2e_kg"] == pytest.approx(actual, rel=1e-3)
    run_now = kg(BUSY_W, STEPS * STEP_S, DIRTY)  # the same work from the start: all in dirty hours
    assert final["carbon/saved_kg"] == pytest.approx(run_now - actual, rel=1e-3)
    windows = [x for x in lines if x["type"] == "window" and "power/total_w" in x["metrics"]]
    assert all(x["metrics"]["power/total_w"] == pytest.approx(BUSY_W, rel=1e-3) for x in windows)  # no pause inside
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["time_shift"]["saved_kg"] == pytest.approx(
        run_now - actual, rel=1e-3
    )
    assert "Time shift (pause): paused 1.97 h" in loop.summary


def test_without_a_time_shift_the_same_job_emits_more(sim_gpus, monkeypatch, tmp_path) -> None:
    job = Job(sim_gpus, monkeypatch, tmp_path)
    loop = job.start(None)
    with loop:
        job.wait_first_reading()
        job.train(loop, STEPS)
    assert loop.last_metrics["carbon/co2e_kg"] == pytest.approx(kg(BUSY_W, STEPS * STEP_S, DIRTY), rel=1e-3)
    assert "carbon/paused_s" not in loop.last_metrics


def test_requeue_exits_75_and_the_restart_carries_the_plan_on(sim_gpus, monkeypatch, tmp_path) -> None:
    job = Job(sim_gpus, monkeypatch, tmp_path)
    shift = TimeShiftRun(deadline=deadline_in(6), mode="requeue", resume_s=120.0)
    loop = job.start(shift)
    with pytest.raises(SystemExit) as exited, loop:
        job.wait_first_reading()
        job.train(loop, STEPS)
        checkpoint = loop.state_dict()
    assert exited.value.code == 75 and len(job.step_times) == 3
    (requeue,) = [x for x in read_record(job.record) if x["type"] == "shift" and x["event"] == "requeue"]
    resume_at = requeue["resume_at"]
    assert resume_at == BASE.timestamp() + 2 * HOUR
    assert checkpoint["time_shift"]["shift"]["resume_at"] == resume_at
    # the scheduler starts it again a minute early: it waits for resume_at, then trains to the end
    job.clock.advance(resume_at - BASE.timestamp() - job.clock.now - 60.0)
    again = TimeShiftRun(deadline=deadline_in(6), mode="requeue", resume_s=120.0)
    loop = job.start(again)
    loop.load_state_dict(checkpoint)
    with loop:
        job.wait_first_reading()
        job.train(loop, STEPS - 3)
    assert len(job.step_times) == STEPS and job.step_times[-1] < 6 * HOUR
    assert all(t > resume_at - BASE.timestamp() for t in job.step_times[3:])
    final = loop.last_metrics
    assert final["carbon/paused_s"] == pytest.approx(resume_at - BASE.timestamp() - 3 * STEP_S, abs=1e-6)
    early = kg(IDLE_W, 60.0, DIRTY)  # the minute waited before resume_at (2 h, when the clean hours begin)
    actual = kg(BUSY_W, 3 * STEP_S, DIRTY) + kg(BUSY_W, (STEPS - 3) * STEP_S, CLEAN) + early
    assert final["carbon/co2e_kg"] == pytest.approx(actual, rel=2e-3)
    events = [x["event"] for x in read_record(job.record) if x["type"] == "shift"]
    assert events[events.index("requeue") :][:4] == ["requeue", "resume", "pause", "resume"]
