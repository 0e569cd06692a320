"""Known power traces with exact integrals, to drive the simulated hardware."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


class Trace:
    """Power in watts as a function of seconds since the trace started."""

    def power(self, t: float) -> float:
        raise NotImplementedError

    def energy(self, t: float) -> float:
        """Exact joules from 0 to t."""
        raise NotImplementedError

    def between(self, t0: float, t1: float) -> float:
        return self.energy(t1) - self.energy(t0)


@dataclass
class Constant(Trace):
    watts: float

    def power(self, t: float) -> float:
        return self.watts

    def energy(self, t: float) -> float:
        return self.watts * max(t, 0.0)


@dataclass
class Square(Trace):
    """``high`` for the first half of each period, ``low`` for the second."""

    low: float
    high: float
    period: float

    def power(self, t: float) -> float:
        return self.high if (t % self.period) < self.period / 2 else self.low

    def energy(self, t: float) -> float:
        t = max(t, 0.0)
        full, rest = divmod(t, self.period)
        half = self.period / 2
        per_period = (self.high + self.low) * half
        return full * per_period + self.high * min(rest, half) + self.low * max(rest - half, 0.0)


@dataclass
class Ramp(Trace):
    """Linear from ``start`` to ``end`` watts over ``duration`` s, then flat."""

    start: float
    end: float
    duration: float

    def power(self, t: float) -> float:
        f = min(max(t, 0.0) / self.duration, 1.0)
        return self.start + (self.end - self.start) * f

    def energy(self, t: float) -> float:
        t = max(t, 0.0)
        ramp_t = min(t, self.duration)
        slope = (self.end - self.start) / self.duration
        return self.start * ramp_t + 0.5 * slope * ramp_t**2 + self.end * max(t - self.duration, 0.0)


@dataclass
class Noisy(Trace):
    """A base level plus deterministic pseudo-noise, piecewise constant over ``step`` s."""

    base: float
    amplitude: float
    step: float = 0.007

    def _level(self, k: int) -> float:
        return self.base + self.amplitude * math.sin(k * 12.9898) * math.cos(k * 78.233)

    def power(self, t: float) -> float:
        return self._level(int(max(t, 0.0) // self.step))

    def energy(self, t: float) -> float:
        t = max(t, 0.0)
        k = int(t // self.step)
        return sum(self._level(i) for i in range(k)) * self.step + self._level(k) * (t - k * self.step)


@dataclass
class Switched(Trace):
    """Power that changes when the test says (a job that trains, pauses and trains again):
    ``watts`` from 0, then each `set` from its second on.

    `switch` sets it from now on ``clock`` (the simulated driver's seconds), taking the time
    under the lock the readings take too: a reading is never older than a switch it missed.
    """

    watts: float
    clock: Callable[[], float] | None = None
    changes: list[tuple[float, float]] = field(default_factory=list)  # (from second, watts), in order
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, t: float, watts: float) -> None:
        with self.lock:
            if watts != (self.changes[-1][1] if self.changes else self.watts):
                self.changes.append((t, watts))

    def switch(self, watts: float) -> None:
        assert self.clock is not None
        with self.lock:
            if watts != (self.changes[-1][1] if self.changes else self.watts):
                self.changes.append((self.clock(), watts))

    def power(self, t: float) -> float:
        with self.lock:
            return next((w for start, w in reversed(self.changes) if start <= t), self.watts)

    def energy(self, t: float) -> float:
        t = max(t, 0.0)
        with self.lock:
            points = [(0.0, self.watts), *((s, w) for s, w in self.changes if s < t)]
        ends = [s for s, _ in points[1:]] + [t]
        return sum(w * (end - s) for (s, w), end in zip(points, ends))


@dataclass
class Steps(Trace):
    """Piecewise constant: ``levels[i]`` watts for ``durations[i]`` seconds, in turn, the last level after."""

    levels: list[float]
    durations: list[float]

    def power(self, t: float) -> float:
        for level, seconds in zip(self.levels, self.durations):
            if t < seconds:
                return level
            t -= seconds
        return self.levels[-1]

    def energy(self, t: float) -> float:
        t, total = max(t, 0.0), 0.0
        for level, seconds in zip(self.levels, self.durations):
            if t <= seconds:
                return total + level * t
            total, t = total + level * seconds, t - seconds
        return total + self.levels[-1] * t
