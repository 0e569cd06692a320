"""The vendor-neutral device interfaces: energy sources and GPU boards with power limits.

A *source* reads one piece of hardware (a GPU, a CPU package, a DRAM domain) and says
what it read: a cumulative counter in joules or a power in watts (`Reading`). Sources
are read only by the background sampler thread, through a `Ledger` that turns the
readings into monotone joules; nothing on the training thread ever calls `read`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple

DEVICE_KINDS = ("gpu", "cpu", "dram")
CPU_MAX_POWER_W = 5000.0  # no CPU package or DRAM domain draws more: a reading implying it is a glitch


class Reading(NamedTuple):
    """One read of a device: a cumulative counter (``joules``) or a power (``watts``).

    ``continuous`` is False when a counter cannot vouch for the energy since its previous
    reading (a narrow counter silent for longer than one wrap at the device's highest
    power may have wrapped any number of times): the `Ledger` counts that interval as
    unmeasured and takes the counter up again from this reading.
    """

    joules: float | None = None
    watts: float | None = None
    continuous: bool = True


@dataclass(frozen=True)
class SourceInfo:
    """What a source measures, for messages and the run record.

    Args:
        name: Short unique name used in metric keys, e.g. ``"gpu0"``, ``"cpu0"``.
        kind: One of ``"gpu"``, ``"cpu"``, ``"dram"``.
        method: How energy is obtained, e.g. ``"nvml-energy-counter"``, ``"rapl"``.
        estimated: True when the figure is a model (TDP x utilisation), not a reading.
        detail: Free text: device model, UUID, sysfs path.
        vendor: The GPU's vendor (``"nvidia"``, ``"amd"``); "" for CPU and DRAM sources.
    """

    name: str
    kind: str
    method: str
    estimated: bool = False
    detail: str = ""
    vendor: str = ""


@dataclass(frozen=True)
class Accuracy:
    """How far a source's readings can be from the truth: what the bound of every figure is made of.

    Args:
        lag_s: How far a reading's energy may trail the truth, in seconds of the device's power:
            an energy counter updated every ``lag_s`` (NVML: 20-100 ms, taken as 0.1 s; RAPL:
            about 1 ms); a power averaged over ``2 * lag_s`` (NVML's 1 s average on Ampere and
            newer: the integral of a moving average trails the true energy by at most half its
            span at the highest power in it). Always one-sided: a reading never runs ahead.
        quantum_j: The counter's resolution (NVML: 1 mJ; RAPL: 1 µJ; amdsmi: its counter_resolution).
        relative: The documented relative error of a model, as a share of its energy (the CPU
            estimate: right within a factor of about 2, so 1.0).
        sampled: The power is instantaneous: what the device drew between two readings is
            not seen (sampling error), only guessed from the spread of the readings around.
        averaged: The power is an average over ``2 * lag_s``: its integral trails the truth by
            between the lowest and the highest power around times ``lag_s`` (a counter's lag
            may be anything from 0).
        resolution_w: A polled power's resolution (NVML: 1 mW; amdsmi: 1 W): every reading may
            be off by it, rounded or cut, so the integral by it times the time.
        still_s: A counter that has not moved for this long is not counting (RAPL: its device
            never draws 0 W, and it counts µJ every ms; some VMs show a zone that never moves):
            from its last move on, its readings are a gap, not 0 J. None: no such rule.
    """

    lag_s: float = 0.0
    quantum_j: float = 0.0
    relative: float = 0.0
    sampled: bool = False
    averaged: bool = False
    resolution_w: float = 0.0
    still_s: float | None = None


COUNTER_UPDATE_S = 0.1  # an NVML or amdsmi energy counter advances every 20-100 ms: its reading trails by at most this
AVERAGED = Accuracy(lag_s=0.5, averaged=True)  # a 1 s power average (NVML on Ampere and newer, amdsmi's average power)
INSTANTANEOUS = Accuracy(sampled=True)  # polled instantaneous power (NVML before Ampere)
ESTIMATED = Accuracy(relative=1.0)  # the CPU estimate: within a factor of about 2 (docs/cpu_estimate.md)
ESTIMATED_DRAM = Accuracy(relative=4.0)  # the DRAM estimate: off by a factor of several, taken as up to 5 (the same)


class EnergySource(ABC):
    """One device's energy reader.

    Attributes:
        info: What it measures.
        max_power_w: The most this device could plausibly draw; a reading implying more
            is a glitch (twice a GPU's highest power limit; `CPU_MAX_POWER_W` otherwise).
        accuracy: How far its readings can be from the truth (what its bounds are made of).
    """

    info: SourceInfo
    max_power_w: float = CPU_MAX_POWER_W
    accuracy: Accuracy = Accuracy()

    @abstractmethod
    def read(self, now: float) -> Reading:
        """Read the device once. Cheap enough for every `sample_interval_s`; may raise
        (any exception is a failed read, a gap).

        Args:
            now: The sampler's timestamp for this read (its clock), for sources that
                model energy over time.
        """

    def read_power(self) -> float | None:
        """The device's power now, in watts, from a second instrument beside the energy counter
        (`energy_core.devices.crosscheck`): None where there is none. May raise (a failed read)."""
        return None

    def power_accuracy(self) -> Accuracy | None:
        """How `read_power`'s reading behaves (averaged or instantaneous); None without one. Asked
        by the thread that opens the sampler: known at construction, never a driver call."""
        return None

    def read_within_s(self) -> float | None:
        """The longest time between two reads that still sees every wrap of a narrow counter
        (`energy_core.devices.counter.WrappingCounter.wrap_s`); None: no limit. The sampler reads
        it at least twice as often whatever its interval. Arithmetic only, never a device read."""
        return None

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
        vendor: ``"nvidia"`` or ``"amd"``.
        index: Index among the process's visible devices (CUDA order); -1 for a board this
            process does not see (found by its UUID, e.g. another rank's).
        uuid: The board's unique id, stable across processes.
    """

    vendor: str
    index: int
    uuid: str

    @property
    def label(self) -> str:
        """How messages name it: ``GPU 0``, or by its UUID where this process does not see it."""
        return f"GPU {self.index}" if self.index >= 0 else f"GPU {self.uuid}"

    @abstractmethod
    def limits(self) -> LimitRange:
        """The allowed range, default and current limit. Raises DeviceError."""

    @abstractmethod
    def limit_mw(self) -> int:
        """The limit in force now, in mW. Raises DeviceError."""

    @abstractmethod
    def set_limit_mw(self, mw: int) -> None:
        """Set the limit. Raises PermissionError (with how to grant it) or DeviceError."""
