"""EnergyMeter: the devices of this process plus the sampler, behind time marks.

The training thread only ever calls `EnergyMeter.mark` (a ``perf_counter()`` timestamp);
energy between marks is computed later from the sampled cumulative readings, at logging
boundaries. Opening discovers devices and starts the sampler thread; closing stops it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from energy_core import cpu_estimate, nvidia, rapl
from energy_core.sampler import Sampler
from energy_core.source import DEVICE_KINDS, EnergySource, Notice

MIN_INTERVAL_S, MAX_INTERVAL_S = 0.001, 60.0


def parse_devices(devices: str | Sequence[str]) -> tuple[tuple[str, ...], bool]:
    """Validate ``devices``: ``"auto"`` or a list drawn from ``"gpu"``, ``"cpu"``, ``"dram"``.

    Returns:
        (kinds, explicit): the kinds to measure and whether the user named them.
    """
    if isinstance(devices, str):
        if devices == "auto":
            return DEVICE_KINDS, False
        devices = [devices]
    try:
        kinds = tuple(dict.fromkeys(devices))
    except TypeError:
        kinds = ()
    bad = [d for d in kinds if d not in DEVICE_KINDS]
    if not kinds or bad:
        raise ValueError(
            f"devices must be 'auto' or a non-empty list drawn from {', '.join(map(repr, DEVICE_KINDS))}; "
            f"got {devices!r}"
        )
    return kinds, True


def check_interval(sample_interval_s: float) -> float:
    try:
        value = float(sample_interval_s)
    except (TypeError, ValueError):
        value = math.nan
    if not (MIN_INTERVAL_S <= value <= MAX_INTERVAL_S):
        raise ValueError(
            f"sample_interval_s must be in [{MIN_INTERVAL_S:g}, {MAX_INTERVAL_S:g}] seconds, got {sample_interval_s!r}"
        )
    return value


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
    ) -> None:
        self.kinds, self.explicit = parse_devices(devices)
        self.sample_interval_s = check_interval(sample_interval_s)
        self.cuda_indices = cuda_indices
        self.node_devices = node_devices
        self.rapl_root = rapl_root
        self.sources: list[EnergySource] = []
        self.sampler: Sampler | None = None
        self.notices: list[Notice] = []

    def _discover(self) -> None:
        notices: list[Notice] = []
        if "gpu" in self.kinds:
            gpus, found = nvidia.discover_gpus(self.cuda_indices)
            self.sources += gpus
            notices += found
        node_kinds = {k for k in self.kinds if k in ("cpu", "dram")} if self.node_devices else set()
        if node_kinds:
            readers, found = rapl.discover_rapl(node_kinds, self.rapl_root)
            self.sources += readers
            notices += found
            measured = {s.info.kind for s in readers}
            if "cpu" in node_kinds and "cpu" not in measured:
                estimate, found = cpu_estimate.estimate_cpu()
                self.sources.append(estimate)
                notices += found
            if "dram" in node_kinds and "dram" not in measured and self.explicit:
                notices.append(Notice("warn", "DRAM energy was requested but no readable RAPL DRAM domain exists."))
        if not self.sources:
            notices.append(Notice("warn", f"No device of {list(self.kinds)} can be measured: energy stays at zero."))
        self.notices = notices

    def open(self) -> list[Notice]:
        """Discover devices (first call only) and start sampling. Returns the notices."""
        if self.sampler is None:
            self._discover()
            self.sampler = Sampler(self.sources, self.sample_interval_s)
        self.sampler.start()
        return self.notices

    def close(self) -> None:
        """Stop the sampler thread (after one last reading). Safe to call twice."""
        if self.sampler is not None:
            self.sampler.stop()

    @staticmethod
    def mark() -> Mark:
        """Now, as a mark. Costs one ``perf_counter()`` call."""
        return Mark(time.perf_counter())

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
