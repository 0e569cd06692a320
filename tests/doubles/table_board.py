"""Boards that follow a recorded time-vs-power-limit profile, in virtual time, for the cap search.

A `Profile` is a table of (cap, seconds per step, joules per step), one row per cap on a
25 W grid, highest first, as Zeus's profiler records it. A `TableJob` trains on one or
more `TableBoard`s: each step takes the table's time at the cap in force (interpolated
between rows) times per-step noise (and a slowdown inside a `Disturbance`, a noisy
neighbour), and each board draws the table's power at its cap for its own time, idle
power while it waits for the slowest. Boards are `GpuBoard`s (limits in mW) and
`EnergySource`s (cumulative joules), so the real `PowerLimits`, `EnergyMeter`, `Sampler`
and `CapFinder` run on them; `run_search` drives a whole search without sleeping.
"""

from __future__ import annotations

import bisect
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from energy_core.accounting.ranks import Ranks
from energy_core.devices import EnergySource, GpuBoard, LimitRange, Reading, SourceInfo
from energy_core.notices import Notice
from energy_core.power.cap import PowerCapRun
from energy_core.power.finder.finder import CapFinder
from energy_core.power.journal import JOURNAL_ENV
from energy_core.power.limits import PowerLimits
from energy_core.sampling.meter import EnergyMeter
from energy_core.sampling.sampler import Sampler
from tests.doubles.sim_nvml import ManualClock

IDLE_THREAD_S = 3600.0  # the sampler thread's own interval: it never reads during a run


@dataclass(frozen=True)
class Profile:
    """Time and energy per step against the power limit: rows highest cap first."""

    name: str
    caps_w: tuple[float, ...]
    s_per_step: tuple[float, ...]
    j_per_step: tuple[float, ...]

    def at(self, cap_w: float) -> tuple[float, float]:
        """(s, J) per step at a cap, interpolated linearly between rows (clamped at the ends)."""
        caps = self.caps_w[::-1]
        i = min(max(bisect.bisect_left(caps, cap_w), 1), len(caps) - 1)
        w = min(max((cap_w - caps[i - 1]) / (caps[i] - caps[i - 1]), 0.0), 1.0)
        s, j = self.s_per_step[::-1], self.j_per_step[::-1]
        return s[i - 1] + w * (s[i] - s[i - 1]), j[i - 1] + w * (j[i] - j[i - 1])

    def slowdown(self, cap_w: float) -> float:
        return self.at(cap_w)[0] / self.s_per_step[0] - 1

    def saving(self, cap_w: float) -> float:
        return 1 - self.at(cap_w)[1] / self.j_per_step[0]

    def zeus_choice(self, max_slowdown: float) -> float:
        """Zeus's ``MaxSlowdownConstraint``: the lowest cap whose time is within the factor."""
        limit = (1 + max_slowdown) * self.s_per_step[0]
        return min(c for c, s in zip(self.caps_w, self.s_per_step) if s <= limit)

    def best_within(self, max_slowdown: float) -> float:
        """The row with the least energy per step among those within the slowdown."""
        limit = (1 + max_slowdown) * self.s_per_step[0]
        rows = [(j, c) for c, s, j in zip(self.caps_w, self.s_per_step, self.j_per_step) if s <= limit]
        return min(rows)[1]


def shaped_profile(
    name: str,
    min_w: float,
    max_w: float,
    step_s: float,
    demand_w: float,
    rise: float,
    sharpness: float,
    jitter: float = 0.0,
    seed: int = 0,
) -> Profile:
    """The published shape: time flat while the cap is above the job's demand, then rising
    ever faster down to the minimum (``rise`` x at the minimum, ``sharpness`` the exponent);
    power follows the cap, so energy falls with it until time rises steeply. ``jitter``
    adds +-(that share) of uniform noise to each row's time (non-monotone profiles)."""
    rng = random.Random(seed)
    caps = [float(c) for c in np.arange(max_w, min_w - 1e-6, -25.0)]
    caps += [float(min_w)] if caps[-1] > min_w else []
    seconds, joules = [], []
    for cap in caps:
        depth = max(0.0, (demand_w - cap) / (demand_w - min_w))
        s = step_s * (1 + rise * depth**sharpness) * (1 + rng.uniform(-jitter, jitter) if cap < max_w else 1.0)
        seconds.append(s)
        joules.append(min(cap, demand_w) * s * (1 + rng.uniform(-0.005, 0.005)))
    return Profile(name, tuple(caps), tuple(seconds), tuple(joules))


@dataclass(frozen=True)
class Disturbance:
    """Steps between ``start_s`` and ``end_s`` (virtual seconds) take ``factor`` x as long."""

    start_s: float
    end_s: float
    factor: float


class TableBoard(GpuBoard, EnergySource):
    """One simulated GPU following a profile: a power limit to set, and an energy counter.

    Steps add their energy as segments (`add`); between and after them the board draws
    ``idle_w`` (0 unless a job sets it), so the counter is the exact integral of a power
    that never depends on the future, read from any thread.
    """

    def __init__(self, profile: Profile, index: int = 0, counter_period_s: float = 0.0) -> None:
        self.vendor, self.index, self.uuid = "sim", index, f"GPU-table-{index}"
        self.info = SourceInfo(f"gpu{index}", "gpu", "table")
        self.profile = profile
        self.min_mw, self.max_mw = int(min(profile.caps_w) * 1000), int(max(profile.caps_w) * 1000)
        self.current_mw = self.max_mw
        self.counter_period_s = counter_period_s
        self.sets: list[int] = []
        self.idle_w = 0.0
        self._t = [0.0]  # segment ends and cumulative joules there
        self._j = [0.0]
        self._lock = threading.Lock()  # a real sampler thread reads while the job adds

    def limits(self) -> LimitRange:
        return LimitRange(self.min_mw, self.max_mw, self.max_mw, self.current_mw)

    def limit_mw(self) -> int:
        return self.current_mw

    def set_limit_mw(self, mw: int) -> None:
        if not self.min_mw <= mw <= self.max_mw:
            raise ValueError(f"{mw} mW is outside [{self.min_mw}, {self.max_mw}]")
        self.current_mw = int(mw)
        self.sets.append(int(mw))

    def add(self, t0: float, t1: float, joules: float) -> None:
        """A step from t0 to t1 (seconds) that used ``joules`` evenly; idle power before it."""
        with self._lock:
            if t0 > self._t[-1]:
                self._j.append(self._j[-1] + self.idle_w * (t0 - self._t[-1]))
                self._t.append(t0)
            self._t.append(t1)
            self._j.append(self._j[-1] + joules)

    def exact(self, now: float) -> float:
        """Joules used up to ``now`` (the integral itself, without the counter's period)."""
        with self._lock:
            if now > self._t[-1]:
                return self._j[-1] + self.idle_w * (now - self._t[-1])
            return float(np.interp(now, self._t, self._j))

    def read(self, now: float) -> Reading:
        if self.counter_period_s:
            now = (now // self.counter_period_s) * self.counter_period_s
        return Reading(joules=self.exact(now))


@dataclass
class TableJob:
    """A data-parallel job over table boards on a virtual clock, read by a real sampler."""

    boards: list[TableBoard]
    time_noise: float = 0.02
    energy_noise: float = 0.01
    disturbances: Sequence[Disturbance] = ()
    idle_fraction: float = 0.35
    sample_interval_s: float = 0.05
    seed: int = 0
    wake_share: float = 0.0
    clock: ManualClock = field(default_factory=lambda: ManualClock(0.0))

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._wakes = random.Random(self.seed + 2)
        self._late = 0.0
        self.meter = EnergyMeter(devices=["gpu"], sample_interval_s=self.sample_interval_s, clock=self.clock)
        self.meter.sources = list(self.boards)
        # The sampler's thread takes the first reading and then idles (an hour between its own
        # readings): the job takes every other reading itself, in virtual time.
        self.meter.sampler = self.sampler = Sampler(self.boards, IDLE_THREAD_S, clock=self.clock)
        self.sampler.start()
        self._dither = random.Random(self.seed + 1)
        self._next_read = self.clock() + self._interval()
        self.limit_log: list[tuple[float, float]] = []  # (step start, sum of the caps in force in W)

    def _interval(self) -> float:
        """Seconds to the next reading: the interval +-20%, as the sampler dithers it."""
        return self.sample_interval_s * (0.8 + 0.4 * self._dither.random())

    def close(self) -> None:
        """Stop the idle sampler thread."""
        self.sampler.stop()

    def step(self) -> None:
        """One optimizer step: every board works at its cap, the slowest sets the pace."""
        t0 = self.clock()
        self.limit_log.append((t0, sum(b.current_mw for b in self.boards) / 1000))
        slow = next((d.factor for d in self.disturbances if d.start_s <= t0 < d.end_s), 1.0)
        own = []
        for board in self.boards:
            s, j = board.profile.at(board.current_mw / 1000)
            factor = max(0.5, 1 + self.rng.gauss(0, self.time_noise))
            own.append((s * factor, j * factor * (1 + self.rng.gauss(0, self.energy_noise)), j / s))
        pace = max(s for s, _, _ in own) * slow
        for board, (s, j, watts) in zip(self.boards, own):
            board.add(t0, t0 + pace, j + self.idle_fraction * watts * (pace - s))
        while self._next_read <= t0 + pace:
            self.clock.now = self._next_read
            self.sampler.sample_once()
            self._next_read += self._interval()
        self.clock.now = t0 + pace
        self._late = self.wake_share * pace * self._wakes.random()

    def seen(self) -> float:
        """The time the training thread reads after a step: late by up to ``wake_share`` of
        a step (uniformly) when it wakes late on a busy machine, while the boards go on with
        the work queued (the step after a late one looks short by as much)."""
        return self.clock() + self._late


def cpu_loops_per_s(seconds: float = 0.2) -> float:
    """Iterations of an empty Python loop per second on this machine now (call it while quiet)."""
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10_000):
            pass
        n += 10_000
    return n / (time.perf_counter() - start)


@dataclass
class RealTimeJob:
    """A data-parallel job over table boards in real time, read by a real sampler thread.

    As with CUDA, the training thread queues each step's work on the boards and runs ahead
    by one step: it does the CPU's part of a step (``cpu_share`` of the uncapped step, a
    fixed amount of Python work: loading the next batch, launching kernels), queues the
    step (the table's time and energy at the cap in force, times ``scale``, with per-step
    noise on the time), then waits for the step before it to finish. A busy machine delays
    the training thread, which jitters the step times it sees; only when the CPU's part
    takes longer than a step's work do the boards idle (``idle_fraction`` of their power)
    and the step really slows down. ``scale`` compresses time (scale the boards' counter
    period and the sampler's interval alike).
    """

    boards: list[TableBoard]
    loops_per_s: float
    scale: float = 1.0
    time_noise: float = 0.02
    cpu_share: float = 0.2
    idle_fraction: float = 0.35
    sample_interval_s: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.meter = EnergyMeter(devices=["gpu"], sample_interval_s=self.sample_interval_s)
        self.meter.sources = list(self.boards)
        self.meter.sampler = self.sampler = Sampler(self.boards, self.sample_interval_s)
        self.sampler.start()
        uncapped = max(b.profile.s_per_step[0] for b in self.boards) * self.scale
        self._loops = int(self.cpu_share * uncapped * self.loops_per_s)
        self.limit_log: list[tuple[float, float]] = []
        self.stalls = 0  # steps the boards waited for the training thread
        self._free_at = time.perf_counter()  # when the boards finish the work queued
        self._previous = self._free_at  # when the step before the last queued one ends

    def step(self) -> None:
        for _ in range(self._loops):  # the CPU's part of the next step
            pass
        now = time.perf_counter()
        start = max(now, self._free_at)
        self.stalls += now > self._free_at
        self.limit_log.append((start, sum(b.current_mw for b in self.boards) / 1000))
        pace = 0.0
        for board in self.boards:
            s, j = board.profile.at(board.current_mw / 1000)
            factor = max(0.5, 1 + self.rng.gauss(0, self.time_noise))
            board.add(start, start + s * self.scale * factor, j * self.scale * factor)  # idle before: the last cap's
            board.idle_w = self.idle_fraction * j / s
            pace = max(pace, s * self.scale * factor)
        wait_for, self._previous, self._free_at = self._previous, self._free_at, start + pace
        left = wait_for - time.perf_counter()
        if left > 0:
            time.sleep(left)

    def close(self) -> None:
        self.sampler.stop()


@dataclass
class SearchResult:
    """What a search did on a job: the cap kept, the steps it took, the finder itself."""

    finder: CapFinder
    job: TableJob | RealTimeJob
    chosen_w: float | None
    steps: int
    limit_at_end_w: float


def run_search(
    job: TableJob | RealTimeJob,
    max_steps: int = 5000,
    journal: Path | None = None,
    restore: dict[str, Any] | None = None,
    restored: bool = True,
    **finder_args: object,
) -> SearchResult:
    """Run `CapFinder` on the job's boards until it is done (or ``max_steps``); the limits
    at start come back at the end, as `PowerCapRun.finish` does. With ``restore``, the
    finder first takes a checkpoint's choice (and must, unless ``restored`` is False)."""
    journal = journal or Path(tempfile.mkdtemp(prefix="cap-journal-")) / "power-limits.json"
    limits = PowerLimits(journal)
    limits.apply(job.boards, None, None)
    try:
        finder = CapFinder(limits, job.meter, **finder_args)  # type: ignore[arg-type]
        if isinstance(job, TableJob):
            finder.clock = job.seen  # the training thread's timestamps, the meter's marks on the boards' time
        if restore is not None:
            assert finder.restore(restore) is restored
        step = 0
        while not finder.done and step < max_steps:
            job.step()
            step += 1
            finder.on_step(step)
        in_force = sum(b.current_mw for b in job.boards) / 1000
        chosen = finder.cap_w(finder.chosen) if finder.chosen is not None else None
        return SearchResult(finder, job, chosen, finder.steps_used, in_force)
    finally:
        limits.restore()
        limits.guard.uninstall()
        job.close()


@contextmanager
def capping(job: TableJob | RealTimeJob, journal: Path | None = None) -> Iterator[None]:
    """`PowerCapRun` caps the job's boards (not the GPUs a driver shows), journalled in ``journal``."""
    journal = journal or Path(tempfile.mkdtemp(prefix="cap-journal-")) / "power-limits.json"
    with (
        mock.patch("energy_core.power.cap.select_boards", lambda gpus: list(job.boards)),
        mock.patch.dict(os.environ, {JOURNAL_ENV: str(journal)}),
    ):
        yield


@dataclass
class StepLog:
    """One step of a run: when it started and ended (the job's clock), its joules, the caps' sum."""

    start: float
    end: float
    joules: float
    cap_w: float


@dataclass
class CapRunResult:
    """What a `PowerCapRun` did over a whole run of a table job."""

    run: PowerCapRun
    job: TableJob
    steps: list[StepLog]
    notices: list[Notice]


def run_capped(
    job: TableJob,
    steps: int,
    total_steps: float | None = None,
    state: dict[str, Any] | None = None,
    ranks: Ranks | None = None,
    resumed_at: int | None = None,
    told_at_start: bool = True,
    **cap: Any,
) -> CapRunResult:
    """Train ``steps`` steps of ``job`` under a real `PowerCapRun` (``watts="auto"`` and ``cap``),
    driven as the adapters drive it, on the job's own meter and clock; every limit is put
    back at the end. ``state``: a checkpoint's `PowerCapRun.state_dict`, loaded first;
    ``ranks``: this process's part in a job (one process by default); ``resumed_at``: the
    optimizer steps a resumed run had taken (the steps are numbered on from there), told at
    train start as HF and `EnergyLoop` do, or only by the first step's number as Lightning does
    (``told_at_start=False``)."""
    log: list[StepLog] = []
    first = 1 if resumed_at is None else resumed_at + 1
    with capping(job):
        run = PowerCapRun(watts="auto", **cap)
        run.load_state_dict(state)
        length = steps if total_steps is None else total_steps
        notices = run.begin(ranks or Ranks(), None, length, meter=job.meter, step=resumed_at if told_at_start else None)
        try:
            for step in range(first, first + steps):
                start = job.clock()
                before = sum(b.exact(start) for b in job.boards)
                cap_w = sum(b.current_mw for b in job.boards) / 1000
                job.step()
                end = job.clock()
                log.append(StepLog(start, end, sum(b.exact(end) for b in job.boards) - before, cap_w))
                notices += run.step(step)[1]
        finally:
            notices += run.finish()
            job.close()
    return CapRunResult(run, job, log, notices)
