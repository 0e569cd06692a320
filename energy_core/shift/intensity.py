"""Intensity: a grid intensity over time as a step function, what the planner reads.

Built from anything ``carbon_intensity_series`` accepts (a CSV path, parsed by
`energy_core.carbon.factor.parse_series`), a recorded `Series`, or a list of
``(datetime, g_per_kwh)``. Each value holds from its time until the next; before the first
row the first value holds, after the last row the last one (as for a `Series`).

Examples:
    >>> from datetime import datetime, timezone
    >>> hour = lambda h: datetime(2026, 6, 1, h, tzinfo=timezone.utc)
    >>> curve = Intensity.of([(hour(0), 400.0), (hour(1), 100.0)])
    >>> curve.mean(hour(0).timestamp() + 1800, hour(1).timestamp() + 1800)
    250.0
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from numbers import Real
from typing import Any

import numpy as np

from energy_core.carbon.factor import MAX_G_PER_KWH, Series, parse_series

NAME = "intensity"
DEFAULT_STEP_S = 3600.0  # the step of a series of one row: grid data are hourly
GRID_DECIMALS = 3  # series times are compared to the millisecond


@dataclass(frozen=True)
class Intensity:
    """A grid intensity over time (g CO2e/kWh), each value holding until the next.

    Args:
        times: Unix times, strictly increasing.
        values: The value from each time on, in [0, `MAX_G_PER_KWH`].
        source: Where it came from (a file's name, "a list", a forecast), for messages.
    """

    times: tuple[float, ...]
    values: tuple[float, ...]
    source: str = "a list"

    @classmethod
    def of(cls, intensity: Any, name: str = NAME) -> Intensity:
        """The intensity from a CSV path, a `Series`, an `Intensity` or a list of ``(datetime, g_per_kwh)``
        (the datetime may be an ISO 8601 string with its offset).

        Raises:
            TypeError: naming the argument, for anything else.
            ValueError: naming the argument, for an empty list, a naive datetime, a value
                outside [0, `MAX_G_PER_KWH`] or a moment given twice (a file: see `parse_series`).
        """
        if isinstance(intensity, Intensity):
            return intensity
        if isinstance(intensity, Series):
            return cls(tuple(intensity.times), tuple(intensity.values), os.path.basename(intensity.path))
        if isinstance(intensity, (str, os.PathLike)):
            times, values = parse_series(intensity, name, MAX_G_PER_KWH)
            return cls(tuple(times), tuple(values), os.path.basename(os.fspath(intensity)))
        if isinstance(intensity, Sequence) and not isinstance(intensity, (bytes, bytearray)):
            return cls._of_points(intensity, name)
        raise TypeError(
            f"{name} must be a CSV series path or a list of (datetime, g_per_kwh), got {type(intensity).__name__}"
        )

    @classmethod
    def _of_points(cls, points: Sequence[Any], name: str) -> Intensity:
        if not points:
            raise ValueError(f"{name} is an empty list: give at least one (datetime, g_per_kwh)")
        found: dict[float, float] = {}
        for i, point in enumerate(points):
            if not isinstance(point, Sequence) or isinstance(point, (str, bytes)) or len(point) != 2:
                raise TypeError(f"{name}[{i}] must be a pair (datetime, g_per_kwh), got {point!r}")
            stamp, value = point
            if isinstance(stamp, str):  # as stored in JSON (an HF callback's arguments)
                try:
                    stamp = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
                except ValueError:
                    raise ValueError(f"{name}[{i}] must start with an ISO 8601 time, got {stamp!r}") from None
            if not isinstance(stamp, datetime):
                raise TypeError(f"{name}[{i}] must start with a datetime, got {type(stamp).__name__}")
            if stamp.tzinfo is None or stamp.utcoffset() is None:
                raise ValueError(f"{name}[{i}] has a naive datetime ({stamp.isoformat()}): give its UTC offset")
            if isinstance(value, bool) or not isinstance(value, Real):
                raise TypeError(f"{name}[{i}] must hold a number of g/kWh, got {type(value).__name__}")
            if not (math.isfinite(value) and 0 <= float(value) <= MAX_G_PER_KWH):
                raise ValueError(f"{name}[{i}] must hold g/kWh in [0, {MAX_G_PER_KWH:g}], got {value!r}")
            moment = stamp.timestamp()
            if moment in found:
                raise ValueError(f"{name}[{i}] repeats the moment {stamp.isoformat()}: which value holds is ambiguous")
            found[moment] = float(value)
        times = sorted(found)
        return cls(tuple(times), tuple(found[t] for t in times))

    # ----------------------------------------------------------------- reading
    def at(self, t: float) -> float:
        """The value in force at unix time ``t``."""
        return self.values[max(0, bisect.bisect_right(self.times, t) - 1)]

    def integral(self, t0: float, t1: float) -> float:
        """The integral of the intensity from ``t0`` to ``t1`` (g/kWh x s; 0 when ``t1 <= t0``)."""
        if t1 <= t0:
            return 0.0
        inside = self.times[bisect.bisect_right(self.times, t0) : bisect.bisect_left(self.times, t1)]
        edges = [t0, *inside, t1]
        return sum(self.at(a) * (b - a) for a, b in zip(edges, edges[1:]))

    def mean(self, t0: float, t1: float) -> float:
        """The mean intensity from ``t0`` to ``t1`` (the value at ``t0`` for an empty span)."""
        return self.integral(t0, t1) / (t1 - t0) if t1 > t0 else self.at(t0)

    def covers(self, t0: float, t1: float) -> bool:
        """Whether ``t0`` to ``t1`` lies within the rows (the last holding for one more step)."""
        return self.times[0] <= t0 and t1 <= self.times[-1] + self.step_s()

    def step_s(self) -> float:
        """The series' step: the greatest common step of its rows, to the millisecond (an hour for one row)."""
        if len(self.times) < 2:
            return DEFAULT_STEP_S
        gaps = np.rint(np.diff(np.asarray(self.times)) * 10**GRID_DECIMALS).astype(np.int64)
        return max(1, int(np.gcd.reduce(gaps))) / 10**GRID_DECIMALS
