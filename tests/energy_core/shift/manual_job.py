"""A training job on a manual clock for time-shift tests: real hours of a simulated GPU that draws
300 W while training and 60 W while paused, priced on an hourly series, with no waiting."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import energy_core.output.record
import energy_core.tracker
from energy_core import J_PER_KWH, EnergyLoop, EnergyTracker, TimeShiftRun
from energy_core.accounting import accounts
from energy_core.tracker_share import SharedRun
from tests.doubles.power_traces import Switched
from tests.doubles.sim_nvml import ManualClock, SimGpu
from tests.helpers.grid_series import write_csv
from tests.helpers.lightning_models import make_module

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
        monkeypatch.setattr(energy_core.output.record, "time", unix)
        self.series = tmp_path / "grid.csv"
        write_csv(self.series, [(BASE + timedelta(hours=h), v) for h, v in enumerate(hours)])
        self.record = tmp_path / "energy.jsonl"
        self.loop: EnergyLoop | None = None
        self.step_times: list[float] = []

    def start(self, shift: TimeShiftRun | None, total_steps: int = STEPS, **options) -> EnergyLoop:
        options = {"carbon_intensity_series": str(self.series), **options}
        self.loop = loop = EnergyLoop(devices=["gpu"], sample_interval_s=60, record_path=str(self.record),
                                      time_shift=shift, log_every_n_steps=10, total_steps=total_steps,
                                      **options)  # fmt: skip
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

    def slows_down_after(self, steps: int) -> None:
        """Each step after the first ``steps`` takes twice `STEP_S`: the pace moves, and a plan with it."""
        one_step = self.train_step

        def slower() -> None:
            one_step()
            if len(self.step_times) > steps:
                self.advance(STEP_S)

        self.train_step = slower  # type: ignore[method-assign]

    def idle(self, seconds: float) -> None:
        self.trace.set(self.clock.now, IDLE_W)
        self.advance(seconds)

    def reads(self, tracker: EnergyTracker, shift: TimeShiftRun | None = None) -> EnergyTracker:
        """Read ``tracker`` (a monitor's, or one a run measures alone with) on this job's clock, as a
        trainer's callbacks do; ``shift`` sleeps by idling the job. Returns ``tracker``."""
        tracker.meter.clock = self.clock
        self.loop = SimpleNamespace(tracker=tracker)  # type: ignore[assignment]  # what the job reads
        if shift is not None:
            shift.sleep = self.idle
        return tracker

    def own_tracker(self, run: SharedRun) -> EnergyTracker:
        """The tracker ``run`` (a budget's, a target's, a time shift's) measures alone with, made now
        so that it reads this job's clock (`reads`)."""
        tracker = run.share._own = EnergyTracker(run.options)
        tracker.measures_alone = True
        return tracker

    def lightning_module(self, pl):
        """A Lightning module whose every training step is a step of this job (the first waits for the
        sampler's first reading)."""
        module = make_module(pl)
        train_step = module.training_step

        def step(batch, batch_idx):
            if not self.step_times:
                self.wait_first_reading()
            self.train_step()
            return train_step(batch, batch_idx)

        module.training_step = step
        return module

    def train(self, loop: EnergyLoop, steps: int) -> None:
        for _ in range(steps):
            self.train_step()
            loop.step()
            if loop.should_stop:
                break


def deadline_in(hours: float) -> datetime:
    return BASE + timedelta(hours=hours)


def assert_plans_at_logging_steps(record: list[dict], every: int) -> None:
    """A time shift plans at a logging step, or where a planned run ends: its first steps (the pace
    measured) and the step after a pause; never on another step (the plan costs tens of ms)."""
    shift = [line for line in record if line["type"] == "shift"]
    plans = [line["step"] for line in shift if line["event"] == "plan"]
    ends = {plans[0]} | {line["step"] + 1 for line in shift if line["event"] == "resume"}
    elsewhere = [step for step in plans if step % every and step not in ends]
    assert len(plans) >= 3 and not elsewhere, plans  # planned again as the pace moved, at logging steps
