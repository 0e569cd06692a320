"""NVIDIA GPU energy through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``).

Preferred reading: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load,
Volta and newer). Older GPUs raise ``NVMLError_NotSupported`` for it; they are measured
by integrating ``nvmlDeviceGetPowerUsage`` (mW) with the trapezoid rule at every sample.

Visible devices are mapped to NVML handles by UUID: NVML enumerates in PCI order and
ignores ``CUDA_VISIBLE_DEVICES``, which may hold indices, ``GPU-`` UUIDs (or prefixes)
or ``MIG-`` ids. MIG instances share the board's power, so energy is per physical GPU.

Power limits (`NvidiaBoard`): ``nvmlDeviceSetPowerManagementLimit`` in mW, root or
CAP_SYS_ADMIN; range from ``nvmlDeviceGetPowerManagementLimitConstraints``. This module is
the only one that imports ``pynvml``: its errors leave it as `DeviceError` or
`PermissionError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pynvml

from energy_core.devices import gpu as common
from energy_core.devices import visible
from energy_core.devices.source import (
    AVERAGED,
    COUNTER_UPDATE_S,
    INSTANTANEOUS,
    Accuracy,
    DeviceError,
    EnergySource,
    GpuBoard,
    LimitRange,
    Reading,
    SourceInfo,
)
from energy_core.notices import Notice

VENDOR = "nvidia"
POWER_RESOLUTION_W = 0.001  # nvmlDeviceGetPowerUsage counts whole mW


@dataclass(frozen=True)
class VisibleGpu:
    """One physical GPU as the training process sees it.

    Args:
        cuda_index: Index among the process's visible CUDA devices.
        handle: NVML handle of the physical board.
        uuid: The board's ``GPU-...`` UUID.
        mig: True when the process was given a MIG instance of this board.
    """

    cuda_index: int
    handle: Any
    uuid: str
    mig: bool = False


class NvidiaGpuSource(common.GpuSource):
    """One NVIDIA GPU: its energy counter (mJ since driver load), or else its power (mW).

    Args:
        gpu: The device to read.

    Examples:
        >>> sources, notices = discover_gpus()   # doctest: +SKIP
        >>> sources[0].read(time.perf_counter())  # doctest: +SKIP
        Reading(joules=12.5, watts=None)
    """

    def __init__(self, gpu: VisibleGpu) -> None:
        self.gpu = gpu
        self.notes: list[str] = []
        name = _text(pynvml.nvmlDeviceGetName(gpu.handle))
        self._base_mj: int | None = None
        self._power: Accuracy | None = None  # asked here, on discovery's bounded thread, never by the ledger's caller
        try:
            self._base_mj = int(pynvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle))
            method = "nvml-energy-counter"
            self.accuracy = Accuracy(lag_s=COUNTER_UPDATE_S, quantum_j=0.001)
            self._power = _power_accuracy(gpu.handle)
        except pynvml.NVMLError_NotSupported:
            method = "nvml-power-integration"
            self.accuracy = _power_accuracy(gpu.handle)
            self.notes.append(
                f"GPU {gpu.cuda_index} has no energy counter (older than Volta): integrating polled power instead."
            )
        try:
            highest_w = int(pynvml.nvmlDeviceGetPowerManagementLimitConstraints(gpu.handle)[1]) / 1000
        except pynvml.NVMLError:
            highest_w = None
        self.max_power_w = common.max_power_w(highest_w)
        if gpu.mig:
            self.notes.append(
                f"GPU {gpu.cuda_index} ({gpu.uuid}) is in MIG mode: NVML reports board-level "
                "power, so the energy logged is that of the whole physical GPU, all MIG "
                "instances together."
            )
        self.info = SourceInfo(
            name=f"gpu{gpu.cuda_index}",
            kind="gpu",
            method=method,
            detail=f"{name} {gpu.uuid}" + (" (MIG: board-level power)" if gpu.mig else ""),
            vendor=VENDOR,
        )

    @property
    def uses_counter(self) -> bool:
        return self._base_mj is not None

    def read_power(self) -> float | None:
        """The board's power (W) beside its counter, for the cross-check; None without a counter."""
        if self._base_mj is None:
            return None
        return float(pynvml.nvmlDeviceGetPowerUsage(self.gpu.handle)) / 1000

    def power_accuracy(self) -> Accuracy | None:
        """Known since discovery: no driver call here (the `Ledger` asks on the thread that opens the sampler)."""
        return self._power

    def read(self, now: float) -> Reading:
        if self._base_mj is not None:
            return Reading(
                joules=(int(pynvml.nvmlDeviceGetTotalEnergyConsumption(self.gpu.handle)) - self._base_mj) / 1000
            )
        return Reading(watts=pynvml.nvmlDeviceGetPowerUsage(self.gpu.handle) / 1000)


def _power_accuracy(handle: Any) -> Accuracy:
    """How the board's power reading behaves: averaged or instantaneous, in whole mW."""
    return replace(AVERAGED if _averages_power(handle) else INSTANTANEOUS, resolution_w=POWER_RESOLUTION_W)


GA100 = (8, 0)  # CUDA compute capability of the Ampere data-centre chip (A100, A30)


def _averages_power(handle: Any) -> bool:
    """Whether the board's power reading is a 1 s average (Ampere and newer, but for GA100: A100 and
    A30 report instantaneous power) rather than instantaneous."""
    try:
        arch = int(pynvml.nvmlDeviceGetArchitecture(handle))
        if arch == pynvml.NVML_DEVICE_ARCH_AMPERE:
            return tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle)) != GA100
        return arch > pynvml.NVML_DEVICE_ARCH_AMPERE
    except pynvml.NVMLError:
        return False  # unknown: taken as instantaneous, the wider bound


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _board_of(entry: str, by_uuid: dict[str, Any]) -> tuple[str, bool] | None:
    """Map one ``CUDA_VISIBLE_DEVICES`` entry to (board UUID, is_mig)."""
    if entry.startswith("MIG-"):
        try:
            mig = pynvml.nvmlDeviceGetHandleByUUID(entry)
            board = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
            return _text(pynvml.nvmlDeviceGetUUID(board)), True
        except pynvml.NVMLError:
            return None
    if not (entry.isdigit() or entry.startswith("GPU-")):
        return None
    uuid = visible.by_index_or_uuid(entry, list(by_uuid), {u: u for u in by_uuid})
    return None if uuid is None else (uuid, False)


def visible_gpus() -> list[VisibleGpu]:
    """The physical GPUs this process can use, in CUDA order, mapped by UUID.

    Follows CUDA's rules for ``CUDA_VISIBLE_DEVICES`` (`visible.select`). Integer entries
    are taken in NVML (PCI) order, which matches CUDA when ``CUDA_DEVICE_ORDER=PCI_BUS_ID``;
    when torch has already initialised CUDA its UUIDs are used instead, which is exact
    whatever the order. Several MIG instances of one board yield that board once. A board
    NVML cannot open (``GPU_IS_LOST``; ``NO_PERMISSION`` for a board denied to this job's
    cgroup) is left out, as CUDA leaves it out; the others are measured.
    """
    by_uuid: dict[str, Any] = {}
    for i in range(pynvml.nvmlDeviceGetCount()):
        try:  # a board fallen off the bus, or denied to this job's cgroup, raises here: CUDA cannot use it either
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            by_uuid[_text(pynvml.nvmlDeviceGetUUID(handle))] = handle
        except (pynvml.NVMLError_GpuIsLost, pynvml.NVMLError_NoPermission):
            continue  # any other error: the numbering cannot be trusted, nothing is measured (as before)
    seen = visible.torch_gpus(VENDOR)
    names = None if seen is None else ["GPU-" + g.uuid for g in seen]
    if names is None or not all(n in by_uuid for n in names):
        names = visible.entries("CUDA_VISIBLE_DEVICES")
        names = list(by_uuid) if names is None else names
    chosen = visible.select(names, lambda entry: _board_of(entry, by_uuid), lambda board: board[0])
    return [VisibleGpu(i, by_uuid[uuid], uuid, mig or _mig_enabled(by_uuid[uuid])) for i, (uuid, mig) in chosen]


def _mig_enabled(handle: Any) -> bool:
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError:
        return False
    return bool(current == pynvml.NVML_DEVICE_MIG_ENABLE)


def discover_gpus(cuda_indices: Sequence[int] | None = None) -> tuple[list[EnergySource], list[Notice]]:
    """Open an energy source for each visible NVIDIA GPU.

    Args:
        cuda_indices: Only these visible-device indices (e.g. the one GPU of a DDP rank);
            None means every visible GPU.

    Returns:
        The sources and the notices to show the user once. No GPU, no driver or no
        NVML library is not an error: the list is empty and a notice says why.
    """
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        return [], [Notice("info", f"No NVIDIA GPU measured (NVML: {err}).")]
    try:
        gpus = visible_gpus()
    except pynvml.NVMLError as err:
        return [], [Notice("warn", f"NVML could not list GPUs ({err}); GPU energy is not measured.")]
    return common.open_sources(gpus, cuda_indices, NvidiaGpuSource, "NVIDIA")


def driver_version() -> str | None:
    """The NVIDIA driver version, or None without NVML."""
    try:
        return _text(pynvml.nvmlSystemGetDriverVersion())
    except pynvml.NVMLError:
        return None


# ---------------------------------------------------------------------- power limits
PERMISSION_HINT = (
    "Setting GPU power limits needs root or CAP_SYS_ADMIN (NVML_ERROR_NO_PERMISSION). Run the job as root, "
    "grant the capability (e.g. `sudo setcap cap_sys_admin+ep $(readlink -f $(which python))`), or ask an "
    "administrator to set the cap with `sudo nvidia-smi -i <gpu> -pl <watts>`."
)


def _error(err: Exception) -> DeviceError:
    """NVML's error, or anything else the binding raised (it is not held to its own class), as a `DeviceError`."""
    return DeviceError(f"NVML: {err}" if isinstance(err, pynvml.NVMLError) else f"NVML: {type(err).__name__}: {err}")


def _call(function: Any, *args: Any) -> Any:
    """One NVML call whose errors become `DeviceError`."""
    try:
        return function(*args)
    except Exception as err:  # noqa: BLE001 - see _error
        raise _error(err) from None


class NvidiaBoard(GpuBoard):
    """The power limit of one NVIDIA board (mW, as NVML counts).

    Args:
        gpu: The board.
    """

    vendor = VENDOR

    def __init__(self, gpu: VisibleGpu) -> None:
        self.gpu = gpu
        self.index = gpu.cuda_index
        self.uuid = gpu.uuid

    def limits(self) -> LimitRange:
        low, high = (int(v) for v in _call(pynvml.nvmlDeviceGetPowerManagementLimitConstraints, self.gpu.handle))
        default = int(_call(pynvml.nvmlDeviceGetPowerManagementDefaultLimit, self.gpu.handle))
        return LimitRange(low, high, default, self.limit_mw())

    def limit_mw(self) -> int:
        return int(_call(pynvml.nvmlDeviceGetPowerManagementLimit, self.gpu.handle))

    def set_limit_mw(self, mw: int) -> None:
        try:
            pynvml.nvmlDeviceSetPowerManagementLimit(self.gpu.handle, int(mw))
        except pynvml.NVMLError_NoPermission:
            raise PermissionError(PERMISSION_HINT) from None
        except Exception as err:  # noqa: BLE001 - see _error
            raise _error(err) from None


def boards() -> list[NvidiaBoard]:
    """The visible NVIDIA boards, in CUDA order. Raises DeviceError without NVML."""
    _call(pynvml.nvmlInit)
    return [NvidiaBoard(gpu) for gpu in _call(visible_gpus)]


def board_by_uuid(uuid: str) -> NvidiaBoard | None:
    """The NVIDIA board with this UUID (None if NVML has none). Raises DeviceError without NVML."""
    _call(pynvml.nvmlInit)
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
    except pynvml.NVMLError:
        return None
    return NvidiaBoard(VisibleGpu(-1, handle, uuid))
