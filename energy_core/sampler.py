"""Background sampler: one thread reads every source at a fixed interval.

Readings go into a bounded ring buffer of rows ``(t, E_0, ..., E_k)`` where ``E_i`` is the
cumulative joules of source i at time t (``time.perf_counter()`` clock). The energy of
any interval is derived from these cumulative readings by linear interpolation, so the
training thread never touches NVML or sysfs: it only takes timestamps.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from energy_core.devices import EnergySource

DEFAULT_CAPACITY = 16384  # rows: 27 minutes of history at 0.1 s, about 0.5 MB for 3 sources
RATE_WINDOW_S = 1.0  # power used to extrapolate past the newest row is averaged over this
JITTER = 0.2  # intervals vary by +-20% at random, so polling cannot alias with periodic load


class SampleBuffer:
    """Bounded ring of cumulative-energy rows, safe for one writer and many readers.

    Args:
        width: Number of sources (columns of energy).
        capacity: Rows kept; the oldest are overwritten.
    """

    def __init__(self, width: int, capacity: int = DEFAULT_CAPACITY) -> None:
        self._t = np.zeros(capacity)
        self._e = np.zeros((capacity, width))
        self._capacity = capacity
        self._count = 0  # rows ever written
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return min(self._count, self._capacity)

    def append(self, t: float, values: Sequence[float]) -> None:
        with self._lock:
            slot = self._count % self._capacity
            self._t[slot] = t
            self._e[slot] = values
            self._count += 1

    def _ordered(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            n, start = len(self), self._count % self._capacity
            if self._count <= self._capacity:
                return self._t[:n].copy(), self._e[:n].copy()
            order = np.r_[start : self._capacity, 0:start]
            return self._t[order], self._e[order]

    def energy_at(self, times_wanted: Sequence[float]) -> list[tuple[np.ndarray, bool]]:
        """Cumulative energy of every source at each of the given times.

        Returns:
            One (joules per source, final) pair per time. ``final`` is False when the
            time lies beyond the newest row: the value is then extrapolated with the power
            of the last `RATE_WINDOW_S` and is refined once a later row arrives. A time
            older than the oldest row kept is clamped to that row.
        """
        times, energy = self._ordered()
        return [_interpolate(times, energy, t) for t in times_wanted]


def _interpolate(times: np.ndarray, energy: np.ndarray, t: float) -> tuple[np.ndarray, bool]:
    if len(times) == 0:
        return np.zeros(energy.shape[1]), False
    if t >= times[-1]:
        back = min(int(np.searchsorted(times, times[-1] - RATE_WINDOW_S)), len(times) - 2)
        if back < 0 or times[-1] <= times[back]:
            return energy[-1].copy(), bool(t == times[-1])
        power = (energy[-1] - energy[back]) / (times[-1] - times[back])
        return energy[-1] + power * (t - times[-1]), bool(t == times[-1])
    if t <= times[0]:
        return energy[0].copy(), True
    i = int(np.searchsorted(times, t))  # times[i-1] < t <= times[i]
    w = (t - times[i - 1]) / (times[i] - times[i - 1])
    return energy[i - 1] + w * (energy[i] - energy[i - 1]), True


class Sampler:
    """Reads all sources every `interval_s` (dithered by +-20%) on a daemon thread.

    Args:
        sources: The devices to read.
        interval_s: Seconds between reads.
        capacity: Rows kept in the ring buffer.
        clock: Time source; ``time.perf_counter`` (the same clock the trackers use).

    Example:
        >>> sampler = Sampler(sources, 0.1)   # doctest: +SKIP
        >>> sampler.start(); ...; sampler.stop()   # doctest: +SKIP
    """

    def __init__(
        self,
        sources: Sequence[EnergySource],
        interval_s: float,
        capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.sources = list(sources)
        self.interval_s = interval_s
        self.clock = clock
        self.buffer = SampleBuffer(len(self.sources), capacity)
        self.failed_reads = [0] * len(self.sources)
        self.thread_cpu_s = 0.0  # CPU time the sampler thread has used, for benchmarks
        # Called with (t, cumulative joules per source) after every reading, on the sampler
        # thread: how budgets notice a crossed limit without any work on the training thread.
        self.listeners: list[Callable[[float, Sequence[float]], None]] = []
        self._last = [0.0] * len(self.sources)
        self._random = random.Random(0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_once(self) -> None:
        """Read every source once and append a row (a failed read repeats the last value)."""
        now = self.clock()
        for i, source in enumerate(self.sources):
            value = source.read_j(now)
            if value is None:
                self.failed_reads[i] += 1
            else:
                self._last[i] = value
        self.buffer.append(now, self._last)
        for listener in self.listeners:
            listener(now, self._last)

    def next_interval(self) -> float:
        """Seconds to the next reading: ``interval_s`` +-20% at random (dithering).

        Polled power is sampled, not integrated by the hardware: a load that repeats at
        the sampling period would otherwise be seen at the same phase every time.
        """
        return self.interval_s * (1.0 + JITTER * (2.0 * self._random.random() - 1.0))

    def start(self) -> None:
        """Take a first reading now, then keep reading on a background thread."""
        if self._thread is not None:
            return
        self.sample_once()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="energy-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_t = self.clock()
        while True:
            next_t += self.next_interval()
            delay = next_t - self.clock()
            if delay < 0:  # fell behind (slow read, suspended process): skip missed ticks
                next_t = self.clock()
                delay = 0.0
            if self._stop.wait(delay):
                break
            self.sample_once()
            self.thread_cpu_s = time.thread_time()

    def stop(self) -> None:
        """Stop the thread and take a last reading, so the buffer covers up to now."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.sample_once()
