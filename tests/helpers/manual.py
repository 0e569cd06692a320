"""A tracker on simulated hardware driven by a manual clock: exact figures, no sleeping.

The sampler thread takes its first reading and then idles (a 60 s interval); the test
advances the clock and takes every other reading itself (`ManualRun.advance`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from energy_core import EnergyTracker
from tests.doubles.sim_nvml import ManualClock


@dataclass
class ManualRun:
    tracker: EnergyTracker
    clock: ManualClock

    def advance(self, seconds: float, every: float = 0.1) -> None:
        """Let ``seconds`` pass, with a reading every ``every`` seconds."""
        for _ in range(round(seconds / every)):
            self.clock.advance(every)
            self.tracker.meter.sampler.sample_once()


def manual_run(clock: ManualClock, **options: object) -> ManualRun:
    """A started fit of a tracker reading the simulated hardware on ``clock``."""
    tracker = EnergyTracker(sample_interval_s=60, **options)  # type: ignore[arg-type]
    tracker.meter.clock = clock
    tracker.start_fit(step=0)
    deadline = time.monotonic() + 30
    while len(tracker.meter.sampler.buffer) == 0 and time.monotonic() < deadline:
        time.sleep(0.001)  # the sampler thread's own first reading
    return ManualRun(tracker, clock)
