"""Simulated GPU boards, vendor-neutral: what a board draws, its limits and its faults.

A `SimGpu` says what a board is and does (its power trace, counter period, limits in
mW, faults); a `SimDriver` holds boards and a clock and answers what any vendor's
library would be asked (energy so far, power now, the limit in force). The vendors'
simulations (`sim_nvml`, `sim_amdsmi`) turn these answers into their library's calls,
units and errors, so one board spec drives either vendor.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.doubles.power_traces import Constant, Trace

ARCH_PASCAL, ARCH_VOLTA, ARCH_AMPERE, ARCH_HOPPER = 4, 5, 7, 9


@dataclass
class SimGpu:
    uuid: str
    trace: Trace = field(default_factory=lambda: Constant(300.0))
    name: str = ""  # "" gives each vendor's default model
    arch: int = ARCH_HOPPER  # NVML's architecture: before Volta, no energy counter
    compute_capability: tuple[int, int] | None = None  # None: the arch's usual one; (8, 0) is GA100 (A100, A30)
    energy_counter: bool = True  # False: the board has no energy counter (either vendor)
    counter_bits: int = 64  # the width of the energy counter (AMD: 32 on some Radeon boards)
    counter_period_s: float = 0.02
    power_average_s: float = 1.0  # 0 means instantaneous readings
    base_mj: int = 123_456_789  # energy since driver load before the test began
    mig_uuids: tuple[str, ...] = ()
    fail_between: tuple[float, float] | None = None  # seconds since start: reads raise "GPU lost"
    # Field faults (seconds since start). A driver reload restarts the counter from 0; a
    # corrupt read adds 1e9 J (power: the given mW); a broken binding raises a non-library
    # exception; a hung call blocks until `release` is set.
    reset_at: float | None = None
    spike_between: tuple[float, float] | None = None
    power_mw_between: tuple[float, float, int] | None = None
    raise_between: tuple[float, float, type] | None = None
    hang_after: float | None = None
    release: threading.Event = field(default_factory=threading.Event)
    calls: int = 0
    default_limit_mw: int = 700_000
    min_limit_mw: int = 200_000
    max_limit_mw: int = 700_000
    limit_history: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, mW)


SPIKE_J = 1e9  # a corrupt counter read jumps by this much


class SimDriver:
    """The boards of one machine as any vendor's driver sees them.

    Args:
        gpus: The boards; an empty list behaves like a machine with the driver but no GPU.
        library: False behaves like a machine without the vendor's library (or driver).
        clock: Seconds; defaults to ``time.perf_counter`` (the meters' clock).
        root: False: setting limits is refused, as for a normal user.
        state_file: The driver's limits, shared by processes (they outlive a process).
    """

    vendor = ""

    def __init__(
        self,
        gpus: list[SimGpu],
        library: bool = True,
        clock: Callable[[], float] = time.perf_counter,
        root: bool = True,
        state_file: Path | None = None,
    ):
        self.gpus = gpus
        self.library = library
        self.clock = clock
        self.t0 = clock()
        self.initialised = False
        self.root = root
        self.state_file = state_file
        if state_file is not None and not state_file.exists():
            state_file.write_text(json.dumps({g.uuid: g.default_limit_mw for g in gpus}))

    # -- the driver's power limits, which outlive a process --------------------
    def limit_mw(self, gpu: SimGpu) -> int:
        """The limit in force on a board, in mW (what an administrator's tool would show)."""
        if self.state_file is not None:
            return int(json.loads(self.state_file.read_text())[gpu.uuid])
        return gpu.limit_history[-1][1] if gpu.limit_history else gpu.default_limit_mw

    def set_limit_mw(self, gpu: SimGpu, mw: int) -> None:
        """Set a board's limit behind the library's back (an administrator, another run)."""
        self._store_limit(gpu, mw)

    def _store_limit(self, gpu: SimGpu, mw: int) -> None:
        gpu.limit_history.append((self.elapsed(), mw))
        if self.state_file is not None:
            limits = json.loads(self.state_file.read_text())
            limits[gpu.uuid] = mw
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(limits))
            tmp.replace(self.state_file)

    def _capped_energy(self, gpu: SimGpu, t: float) -> float:
        """Joules from 0 to t: a constant demand is clipped by the limit in force."""
        if not isinstance(gpu.trace, Constant) or not gpu.limit_history:
            return gpu.trace.energy(t)
        points = [(0.0, gpu.default_limit_mw), *gpu.limit_history, (t, 0)]
        joules = 0.0
        for (start, mw), (end, _) in zip(points, points[1:]):
            if end > start and start < t:
                joules += min(gpu.trace.watts, mw / 1000.0) * (min(end, t) - start)
        return joules

    # -- helpers ------------------------------------------------------------
    def elapsed(self) -> float:
        return self.clock() - self.t0

    def exact_joules(self, gpu: SimGpu, t0_abs: float, t1_abs: float) -> float:
        """The true energy of a board between two clock readings."""
        return self._capped_energy(gpu, t1_abs - self.t0) - self._capped_energy(gpu, t0_abs - self.t0)

    def lost(self) -> Exception:
        """The library's error for a board that fell off the bus."""
        raise NotImplementedError

    def _check(self, gpu: SimGpu) -> None:
        """Count a call and raise or hang as the board's faults say."""
        gpu.calls += 1
        t = self.elapsed()
        if gpu.fail_between is not None and gpu.fail_between[0] <= t < gpu.fail_between[1]:
            raise self.lost()
        if gpu.raise_between is not None and gpu.raise_between[0] <= t < gpu.raise_between[1]:
            raise gpu.raise_between[2]("simulated failure of the binding")
        if gpu.hang_after is not None and t >= gpu.hang_after:
            gpu.release.wait()  # a driver call that does not return

    def counter_joules(self, gpu: SimGpu) -> tuple[float, bool]:
        """(joules the energy counter shows now, whether it counts since driver load).

        The counter advances only every ``counter_period_s``; after ``reset_at`` it counts
        from 0 again (a driver reload); inside ``spike_between`` one read jumps by `SPIKE_J`.
        """
        t = self.elapsed()
        updated = math.floor(t / gpu.counter_period_s) * gpu.counter_period_s
        if gpu.spike_between is not None and gpu.spike_between[0] <= t < gpu.spike_between[1]:
            return self._capped_energy(gpu, updated) + SPIKE_J, True
        if gpu.reset_at is not None and t >= gpu.reset_at:
            return self._capped_energy(gpu, updated) - self._capped_energy(gpu, gpu.reset_at), False
        return self._capped_energy(gpu, updated), True

    def power_w(self, gpu: SimGpu, averaged: bool) -> float:
        """The board's power now: a ``power_average_s`` average, or instantaneous."""
        t = self.elapsed()
        if gpu.power_mw_between is not None and gpu.power_mw_between[0] <= t < gpu.power_mw_between[1]:
            return gpu.power_mw_between[2] / 1000.0
        if averaged and gpu.power_average_s > 0:
            window = min(gpu.power_average_s, t) or 1e-9
            return gpu.trace.between(t - window, t) / window
        return gpu.trace.power(t)


class ManualClock:
    """A clock the test advances by hand, for deterministic sampler tests."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
