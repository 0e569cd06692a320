"""Synthetic hourly grid intensities of three shapes, seeded: the planner's test series and the
series shipped with the time-shifting study (examples/studies/data/).

* ``solar``: a grid with much solar: about 430 g/kWh at night and 150-250 at 12:00 UTC,
  cloudier days shallower, 4% noise per hour;
* ``wind``: a grid with much wind: 480 g/kWh without wind, down to about 120 when it blows,
  the wind a slow random process (fronts lasting one to three days), 4% noise per hour;
* ``flat``: 380 g/kWh with 1% noise per hour (a grid of hydro or nuclear).

Synthetic: the shapes, not the figures, are typical of such grids.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np

SHAPES = ("solar", "wind", "flat")
EPOCH = datetime(2025, 1, 6, tzinfo=timezone.utc)


def hourly(shape: str, days: int, seed: int = 0) -> list[tuple[datetime, float]]:
    """``days`` of hourly ``(datetime, g_per_kwh)`` from `EPOCH`, of one shape."""
    rng = np.random.default_rng(seed)
    hours = np.arange(24 * days)
    if shape == "solar":
        cloud = np.repeat(rng.uniform(0.45, 1.0, days), 24)  # the share of the sun's power that day
        sun = np.clip(np.cos((hours % 24 - 12) / 12 * math.pi * 1.5), 0.0, None)
        values = 430 - 280 * cloud * sun
        noise = 0.04
    elif shape == "wind":
        wind = np.zeros(len(hours))
        for i in range(1, len(hours)):  # a mean-reverting random walk: fronts of a day or more
            wind[i] = wind[i - 1] + 0.03 * (0.45 - wind[i - 1]) + rng.normal(0, 0.06)
        values = 480 - 360 * np.clip(wind, 0.0, 1.0)
        noise = 0.04
    elif shape == "flat":
        values = np.full(len(hours), 380.0)
        noise = 0.01
    else:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    values = values * (1 + rng.uniform(-noise, noise, len(hours)))
    return [(EPOCH + timedelta(hours=int(h)), round(float(v), 1)) for h, v in zip(hours, values)]


def write_csv(path, points: list[tuple[datetime, float]]) -> None:
    """The series in the format of ``carbon_intensity_series``."""
    rows = "".join(f"{t.isoformat()},{v:g}\n" for t, v in points)
    path.write_text("datetime,carbon_intensity_g_per_kwh\n" + rows)


def noisy(points: list[tuple[datetime, float]], error: float, seed: int) -> list[tuple[datetime, float]]:
    """A forecast of ``points`` off by up to ``error`` (uniform, each hour on its own)."""
    rng = np.random.default_rng(seed)
    factors = rng.uniform(1 - error, 1 + error, len(points))
    return [(t, float(v * f)) for (t, v), f in zip(points, factors)]
