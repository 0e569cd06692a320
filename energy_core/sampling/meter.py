"""EnergyMeter: the devices of this process plus the sampler, behind time marks.

The training thread only ever calls `EnergyMeter.mark` (a ``perf_counter()`` timestamp);
energy between marks is computed later from the sampled cumulative readings, at logging
boundaries. Opening discovers devices and starts the sampler thread; closing stops it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from energy_core import devices as device_layer
from energy_core.devices import EnergySource, deadline, parse_devices
from energy_core.devices.cpu_estimate import Process
from energy_core.devices.crosscheck import Disagreement
from energy_core.notices import Notice
from energy_core.sampling.bounds import MarkBound, restated
from energy_core.sampling.sampler import Mark, Sampler, check_interval

SILENT_S = 5.0  # a source without a good reading for this long (and 10 readings) is reported
SILENT_READINGS = 10


class EnergyMeter:
    """Measures this process's devices in the background.

    Args:
        devices: ``"auto"`` (every GPU visible to the process, the CPU package through
            RAPL or else an estimate, DRAM through RAPL where present) or a list drawn
            from ``"gpu"``, ``"cpu"``, ``"dram"``.
        sample_interval_s: Seconds between reads of the hardware, in [0.001, 60].
        cuda_indices: Restrict GPUs to these visible-device indices (one DDP rank's GPU).
        node_devices: Measure CPU and DRAM (False on all but one rank of a host).
        rapl_root: Powercap directory, for tests; defaults to ``/sys/class/powercap``.
        clock: Seconds, for marks and readings; ``time.perf_counter`` (a test may drive time).
        cpu_tdp_w: The CPU socket's TDP for the CPU estimate, instead of codecarbon's table.

    Examples:
        >>> meter = EnergyMeter(devices=["gpu"])
        >>> notices = meter.open()            # doctest: +SKIP
        >>> start = meter.mark(); ...; joules = meter.joules(start, meter.mark())   # doctest: +SKIP
        >>> meter.close()                     # doctest: +SKIP
    """

    def __init__(
        self,
        devices: str | Sequence[str] = "auto",
        sample_interval_s: float = 0.1,
        cuda_indices: Sequence[int] | None = None,
        node_devices: bool = True,
        rapl_root: Path | None = None,
        clock: Callable[[], float] = time.perf_counter,
        cpu_tdp_w: float | None = None,
    ) -> None:
        self.kinds, self.explicit = parse_devices(devices)
        self.sample_interval_s = check_interval(sample_interval_s)
        self.cuda_indices = cuda_indices
        self.node_devices = node_devices
        self.host_peers: tuple[Process, ...] = ()  # the host's other ranks (`assign`)
        self.rapl_root = rapl_root
        self.clock = clock
        self.cpu_tdp_w = cpu_tdp_w
        self.sources: list[EnergySource] = []
        self.sampler: Sampler | None = None
        self.notices: list[Notice] = []
        self._silent: set[str] = set()
        self._hung_until: float | None = None  # when a `close` that left a hung read behind was called
        self._opened_at = 0.0  # when the run now measured (or the last one) opened: a stall counts from here

    def assign(self, gpu_indices: Sequence[int] | None, node_devices: bool, host_peers: Sequence[Process] = ()) -> None:
        """Measure only these visible GPUs (None: all) and, or not, the node's CPU and DRAM (with
        ``host_peers``, the host's other ranks, where they are estimated from process time).

        Set before `open`: how a rank of a multi-process job takes its share of the devices.
        """
        self.cuda_indices = gpu_indices
        self.node_devices = node_devices
        self.host_peers = tuple(host_peers)

    def open(self) -> list[Notice]:
        """Discover devices (first call only) and start sampling. Returns the notices.

        Neither waits for a driver call longer than `DRIVER_WAIT_S`: a device whose
        discovery hangs is left out (a notice says so), and a sampler whose reading hangs
        starts without it (a notice, once, and the figures resume with the readings).
        """
        if self.sampler is None:
            self.sources, self.notices = device_layer.discover(
                self.kinds,
                self.explicit,
                self.cuda_indices,
                self.node_devices,
                self.rapl_root,
                self.cpu_tdp_w,
                self.host_peers,
            )
            self.sampler = Sampler(self.sources, self.sample_interval_s, clock=self.clock)
        if not self.sampler.running:  # a run of its own: an earlier one's stall is not its (a stage in a fit's is)
            self._opened_at, self._hung_until = self.clock(), None
        if self.sampler.start() or "hung" in self._silent:
            return self.notices
        self._silent |= {"hung", "sampler"}  # said once, here, rather than again at the next window or the end
        text = (
            f"A hardware read did not return within {deadline.DRIVER_WAIT_S:g} s of the start of measurement (a hung "
            "driver call?): training goes on, and the figures wait for the readings to resume."
        )
        return [*self.notices, Notice("warn", text)]

    def close(self) -> list[Notice]:
        """Stop the sampler thread (after one last reading) and end every watch. Safe to call twice.

        Waits `DRIVER_WAIT_S` at most: a driver call that never returns is left behind, and
        the notice returned says so (once).
        """
        if self.sampler is None or not self.sampler.running:
            return []
        closed_at = self.clock()
        stopped = self.sampler.stop()
        self.sampler.listeners.clear()
        if not stopped:
            self._hung_until = closed_at  # not the end of the wait for the read: measurement ended here
        if stopped or "hung" in self._silent:
            return []
        self._silent.add("hung")
        text = (
            f"A hardware read did not return within {deadline.DRIVER_WAIT_S:g} s of the end of measurement (a hung "
            "driver call?): it was left behind, and the figures since the last reading before it are estimated "
            "at the last measured power (the summary's unmeasured seconds and estimated share say how much)."
        )
        return [Notice("warn", text)]

    def mark(self) -> Mark:
        """Now, as a mark; the sampler fixes its energy at its next reading. One clock call."""
        mark = Mark(self.clock())
        if self.sampler is not None:  # fixed by the next reading, whoever takes it
            self.sampler.watch_mark(mark)
        return mark

    def newest(self) -> Mark | None:
        """The moment of the newest reading, as a mark that reading fixed (None before the first): the
        energy up to it is measured, never extrapolated."""
        found = self.sampler.newest if self.sampler is not None else None
        if found is None:
            return None
        mark = Mark(found[0])
        mark.joules = found[1].copy()
        return mark

    def joules(self, *marks: Mark) -> list[np.ndarray]:
        """Cumulative joules of every source at each mark.

        A mark a reading has passed is exact (fixed by the sampler); a mark beyond the
        newest reading gets a value extrapolated at the last second's power now, and its
        exact value once the next reading comes (see `resolvable`).
        """
        width = len(self.sources)
        if self.sampler is None or width == 0:
            return [np.zeros(width) for _ in marks]
        fixed = [m.joules for m in marks]  # before the snapshot: see `read`
        open_marks = [m for m, j in zip(marks, fixed) if j is None]
        values = dict(
            zip(map(id, open_marks), (v for v, _ in self.sampler.buffer.energy_at([m.t for m in open_marks])))
        )
        return [j if j is not None else values[id(m)] for m, j in zip(marks, fixed)]

    def read(self, *marks: Mark) -> tuple[list[np.ndarray], list[MarkBound]]:
        """As `joules`, with each mark's bound (`energy_core.sampling.bounds`), from one snapshot
        of the readings: an extrapolated mark's bound is that of its extrapolation. A mark's
        bound is kept on it once the readings around it are in."""
        width = len(self.sources)
        if self.sampler is None or width == 0:
            return [np.zeros(width) for _ in marks], [MarkBound.zero(width) for _ in marks]
        # Each mark's figure is taken before the snapshot: the sampler thread fixes marks as its readings
        # come, and a mark fixed after the snapshot beside one read from it would mix two moments' readings.
        fixed = [(m.joules, m.bound) for m in marks]
        wanted = [m for m, (j, b) in zip(marks, fixed) if j is None or b is None]
        found = dict(zip(map(id, wanted), self.sampler.buffer.read_at([m.t for m in wanted], self.sampler.accuracy)))
        values: list[np.ndarray] = []
        bounds: list[MarkBound] = []
        for mark, (kept_j, kept_bound) in zip(marks, fixed):
            if id(mark) not in found:  # fixed, its bound kept
                assert kept_j is not None and kept_bound is not None
                values.append(kept_j)
                bounds.append(kept_bound)
                continue
            joules, bound, settled = found[id(mark)]
            if kept_j is not None:
                joules = kept_j
                if settled:
                    mark.bound = bound
            values.append(joules)
            bounds.append(bound)
        return values, bounds

    def restate(self, mark: Mark, joules: np.ndarray, bound: MarkBound) -> MarkBound:
        """The bound of ``joules``, read at ``mark`` earlier with ``bound``, as the readings now
        allow (`energy_core.sampling.bounds.restated`)."""
        [now_j], [now] = self.read(mark)
        return restated(joules, bound, now_j, now)

    def resolvable(self, mark: Mark) -> bool:
        """Whether `joules` can give this mark a figure: it is fixed, or two readings give a
        power to extrapolate with (a mark before the second reading has no figure yet)."""
        return mark.final or (self.sampler is not None and self.sampler.buffer.can_extrapolate)

    def by_kind(self, joules: np.ndarray) -> dict[str, float]:
        """Sum a per-source vector into ``{"gpu": J, "cpu": J, "dram": J}`` (kinds measured)."""
        totals: dict[str, float] = {}
        for source, value in zip(self.sources, joules):
            totals[source.info.kind] = totals.get(source.info.kind, 0.0) + float(value)
        return totals

    @property
    def estimated(self) -> list[str]:
        """Names of the sources whose energy is an estimate."""
        return [s.info.name for s in self.sources if s.info.estimated]

    def failed_reads(self) -> dict[str, int]:
        """Failed reads per source name so far (gaps in the measurement)."""
        if self.sampler is None:
            return {}
        return {s.info.name: n for s, n in zip(self.sources, self.sampler.failed_reads) if n}

    def watch(self, since: Mark, reached: Callable[[float, float], bool]) -> threading.Event:
        """An event the sampler thread sets once ``reached(t, joules since since)`` is true
        (checked after every reading, from the first one that fixes ``since``; the watch
        ends with the sampler)."""
        if self.sampler is None:
            raise RuntimeError("watch needs an open meter")
        event = threading.Event()

        def listener(t: float, values: np.ndarray) -> None:
            if since.joules is not None and reached(t, float(sum(values) - since.joules.sum())):
                event.set()

        self.sampler.listeners.append(listener)
        return event

    def quality(self) -> dict[str, dict[str, Any]]:
        """Per source with any fault: gaps, resets, glitches, seconds not measured, estimated joules.

        A sampler stalled in a read (a hung driver call) adds its stall to every source: the
        seconds since its newest reading, and the joules extrapolated over them."""
        if self.sampler is None:
            return {}
        stall_s, stall_j = self._stall()
        found = {}
        for source, ledger, bridged in zip(self.sources, self.sampler.ledgers, stall_j):
            unmeasured_s, estimated_j = ledger.unmeasured_s + stall_s, ledger.estimated_j + float(bridged)
            if ledger.gaps or unmeasured_s or estimated_j:
                found[source.info.name] = {
                    "gaps": ledger.gaps, "resets": ledger.resets, "glitches": ledger.glitches,
                    "unmeasured_s": unmeasured_s, "estimated_j": estimated_j, "last_error": ledger.last_error,
                }  # fmt: skip
        return found

    def _stall(self) -> tuple[float, np.ndarray]:
        """(seconds, joules per source) extrapolated since the newest reading of this run (its opening,
        where the read hung before one), where `close` left a read behind, or the sampler has stalled
        in one (as long as `new_silences` waits before saying so)."""
        assert self.sampler is not None
        width = len(self.sources)
        newest = self.sampler.newest
        if newest is None or not (self.sampler.running or self._hung_until is not None):
            return 0.0, np.zeros(width)
        until = self._hung_until if self._hung_until is not None else self.clock()
        since = max(newest[0], self._opened_at)  # not the time between runs (the readings stopped with the last one)
        stalled = until - since
        if stalled <= 0 or (self._hung_until is None and stalled < max(SILENT_S, 10 * self.sample_interval_s)):
            return 0.0, np.zeros(width)
        (at_since, _), (at_until, _) = self.sampler.buffer.energy_at([since, until])
        return stalled, np.maximum(at_until - at_since, 0.0)

    def disagreements(self) -> list[Disagreement]:
        """The spans over which a board's counter and its power disagreed beyond their joint bound
        since the last call (`energy_core.devices.crosscheck`)."""
        if self.sampler is None:
            return []
        return [found for ledger in self.sampler.ledgers if ledger.check is not None for found in ledger.check.take()]

    def new_silences(self) -> list[Notice]:
        """One warning per source that has given no good reading for a while (once each)."""
        if self.sampler is None:
            return []
        limit = max(SILENT_S, 10 * self.sample_interval_s)
        notices = []
        stalled = self.clock() - self.sampler.last_reading_t
        if self.sampler.running and stalled >= limit and "sampler" not in self._silent:
            self._silent.add("sampler")
            text = (
                f"No hardware reading for {stalled:.0f} s: a device call has not returned (a hung driver?). The "
                "figures go on at the last measured power and are estimated until readings resume."
            )
            notices.append(Notice("warn", text))
        for source, ledger in zip(self.sources, self.sampler.ledgers):
            silent = ledger.silent_s >= SILENT_S and ledger.streak >= SILENT_READINGS
            if silent and source.info.name not in self._silent:
                self._silent.add(source.info.name)
                why = f" (last error: {ledger.last_error})" if ledger.last_error else ""
                if ledger.never_read:
                    text = (
                        f"{source.info.name} has given no good reading since measuring began, {ledger.silent_s:.0f} s "
                        f"ago{why}: its energy is not counted until it does (the bound allows up to its most power "
                        "over that time); the run's summary says how long."
                    )
                elif ledger.bridged_at_nothing:
                    text = (
                        f"{source.info.name} has given no good reading for {ledger.silent_s:.0f} s{why}: its energy "
                        "is not counted until it does (the bound allows up to its most power over that time); the "
                        "run's summary says how long."
                    )
                else:
                    text = (
                        f"{source.info.name} has given no good reading for {ledger.silent_s:.0f} s{why}: its energy "
                        "is bridged at its last measured power and marked estimated; the run's summary says how much."
                    )
                notices.append(Notice("warn", text))
        return notices
