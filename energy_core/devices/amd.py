"""AMD GPU energy and power caps through ``amdsmi`` (AMD's binding of ROCm's ``libamd_smi.so``).

As amdsmi 7.0.2's ``amdsmi_interface.py`` and ROCm's ``amdsmi.h`` define the calls (details,
sources and limits in docs/hardware.md):

* ``amdsmi_get_energy_count(h)``: ``energy_accumulator`` (``power`` before 6.2.1) x
  ``counter_resolution`` µJ (15.3 on MI200/MI300); 64 bits on Instinct, 32 on some Radeon
  boards (wraps undone by `WrappingCounter`); UINT_MAX or NOT_SUPPORTED without a counter;
* ``amdsmi_get_power_info(h)``: ``socket_power``/``current_socket_power``/``average_socket_power``
  in whole W, ``"N/A"`` where absent: polled and integrated where there is no counter;
* ``amdsmi_get_power_cap_info(h)`` and ``amdsmi_set_power_cap(h, 0, µW)``: µW, root only
  (``AMDSMI_STATUS_NO_PERM``); errors are ``AmdSmiException`` subclasses with ``get_error_code()``.

Importing ``amdsmi`` without ROCm prints and raises (``KeyError``, ``OSError``): AMD is then
simply not present. Devices are matched by PCI address (ROCm torch) or by the visible-device
variables (`visible`). This module is the only one that imports ``amdsmi``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from energy_core.devices import gpu, visible
from energy_core.devices.counter import WrappingCounter
from energy_core.devices.source import (
    AVERAGED,
    COUNTER_UPDATE_S,
    Accuracy,
    DeviceError,
    EnergySource,
    GpuBoard,
    LimitRange,
    Reading,
    SourceInfo,
)
from energy_core.notices import Notice

VENDOR = "amd"
NO_PERM = 10  # AMDSMI_STATUS_NO_PERM
COUNTER_PERIOD = 2**32  # a 32-bit accumulator wraps here; a 64-bit one never does in practice
NO_COUNTER = (2**32 - 1, 2**64 - 1)  # what firmware without the counter reports
POWER_FIELDS = ("socket_power", "current_socket_power", "average_socket_power")
NA_WATTS = 0xFFFF  # the binding turns this into "N/A"; newer libraries use UINT32_MAX
AMDGPU_MODULE = Path("/sys/module/amdgpu")  # the kernel driver: AMD GPUs may be present

PERMISSION_HINT = (
    "Setting GPU power caps through amdsmi needs root (AMDSMI_STATUS_NO_PERM). Run the job as root, or ask an "
    "administrator to set the cap with `sudo amd-smi set --gpu <gpu> --power-cap <watts>`."
)


def _import() -> Any:
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints when libamd_smi.so is missing
            import amdsmi
    except Exception:  # noqa: BLE001 - without ROCm the binding raises KeyError/OSError/AttributeError, not ImportError
        return None
    return amdsmi


class Binding:
    """The amdsmi module, imported at first use and initialised once.

    Args:
        module: The module to use instead of importing ``amdsmi`` (a simulation).
        load: Whether to import ``amdsmi`` when no module is given; False: it is absent.

    Example:
        >>> Binding(load=False).module() is None
        True
    """

    def __init__(self, module: Any = None, load: bool = True) -> None:
        self._module, self._tried, self._ready = module, module is not None or not load, False

    def module(self) -> Any:
        """The module, or None when it cannot be imported."""
        if not self._tried:
            self._module, self._tried = _import(), True
        return self._module

    def ready(self) -> Any:
        """The initialised module. Raises DeviceError."""
        smi = self.module()
        if smi is None:
            raise DeviceError("amdsmi: the amdsmi package or ROCm's libamd_smi.so is not installed")
        if not self._ready:
            try:
                smi.amdsmi_init()
            except Exception as err:  # noqa: BLE001 - see _error
                raise _error(err) from None
            self._ready = True
        return smi


LIBRARY = Binding()


def _text(err: BaseException) -> str:
    info = getattr(err, "get_error_info", None)
    return str(info()) if callable(info) else str(err)


def _error(err: Exception) -> DeviceError:
    """amdsmi's error, or anything else the binding raised (``KeyError``, ``TypeError``,
    ``OSError``: it is not held to its own class), as a `DeviceError`."""
    smi = LIBRARY.module()
    if smi is not None and isinstance(err, smi.AmdSmiException):
        return DeviceError(f"amdsmi: {_text(err)}")
    return DeviceError(f"amdsmi: {type(err).__name__}: {err}")


def _call(function: Any, *args: Any) -> Any:
    """One amdsmi call whose errors become `DeviceError`."""
    try:
        return function(*args)
    except Exception as err:  # noqa: BLE001 - see _error
        raise _error(err) from None


@dataclass(frozen=True)
class AmdGpu:
    """One AMD GPU device (one die of a dual-die board) as the process sees it.

    Args:
        cuda_index: Index among the process's visible devices (ROCm torch calls them ``cuda``).
        handle: amdsmi's processor handle.
        uuid: amdsmi's UUID of the device.
        bdf: Its PCI address, ``"dddd:bb:dd.f"``.
        hip_uuid: HIP's UUID (``GPU-...``), "" when amdsmi cannot say.
        hip_id: HIP's index with nothing hidden, None when amdsmi cannot say.
    """

    cuda_index: int
    handle: Any
    uuid: str
    bdf: str
    hip_uuid: str = ""
    hip_id: int | None = None


def _devices() -> list[AmdGpu]:
    """Every AMD GPU of the machine, in HIP's order where amdsmi gives it (ROCm 6.4+), else amdsmi's."""
    smi = LIBRARY.ready()
    found = []
    for handle in _call(smi.amdsmi_get_processor_handles):
        hip_uuid, hip_id = "", None
        enumeration = getattr(smi, "amdsmi_get_gpu_enumeration_info", None)
        if enumeration is not None:
            with contextlib.suppress(smi.AmdSmiException):
                info = enumeration(handle)
                hip_uuid, hip_id = str(info.get("hip_uuid", "")), info.get("hip_id")
        uuid = str(_call(smi.amdsmi_get_gpu_device_uuid, handle))
        bdf = str(_call(smi.amdsmi_get_gpu_device_bdf, handle)).lower()
        found.append(AmdGpu(-1, handle, uuid, bdf, hip_uuid, hip_id if isinstance(hip_id, int) else None))
    if all(d.hip_id is not None for d in found):
        found.sort(key=lambda d: d.hip_id or 0)
    return found


def visible_gpus() -> list[AmdGpu]:
    """The AMD GPUs this process can use, in its device order. Raises DeviceError."""
    devices = _devices()
    chosen = visible.by_torch_pci_address(VENDOR, {d.bdf: d for d in devices})
    if chosen is None:
        uuids = {d.uuid: d for d in devices} | {d.hip_uuid: d for d in devices if d.hip_uuid}
        chosen = visible.rocm_select(devices, uuids, lambda d: d.bdf)
    return [AmdGpu(i, d.handle, d.uuid, d.bdf, d.hip_uuid, d.hip_id) for i, d in chosen]


def _counts(reading: dict[str, Any]) -> Any:
    return reading.get("energy_accumulator", reading.get("power"))


class AmdGpuSource(gpu.GpuSource):
    """One AMD GPU: its energy accumulator (counts x µJ, wraps undone), or else its polled power (W).

    Args:
        device: The GPU to read.

    Example:
        >>> sources, notices = discover_gpus()     # doctest: +SKIP
        >>> sources[0].read(time.perf_counter())  # doctest: +SKIP
        Reading(joules=0.0, watts=None)
    """

    def __init__(self, device: AmdGpu) -> None:
        smi = LIBRARY.ready()
        self.gpu, self._smi, self.notes = device, smi, []
        try:
            highest = int(smi.amdsmi_get_power_cap_info(device.handle)["max_power_cap"]) / 1e6
        except (smi.AmdSmiException, KeyError, TypeError, ValueError):
            highest = None
        self.max_power_w = gpu.max_power_w(highest)
        self._counter: WrappingCounter | None = None
        self._field = ""
        try:
            reading = smi.amdsmi_get_energy_count(device.handle)
        except smi.AmdSmiException:  # NOT_SUPPORTED: VM guests, some boards
            reading = {}
        counts, resolution = _counts(reading), reading.get("counter_resolution")
        if isinstance(counts, int) and counts not in NO_COUNTER and counts > 0 and resolution and resolution > 0:
            self._counter = WrappingCounter(COUNTER_PERIOD, float(resolution) * 1e-6, self.max_power_w)
            method = "amdsmi-energy-counter"
            self.accuracy = Accuracy(lag_s=COUNTER_UPDATE_S, quantum_j=float(resolution) * 1e-6)
        else:
            self._field = self._power_field(_call(smi.amdsmi_get_power_info, device.handle), silent=counts == 0)
            method = "amdsmi-power-integration"
            # Averaged or not: the field does not say. Its watts are integers.
            self.accuracy = Accuracy(lag_s=AVERAGED.lag_s, sampled=True, resolution_w=1.0)
        try:
            name = str(smi.amdsmi_get_gpu_asic_info(device.handle)["market_name"])
        except (smi.AmdSmiException, KeyError):
            name = "AMD GPU"
        self.info = SourceInfo(
            name=f"gpu{device.cuda_index}", kind="gpu", method=method, detail=f"{name} {device.uuid}", vendor=VENDOR
        )

    def _power_field(self, power: dict[str, Any], silent: bool) -> str:
        """The power field to poll: the first the board fills (a non-zero one if any).

        Args:
            power: ``amdsmi_get_power_info``'s answer.
            silent: The energy accumulator reads 0 (it exists but counts nothing).
        """
        usable = [f for f in POWER_FIELDS if isinstance(power.get(f), int) and 0 <= power[f] < NA_WATTS]
        if not usable:
            raise DeviceError("amdsmi: the board reports neither an energy counter nor its power")
        field = next((f for f in usable if power[f] > 0), usable[0])
        where = f"GPU {self.gpu.cuda_index} ({self.gpu.uuid})"
        if silent and power[field] == 0:
            self.notes.append(
                f"{where} reports no energy or power of its own, as the second die of a dual-die MI250/MI250X "
                "does: its energy is counted by the first die. Polling its power anyway."
            )
        else:
            self.notes.append(f"{where} has no usable energy counter: integrating its polled power ({field}).")
        return field

    def read_within_s(self) -> float | None:
        return None if self._counter is None else self._counter.wrap_s

    def read(self, now: float) -> Reading:
        try:
            if self._counter is not None:
                counts = _counts(self._smi.amdsmi_get_energy_count(self.gpu.handle))
                # The firmware's "no counter" value is no reading: fed to the counter, it would take a
                # 32-bit accumulator for a 64-bit one and stop undoing its wraps for good.
                if counts in NO_COUNTER:
                    raise DeviceError(f"amdsmi: the energy accumulator reads {counts} (no count)")
                return self._counter.update(int(counts), now)
            watts = self._smi.amdsmi_get_power_info(self.gpu.handle).get(self._field)
        except self._smi.AmdSmiException as err:
            raise DeviceError(f"amdsmi: {_text(err)}") from None
        if not isinstance(watts, int | float):  # "N/A": no reading; a number the ledger judges
            raise DeviceError(f"amdsmi: {self._field} is {watts!r}")
        return Reading(watts=float(watts))


def discover_gpus(cuda_indices: Sequence[int] | None = None) -> tuple[list[EnergySource], list[Notice]]:
    """Open an energy source for each visible AMD GPU (those of `cuda_indices` only, when given).

    Returns:
        The sources and the notices to show once. No amdsmi, no ROCm or no GPU is not an
        error: the list is empty (and a notice says why where AMD GPUs may be present).
    """
    smi = LIBRARY.module()
    if smi is None:
        if not AMDGPU_MODULE.exists():
            return [], []
        hint = "pip install 'energy-callbacks[amd]' (the amdsmi release of your ROCm version)"
        return [], [Notice("info", f"No AMD GPU measured: the amdgpu driver is loaded but amdsmi is missing; {hint}.")]
    try:
        LIBRARY.ready()
    except DeviceError as err:
        return [], [Notice("info", f"No AMD GPU measured ({err}).")]
    try:
        gpus = visible_gpus()
    except DeviceError as err:
        return [], [Notice("warn", f"amdsmi could not list GPUs ({err}); AMD GPU energy is not measured.")]
    return gpu.open_sources(gpus, cuda_indices, AmdGpuSource, "AMD")


def driver_version() -> str | None:
    """``"ROCm <version>, amdgpu <driver>"`` as far as amdsmi can say; None without amdsmi or GPU."""
    smi = LIBRARY.module()
    if smi is None:
        return None
    parts = []
    with contextlib.suppress(DeviceError, smi.AmdSmiException, KeyError, IndexError, TypeError, ValueError):
        rocm = getattr(smi, "amdsmi_get_rocm_version", None)  # amdsmi 6.2 and newer
        ok, version = rocm() if rocm is not None else (False, "")
        parts.append(f"ROCm {version}" if ok else "")
        handles = _call(LIBRARY.ready().amdsmi_get_processor_handles)
        parts.append(f"amdgpu {_call(smi.amdsmi_get_gpu_driver_info, handles[0])['driver_version']}")
    return ", ".join(p for p in parts if p) or None


# ---------------------------------------------------------------------- power caps
class AmdBoard(GpuBoard):
    """The power cap of one AMD GPU (mW here, µW in amdsmi).

    Args:
        device: The GPU.

    Example:
        >>> board = boards()[0]        # doctest: +SKIP
        >>> board.set_limit_mw(300_000)  # amdsmi_set_power_cap(handle, 0, 300_000_000)  # doctest: +SKIP
    """

    vendor = VENDOR

    def __init__(self, device: AmdGpu) -> None:
        self.gpu, self.index, self.uuid = device, device.cuda_index, device.uuid

    def _caps(self) -> dict[str, Any]:
        return _call(LIBRARY.ready().amdsmi_get_power_cap_info, self.gpu.handle)

    def _cap_mw(self, caps: dict[str, Any], key: str) -> int:
        try:
            return int(caps[key]) // 1000
        except (KeyError, TypeError, ValueError) as err:
            raise DeviceError(f"amdsmi: the power cap info has no usable {key} ({type(err).__name__})") from None

    def limits(self) -> LimitRange:
        caps = self._caps()
        low, high, default, now = (
            self._cap_mw(caps, k) for k in ("min_power_cap", "max_power_cap", "default_power_cap", "power_cap")
        )
        return LimitRange(low, high, default, now)

    def limit_mw(self) -> int:
        return self._cap_mw(self._caps(), "power_cap")

    def set_limit_mw(self, mw: int) -> None:
        smi = LIBRARY.ready()
        try:
            smi.amdsmi_set_power_cap(self.gpu.handle, 0, int(mw) * 1000)
        except Exception as err:  # noqa: BLE001 - see _error
            if getattr(err, "get_error_code", lambda: None)() == NO_PERM:
                raise PermissionError(PERMISSION_HINT) from None
            raise _error(err) from None


def boards() -> list[AmdBoard]:
    """The visible AMD GPUs, in the process's order. Raises DeviceError without amdsmi."""
    return [AmdBoard(d) for d in visible_gpus()]


def board_by_uuid(uuid: str) -> AmdBoard | None:
    """The AMD GPU with this amdsmi UUID (None if there is none). Raises DeviceError without amdsmi."""
    return next((AmdBoard(d) for d in _devices() if d.uuid == uuid), None)
