"""A grid compressed in time for end-to-end runs: one "hour" of the intensity series lasts a
fraction of a second, and a simulated GPU draws its busy power only while a step computes.

`DIRTY_CLEAN` starts with `CLEAN_AT` dirty hours (4 s: long enough for a framework to start
and measure its pace on a loaded machine), then twelve clean ones, then dirty again: a job of
under an hour (twelve times slower on a loaded machine still fits) that may pause should wait
for the clean hours and train in them.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tests.doubles.power_traces import Switched
from tests.doubles.sim_nvml import SimGpu
from tests.helpers.grid_series import write_csv

HOUR_S = 0.5  # one hour of the series, in seconds
DIRTY, CLEAN = 600.0, 60.0
CLEAN_AT = 8  # hours
DIRTY_CLEAN = [DIRTY] * CLEAN_AT + [CLEAN] * 12 + [DIRTY] * 6
DEADLINE_H = 26
BUSY_W, IDLE_W = 300.0, 30.0


def compressed_series(path: Path, values: list[float] = DIRTY_CLEAN, hour_s: float = HOUR_S) -> float:
    """Write the series from now on, one value per ``hour_s``; returns its start (unix time)."""
    start = time.time()
    begin = datetime.fromtimestamp(start, timezone.utc)
    write_csv(path, [(begin + timedelta(seconds=i * hour_s), v) for i, v in enumerate(values)])
    return start


def busy_gpu(sim_gpus) -> Switched:
    """One simulated GPU at `IDLE_W`; ``trace.switch(BUSY_W)`` while a step computes."""
    trace = Switched(IDLE_W)
    driver = sim_gpus(SimGpu("GPU-1", trace, counter_period_s=0.01, power_average_s=0.0))
    trace.clock = driver.elapsed
    return trace


def deadline_after(start: float, hours: float, hour_s: float = HOUR_S) -> datetime:
    return datetime.fromtimestamp(start + hours * hour_s, timezone.utc)


def ends_by(plan: dict, deadline: datetime) -> bool:
    """Whether a record's plan fits and its last training run ends by ``deadline``: what a time shift
    decides. Whether the run then lands in time depends on the pace the machine keeps (a busy machine
    trains slower than the pace measured when it planned), which a test must not assert."""
    return bool(plan["fits"]) and max(end for _, end in plan["runs"]) <= deadline.timestamp()
