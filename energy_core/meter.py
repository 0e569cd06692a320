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

import numpy as np

from energy_core import devices as device_layer
from energy_core.devices import EnergySource
from energy_core.notices import Notice
from energy_core.options import check_interval, parse_devices
from energy_core.sampler import Sampler


class Mark:
    """A moment on the ``perf_counter()`` clock whose energy is resolved lazily."""

    __slots__ = ("t", "joules")

    def __init__(self, t: float) -> None:
        self.t = t
        self.joules: np.ndarray | None = None


class EnergyMeter:
    """Measures this process's devices in the background.

    Args:
        devices: ``"auto"`` (every GPU visible to the process, the CPU package through
            RAPL or else an estimate, DRAM through RAPL where present) or a list drawn
            from ``"gpu"``, ``"cpu"``, ``"dram"``.
        sample_interval_s: Seconds between reads of the hardware, in [0.001, 60].
        cuda_indices: Restrict GPUs to these visible-device indices (one DDP rank's GPU).
        node_devices: Measure CPU and DRAM (False on all but one rank of a node).
        rapl_root: Powercap directory, for tests; defaults to ``/sys/class/powercap``.
        clock: Seconds, for marks and readings; ``time.perf_counter`` (a test may drive time).

    Example:
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
    ) -> None:
        self.kinds, self.explicit = parse_devices(devices)
        self.sample_interval_s = check_interval(sample_interval_s)
        self.cuda_indices = cuda_indices
        self.node_devices = node_devices
        self.rapl_root = rapl_root
        self.clock = clock
        self.sources: list[EnergySource] = []
        self.sampler: Sampler | None = None
        self.notices: list[Notice] = []

    def assign(self, gpu_indices: Sequence[int] | None, node_devices: bool) -> None:
        """Measure only these visible GPUs (None: all) and, or not, the node's CPU and DRAM.

        Set before `open`: how a rank of a multi-process job takes its share of the devices.
        """
        self.cuda_indices = gpu_indices
        self.node_devices = node_devices

    def open(self) -> list[Notice]:
        """Discover devices (first call only) and start sampling. Returns the notices."""
        if self.sampler is None:
            self.sources, self.notices = device_layer.discover(
                self.kinds, self.explicit, self.cuda_indices, self.node_devices, self.rapl_root
            )
            self.sampler = Sampler(self.sources, self.sample_interval_s, clock=self.clock)
        self.sampler.start()
        return self.notices

    def close(self) -> None:
        """Stop the sampler thread (after one last reading) and end every watch. Safe to call twice."""
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler.listeners.clear()

    def mark(self) -> Mark:
        """Now, as a mark. Costs one clock call."""
        return Mark(self.clock())

    def joules(self, *marks: Mark) -> list[np.ndarray]:
        """Cumulative joules of every source at each mark (one buffer pass for all).

        Marks older than the newest reading are resolved for good and cached; a mark
        beyond it gets an extrapolated value now and an exact one at a later call.
        """
        width = len(self.sources)
        if self.sampler is None or width == 0:
            return [np.zeros(width) for _ in marks]
        pending = [m for m in marks if m.joules is None]
        values = self.sampler.buffer.energy_at([m.t for m in pending])
        now_values = {}
        for mark, (joules, final) in zip(pending, values):
            if final:
                mark.joules = joules
            else:
                now_values[id(mark)] = joules
        return [m.joules if m.joules is not None else now_values[id(m)] for m in marks]

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

    def watch(self, since: Mark, limit_j: float) -> threading.Event:
        """An event the sampler thread sets once all sources together have used ``limit_j``
        joules since ``since`` (checked after every reading; the watch ends with the sampler)."""
        if self.sampler is None:
            raise RuntimeError("watch needs an open meter")
        event = threading.Event()
        (base,) = self.joules(since)
        base_j = float(base.sum())

        def listener(t: float, values: Sequence[float]) -> None:
            if sum(values) - base_j >= limit_j:
                event.set()

        self.sampler.listeners.append(listener)
        if limit_j <= 0:
            event.set()
        return event
