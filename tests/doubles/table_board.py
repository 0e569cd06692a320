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
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from energy_core.devices import EnergySource, GpuBoard, LimitRange, Reading, SourceInfo
from energy_core.power.finder.finder import CapFinder
from energy_core.power.limits import PowerLimits
from energy_core.sampling.meter import EnergyMeter
from energy_core.sampling.sampler import Sampler
from tests.doubles.sim_nvml import ManualClock


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
    """One simulated GPU following a profile: a power limit to set, and an energy counter."""

    def __init__(self, profile: Profile, index: int = 0, counter_period_s: float = 0.0) -> None:
        self.vendor, self.index, self.uuid = "sim", index, f"GPU-table-{index}"
        self.info = SourceInfo(f"gpu{index}", "gpu", "table")
        self.profile = profile
        self.min_mw, self.max_mw = int(min(profile.caps_w) * 1000), int(max(profile.caps_w) * 1000)
        self.current_mw = self.max_mw
        self.counter_period_s = counter_period_s
        self.sets: list[int] = []
        self._t = [0.0]  # segment ends and cumulative joules there
        self._j = [0.0]

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
        """A step from t0 to t1 (virtual seconds) that used ``joules`` evenly."""
        if t0 > self._t[-1]:
            self._t.append(t0)
            self._j.append(self._j[-1])
        self._t.append(t1)
        self._j.append(self._j[-1] + joules)

    def read(self, now: float) -> Reading:
        if self.counter_period_s:
            now = (now // self.counter_period_s) * self.counter_period_s
        return Reading(joules=float(np.interp(now, self._t, self._j)))


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
    clock: ManualClock = field(default_factory=lambda: ManualClock(0.0))

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.meter = EnergyMeter(devices=["gpu"], sample_interval_s=self.sample_interval_s, clock=self.clock)
        self.meter.sources = list(self.boards)
        self.meter.sampler = self.sampler = Sampler(self.boards, self.sample_interval_s, clock=self.clock)
        self.sampler.sample_once()
        self._next_read = self.clock() + self.sampler.next_interval()
        self.limit_log: list[tuple[float, float]] = []  # (step start, sum of the caps in force in W)

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
            self._next_read += self.sampler.next_interval()
        self.clock.now = t0 + pace


@dataclass
class SearchResult:
    """What a search did on a job: the cap kept, the steps it took, the finder itself."""

    finder: CapFinder
    job: TableJob
    chosen_w: float | None
    steps: int
    limit_at_end_w: float


def run_search(
    job: TableJob, max_steps: int = 5000, journal: Path | None = None, **finder_args: object
) -> SearchResult:
    """Run `CapFinder` on the job's boards until it is done (or ``max_steps``); the limits
    at start come back at the end, as `PowerCapRun.finish` does."""
    journal = journal or Path(tempfile.mkdtemp(prefix="cap-journal-")) / "power-limits.json"
    limits = PowerLimits(journal)
    limits.apply(job.boards, None, None)
    try:
        finder = CapFinder(limits, job.meter, **finder_args)  # type: ignore[arg-type]
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
