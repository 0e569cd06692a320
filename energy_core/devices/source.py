"""The vendor-neutral device interfaces: energy sources and GPU boards with power limits.

A *source* turns one piece of hardware (a GPU, a CPU package, a DRAM domain) into a
single monotone number: joules consumed since the source was opened. Sources are read
only by the background sampler thread (`energy_core.sampler`); nothing on the training
thread ever calls `read_j`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

DEVICE_KINDS = ("gpu", "cpu", "dram")


@dataclass(frozen=True)
class SourceInfo:
    """What a source measures, for messages and the run record.

    Args:
        name: Short unique name used in metric keys, e.g. ``"gpu0"``, ``"cpu0"``.
        kind: One of ``"gpu"``, ``"cpu"``, ``"dram"``.
        method: How energy is obtained, e.g. ``"nvml-energy-counter"``, ``"rapl"``.
        estimated: True when the figure is a model (TDP x utilisation), not a reading.
        detail: Free text: device model, UUID, sysfs path.
    """

    name: str
    kind: str
    method: str
    estimated: bool = False
    detail: str = ""


class EnergySource(ABC):
    """Cumulative energy of one device, in joules, since the source was opened.

    Implementations must make `read_j` monotone non-decreasing and cheap enough to call
    every `sample_interval_s`. A failed read returns ``None`` (the sampler records a gap
    and carries on); it must never raise.
    """

    info: SourceInfo

    @abstractmethod
    def read_j(self, now: float) -> float | None:
        """Return joules consumed since opening, or None if this read failed.

        Args:
            now: The sampler's timestamp for this read (``time.perf_counter()`` clock),
                used by sources that integrate power over time.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release handles. Default: nothing to release."""


class DeviceError(RuntimeError):
    """A device library call failed (NVML, amdsmi): the message names the library and its error."""


@dataclass(frozen=True)
class LimitRange:
    """A board's power limits, in mW.

    Args:
        min_mw, max_mw: The allowed range.
        default_mw: The board's default (boot) limit.
        current_mw: The limit in force now.
    """

    min_mw: int
    max_mw: int
    default_mw: int
    current_mw: int


class GpuBoard(ABC):
    """One physical GPU whose power limit can be read and set; the vendor's calls live behind it.

    Attributes:
        vendor: ``"nvidia"`` (or another supported vendor).
        index: Index among the process's visible devices (CUDA order).
        uuid: The board's unique id, stable across processes.
    """

    vendor: str
    index: int
    uuid: str

    @abstractmethod
    def limits(self) -> LimitRange:
        """The allowed range, default and current limit. Raises DeviceError."""

    @abstractmethod
    def limit_mw(self) -> int:
        """The limit in force now, in mW. Raises DeviceError."""

    @abstractmethod
    def set_limit_mw(self, mw: int) -> None:
        """Set the limit. Raises PermissionError (with how to grant it) or DeviceError."""
