"""Background sampler: one thread reads every source at a fixed interval.

Readings go into a bounded ring buffer of rows ``(t, E_0, ..., E_k)`` where ``E_i`` is the
cumulative joules of source i at time t (``time.perf_counter()`` clock). The training
thread only takes timestamps (`Mark`); the sampler fixes each mark's energy at the first
reading after it, by linear interpolation, so marks of any age are exact however long
the run. The buffer serves for extrapolating past the newest reading.

Every driver call is made on the sampler's thread, never the caller's: `Sampler.start`
and `Sampler.stop` wait for a reading at most `DRIVER_WAIT_S`. A read that does not
return (a hung driver call) keeps the thread; a later start does not wait for it again,
and the thread takes up its readings if the call ever returns.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from energy_core import checks
from energy_core.devices import EnergySource, Ledger, deadline
from energy_core.sampling.bounds import RATE_WINDOW_S, Accuracies, MarkBound, mark_bound, settled

DEFAULT_CAPACITY = 16384  # rows: 27 minutes of history at 0.1 s, about 0.5 MB for 3 sources
JITTER = 0.2  # intervals vary by +-20% at random, so polling cannot alias with periodic load
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.001, 60.0  # the sampling intervals allowed


def check_interval(sample_interval_s: Any) -> float:
    """Seconds between hardware reads, in [`MIN_INTERVAL_S`, `MAX_INTERVAL_S`]."""
    return checks.number(
        "sample_interval_s", sample_interval_s, low=MIN_INTERVAL_S, high=MAX_INTERVAL_S, unit=" seconds"
    )


class SampleBuffer:
    """Bounded ring of cumulative-energy rows, safe for one writer and many readers.

    Each row also holds, per source, the error accumulated so far and the part of the total a
    later reading may take back (`Ledger.bound_j`, `Ledger.open_j`): what a span's bound is
    made of (`energy_core.sampling.bounds`).

    Args:
        width: Number of sources (columns of energy).
        capacity: Rows kept; the oldest are overwritten.
    """

    def __init__(self, width: int, capacity: int = DEFAULT_CAPACITY) -> None:
        self._t = np.zeros(capacity)
        self._e = np.zeros((capacity, width))
        self._u = np.zeros((capacity, width))  # accumulated error
        self._o = np.zeros((capacity, width))  # open: may be taken back
        self._capacity = capacity
        self._count = 0  # rows ever written
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return min(self._count, self._capacity)

    @property
    def can_extrapolate(self) -> bool:
        """Two readings or more: a power to extrapolate past the newest one with."""
        return len(self) >= 2

    def append(
        self,
        t: float,
        values: Sequence[float] | np.ndarray,
        accumulated: Sequence[float] | np.ndarray | float = 0.0,
        pending: Sequence[float] | np.ndarray | float = 0.0,
    ) -> None:
        with self._lock:
            slot = self._count % self._capacity
            self._t[slot] = t
            self._e[slot] = values
            self._u[slot] = accumulated
            self._o[slot] = pending
            self._count += 1

    def _ordered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        with self._lock:
            n, start = len(self), self._count % self._capacity
            if self._count <= self._capacity:
                return self._t[:n].copy(), self._e[:n].copy(), self._u[:n].copy(), self._o[:n].copy()
            order = np.r_[start : self._capacity, 0:start]
            return self._t[order], self._e[order], self._u[order], self._o[order]

    def energy_at(self, times_wanted: Sequence[float]) -> list[tuple[np.ndarray, bool]]:
        """Cumulative energy of every source at each of the given times.

        Returns:
            One (joules per source, final) pair per time. ``final`` is False when the
            time lies beyond the newest row: the value is then extrapolated with the power
            of the last `RATE_WINDOW_S` and is refined once a later row arrives. A time
            older than the oldest row kept is clamped to that row.
        """
        times, energy, _, _ = self._ordered()
        return [_interpolate(times, energy, t) for t in times_wanted]

    def read_at(self, times_wanted: Sequence[float], accuracy: Accuracies) -> list[tuple[np.ndarray, MarkBound, bool]]:
        """As `energy_at`, with each time's bound (`mark_bound`), from one snapshot of the rows;
        the flag says whether that bound is settled (every row around the time is in)."""
        times, energy, accumulated, pending = self._ordered()
        return [
            (
                _interpolate(times, energy, t)[0],
                mark_bound(times, energy, accumulated, pending, t, accuracy),
                settled(times, t, accuracy),
            )
            for t in times_wanted
        ]


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


class Mark:
    """A moment on the sampler's clock; its cumulative joules are filled in by the sampler
    thread at the first reading after it (`Mark.joules`), so no history needs keeping. Its
    bound is kept once the readings around it are in (`Mark.bound`), so a mark older than
    the ring buffer (a long fit's start) keeps the bound it had."""

    __slots__ = ("t", "joules", "bound")

    def __init__(self, t: float) -> None:
        self.t = t
        self.joules: np.ndarray | None = None
        self.bound: MarkBound | None = None

    @property
    def final(self) -> bool:
        """Whether a reading after this moment has fixed its energy."""
        return self.joules is not None


class Sampler:
    """Reads all sources every `interval_s` (dithered by +-20%) on a daemon thread.

    Each source is read through its `Ledger` (so a failed, reset or implausible reading is
    a gap, never a false figure or an exception), every row goes into the ring buffer, and
    the marks waiting for a reading (`Sampler.watch_mark`) are resolved by interpolating
    between the two readings around them. Nothing here ever raises into its caller or
    dies: a listener that fails is counted and skipped.

    Args:
        sources: The devices to read.
        interval_s: Seconds between reads.
        capacity: Rows kept in the ring buffer (for extrapolating past the newest reading).
        clock: Time source; ``time.perf_counter`` (the same clock the trackers use).

    Examples:
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
        self.ledgers = [Ledger(source) for source in self.sources]
        self.interval_s = interval_s
        self.clock = clock
        self.buffer = SampleBuffer(len(self.sources), capacity)
        self.accuracy = Accuracies(self.sources)
        self.thread_cpu_s = 0.0  # CPU time the sampler thread has used, for benchmarks
        self.listener_errors = 0
        self.hung = False  # a read has not returned within DRIVER_WAIT_S (a hung driver call); False once it does
        self.last_reading_t = clock()  # when the last reading ended (or the sampler was made)
        # Called with (t, cumulative joules per source) after every reading, on the sampler
        # thread: how budgets notice a crossed limit without any work on the training thread.
        self.listeners: list[Callable[[float, np.ndarray], None]] = []
        self._pending: list[Mark] = []
        self._pending_lock = threading.Lock()
        self._previous: tuple[float, np.ndarray] | None = None
        self._random = random.Random(0)
        self._stop = threading.Event()  # set: the thread takes one last reading, then ends
        self._read_done = threading.Event()  # set after every reading
        self._state = threading.Lock()  # start, stop and the thread's decision to end
        self._running = False  # between start() and stop()
        self._thread: threading.Thread | None = None  # the reading thread, while it lives

    @property
    def newest(self) -> tuple[float, np.ndarray] | None:
        """The newest reading: its time and the cumulative joules of every source (None before the first)."""
        return self._previous

    @property
    def failed_reads(self) -> list[int]:
        """Failed or dropped readings per source (gaps)."""
        return [ledger.gaps for ledger in self.ledgers]

    def watch_mark(self, mark: Mark) -> None:
        """Have the next reading after ``mark`` fix its energy."""
        with self._pending_lock:
            self._pending.append(mark)

    def sample_once(self) -> None:
        """Read every source once, append a row, resolve the marks it passes, tell the listeners."""
        now = self.clock()
        values = np.array([ledger.update(now) for ledger in self.ledgers], dtype=float)
        accumulated = [ledger.bound_j for ledger in self.ledgers]
        self.buffer.append(now, values, accumulated, [ledger.open_j for ledger in self.ledgers])
        with self._pending_lock:
            due = [m for m in self._pending if m.t <= now]
            self._pending = [m for m in self._pending if m.t > now]
        for mark in due:
            mark.joules = self._at(mark.t, now, values)
        self._previous = (now, values)
        self.last_reading_t = self.clock()
        for listener in list(self.listeners):
            try:
                listener(now, values)
            except Exception:  # noqa: BLE001 - a listener's failure must not stop the readings
                self.listener_errors += 1

    def _at(self, t: float, now: float, values: np.ndarray) -> np.ndarray:
        """Cumulative joules at ``t`` (between the previous reading and this one)."""
        if self._previous is None or t <= self._previous[0] or now <= self._previous[0]:
            return values.copy() if self._previous is None else self._previous[1].copy()
        before_t, before = self._previous
        return before + (t - before_t) / (now - before_t) * (values - before)

    def next_interval(self) -> float:
        """Seconds to the next reading: ``interval_s`` +-20% at random (dithering), and never more
        than half the time in which a narrow counter could wrap (`EnergySource.read_within_s`).

        Polled power is sampled, not integrated by the hardware: a load that repeats at
        the sampling period would otherwise be seen at the same phase every time. A counter
        read less often than once a wrap at full power says nothing of the energy in between
        (an AMD CPU's RAPL zone: 13 s at 5 kW), so a long ``sample_interval_s`` would leave it
        unmeasured: such a source is read often enough whatever ``interval_s`` says.
        """
        base = self.interval_s
        for source in self.sources:
            try:
                within = source.read_within_s()
            except Exception:  # noqa: BLE001 - no limit known: the interval asked for
                within = None
            if within is not None:
                base = min(base, max(within / (2.0 * (1.0 + JITTER)), MIN_INTERVAL_S))
        return base * (1.0 + JITTER * (2.0 * self._random.random() - 1.0))

    @property
    def running(self) -> bool:
        """Between `start` and `stop`."""
        return self._running

    def start(self) -> bool:
        """Read on a background thread from now on; wait for its first reading, at most `DRIVER_WAIT_S`
        (a reading before the caller's first mark covers the start, however late the thread
        is scheduled on a busy machine).

        Returns:
            False when that reading did not come in time (a hung driver call), or when the
            thread of an earlier start is still in a read that has not returned: the
            figures then wait for the readings to resume, and the caller goes on.
        """
        with self._state:
            if self._running:
                return True
            self._running = True
            self._stop.clear()
            if self._thread is not None:  # still in a read that has not returned: it goes on from there
                return False
            self._read_done.clear()
            self._thread = threading.Thread(target=self._run, name="energy-sampler", daemon=True)
            self._thread.start()
        if self._read_done.wait(deadline.DRIVER_WAIT_S):
            return True
        self.hung = True
        return False

    def _run(self) -> None:
        next_t = self.clock()
        while True:
            last = self._stop.is_set()  # a reading begun after stop() is the last one
            self._read()
            next_t += self.next_interval()
            delay = next_t - self.clock()
            if delay < 0:  # fell behind (slow read, suspended process): skip missed ticks
                next_t, delay = self.clock(), 0.0
            self.hung = False
            self._read_done.set()
            with self._state:
                if last and not self._running:
                    self._thread = None
                    return
            self._stop.wait(delay)

    def _read(self) -> None:
        try:
            self.sample_once()
        except Exception:  # noqa: BLE001 - the sampler never dies (the ledgers already catch reader errors)
            self.listener_errors += 1
        self.thread_cpu_s = time.thread_time()

    def stop(self) -> bool:
        """Stop the thread after one last reading; waits for it at most `DRIVER_WAIT_S`.

        Returns:
            False when a read did not return in time (a hung driver call): the thread is
            left in it (a daemon), and the figures end at its last reading. A sampler
            known to be hung is not waited for again.
        """
        with self._state:
            if not self._running:
                return True
            self._running = False
            self._stop.set()
            thread = self._thread
        if thread is None:
            return True
        if not self.hung:
            thread.join(deadline.DRIVER_WAIT_S)
        if thread.is_alive():
            self.hung = True
            return False
        return True
