"""A simulated ``amdsmi``: the binding's functions our readers call, driven by the same boards as `sim_nvml`.

Faithful to amdsmi 7.0.2 (``amdsmi_interface.py``, ``amdsmi_exception.py``) where our code
depends on it:

* ``amdsmi_get_energy_count`` returns ``energy_accumulator`` (``power`` in releases before
  6.2.1: ``legacy_keys=True``) in counts of ``counter_resolution`` µJ, a C float (15.3 on
  MI200/MI300: 15.300000190734863), advancing every ``counter_period_s``; it wraps at
  2**``counter_bits`` counts; a board without the counter raises NOT_SUPPORTED (VM guests);
* ``amdsmi_get_power_info`` gives whole watts: ``current_socket_power`` on boards that
  report instantaneous power (MI300: ``power_average_s=0``), ``average_socket_power``
  (a 1 s average: MI200, Radeon) otherwise, the other ``"N/A"``; ``socket_power`` is
  whichever the board has;
* ``amdsmi_get_power_cap_info`` and ``amdsmi_set_power_cap`` count µW; setting needs an
  ``int``, root (else ``AMDSMI_STATUS_NO_PERM``) and a cap within the range (else
  ``AMDSMI_STATUS_INVAL``);
* errors: the exception classes below behave as the binding's (``AmdSmiLibraryException``
  with ``get_error_code()``/``get_error_info()``, subclasses of ``AmdSmiException``) with its
  status codes. The real classes cannot be imported without ROCm's library, so they are
  re-created here, names, codes and messages alike.

Call `install` (one test) or `install_for_process` (a launched script): the reader then
uses this object where it would import ``amdsmi``.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from energy_core.devices import amd
from tests.doubles.sim_gpu import SimDriver, SimGpu

AMDSMI_STATUS_INVAL = 1
AMDSMI_STATUS_NOT_SUPPORTED = 2
AMDSMI_STATUS_NO_PERM = 10
AMDSMI_STATUS_IO = 12
AMDSMI_STATUS_NOT_INIT = 32
AMDSMI_STATUS_DRIVER_NOT_LOADED = 34
_INFO = {
    AMDSMI_STATUS_INVAL: "AMDSMI_STATUS_INVAL - Invalid parameters",
    AMDSMI_STATUS_NOT_SUPPORTED: "AMDSMI_STATUS_NOT_SUPPORTED - Feature not supported",
    AMDSMI_STATUS_NO_PERM: "AMDSMI_STATUS_NO_PERM - Permission Denied",
    AMDSMI_STATUS_IO: "AMDSMI_STATUS_IO - I/O Error",
    AMDSMI_STATUS_NOT_INIT: "AMDSMI_STATUS_NOT_INIT - Device not initialized",
    AMDSMI_STATUS_DRIVER_NOT_LOADED: "AMDSMI_STATUS_DRIVER_NOT_LOADED - Driver not loaded",
}
RESOLUTION_UJ = struct.unpack("f", struct.pack("f", 15.3))[0]  # a C float, as the binding returns it
AMD_GPUS = 2  # AmdSmiInitFlags.INIT_AMD_GPUS


class AmdSmiException(Exception):
    """Base smi exception class."""


class AmdSmiLibraryException(AmdSmiException):
    """A status the library returned: ``get_error_code()`` is the AMDSMI_STATUS_* value."""

    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code
        self.err_info = _INFO.get(err_code, "AMDSMI_STATUS_UNKNOWN_ERROR - An unknown error occurred")

    def __str__(self) -> str:
        return f"Error code:\n\t{self.err_code} | {self.err_info}"

    def get_error_info(self, detailed: bool = True) -> str:
        return self.err_info if detailed else self.err_info.split(" - ")[0]

    def get_error_code(self) -> int:
        return self.err_code


class AmdSmiParameterException(AmdSmiException):
    """An argument of the wrong type, refused before the library is called."""

    def __init__(self, received: Any, expected: type) -> None:
        super().__init__(None)
        self.err_code = None
        self.err_msg = f"Invalid parameter:\nActual type: {type(received)}\nExpected type: {expected}"

    def __str__(self) -> str:
        return self.err_msg


class SimAmdSmi(SimDriver):
    """The simulated binding and its GPUs: used where the reader would import ``amdsmi``.

    Args:
        gpus, library, clock, root, state_file: As `SimDriver` (``library=False``: the
            amdgpu driver is not loaded, so ``amdsmi_init`` fails).
        legacy_keys: Answer ``amdsmi_get_energy_count`` as releases before 6.2.1 did.
        counter_override: uuid -> a count the accumulator is stuck at (firmware without
            the counter reports UINT_MAX).
    """

    vendor = "amdsmi"
    LOST_TEXT = "AMDSMI_STATUS_IO - I/O Error"  # what a reader's error says of a board that fell off the bus
    AmdSmiException = AmdSmiException
    AmdSmiLibraryException = AmdSmiLibraryException
    AmdSmiParameterException = AmdSmiParameterException

    def __init__(
        self,
        gpus: list[SimGpu],
        legacy_keys: bool = False,
        counter_override: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(gpus, **kwargs)
        self.legacy_keys = legacy_keys
        self.counter_override: dict[str, int] = dict(counter_override or {})

    def lost(self) -> Exception:
        return AmdSmiLibraryException(AMDSMI_STATUS_IO)

    def _check(self, gpu: SimGpu) -> None:
        if not self.initialised:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)
        super()._check(gpu)

    def bdf(self, gpu: SimGpu) -> str:
        """The board's PCI address: boards sit on buses c1, c9, d1, ... as on an MI250X node."""
        return f"0000:{0xC1 + 8 * self.gpus.index(gpu):02x}:00.0"

    def hip_uuid(self, gpu: SimGpu) -> str:
        """HIP's UUID of the board: ``GPU-`` and 16 hex digits (its serial)."""
        return "GPU-" + hashlib.sha256(gpu.uuid.encode()).hexdigest()[:16]

    # -- the amdsmi API -----------------------------------------------------
    def amdsmi_init(self, flag: int = AMD_GPUS) -> None:
        if not self.library:
            raise AmdSmiLibraryException(AMDSMI_STATUS_DRIVER_NOT_LOADED)
        self.initialised = True

    def amdsmi_shut_down(self) -> None:
        self.initialised = False

    def amdsmi_get_processor_handles(self) -> list[SimGpu]:
        if not self.initialised:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)
        return list(self.gpus)

    def amdsmi_get_gpu_device_uuid(self, gpu: SimGpu) -> str:
        return gpu.uuid

    def amdsmi_get_gpu_device_bdf(self, gpu: SimGpu) -> str:
        return self.bdf(gpu)

    def amdsmi_get_gpu_enumeration_info(self, gpu: SimGpu) -> dict[str, Any]:
        index = self.gpus.index(gpu)
        return {"drm_render": 128 + index, "drm_card": index, "hsa_id": 1 + index, "hip_id": index,
                "hip_uuid": self.hip_uuid(gpu)}  # fmt: skip

    def amdsmi_get_gpu_asic_info(self, gpu: SimGpu) -> dict[str, Any]:
        return {"market_name": gpu.name or "AMD Instinct MI250X", "vendor_id": "0x1002", "device_id": "0x740c"}

    def amdsmi_get_gpu_driver_info(self, gpu: SimGpu) -> dict[str, str]:
        return {"driver_name": "amdgpu", "driver_version": "6.12.12", "driver_date": "2015/01/01 00:00"}

    def amdsmi_get_rocm_version(self) -> tuple[bool, str]:
        return True, "6.4.1"

    def amdsmi_get_energy_count(self, gpu: SimGpu) -> dict[str, Any]:
        self._check(gpu)
        if not gpu.energy_counter:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        joules, since_load = self.counter_joules(gpu)
        base = int(gpu.base_mj / 1000.0 / (RESOLUTION_UJ * 1e-6)) if since_load else 0
        counts = (base + int(joules / (RESOLUTION_UJ * 1e-6))) % 2**gpu.counter_bits
        counts = self.counter_override.get(gpu.uuid, counts)
        key = "power" if self.legacy_keys else "energy_accumulator"
        return {key: counts, "counter_resolution": RESOLUTION_UJ, "timestamp": int(self.clock() * 1e9)}

    def amdsmi_get_power_info(self, gpu: SimGpu) -> dict[str, Any]:
        self._check(gpu)
        instantaneous = gpu.power_average_s == 0
        watts = int(round(self.power_w(gpu, averaged=not instantaneous)))
        return {
            "socket_power": watts,
            "current_socket_power": watts if instantaneous else "N/A",
            "average_socket_power": "N/A" if instantaneous else watts,
            "gfx_voltage": 850,
            "soc_voltage": 900,
            "mem_voltage": 1200,
            "power_limit": self.limit_mw(gpu) // 1000,
        }

    def amdsmi_get_power_cap_info(self, gpu: SimGpu) -> dict[str, int]:
        return {"power_cap": self.limit_mw(gpu) * 1000, "default_power_cap": gpu.default_limit_mw * 1000,
                "dpm_cap": 1700, "min_power_cap": gpu.min_limit_mw * 1000,
                "max_power_cap": gpu.max_limit_mw * 1000}  # fmt: skip

    def amdsmi_set_power_cap(self, gpu: SimGpu, sensor_ind: int, cap: int) -> None:
        for value in (sensor_ind, cap):
            if not isinstance(value, int):
                raise AmdSmiParameterException(value, int)
        if not self.initialised:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)
        if not self.root:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NO_PERM)
        if sensor_ind != 0 or not gpu.min_limit_mw * 1000 <= cap <= gpu.max_limit_mw * 1000:
            raise AmdSmiLibraryException(AMDSMI_STATUS_INVAL)
        self._store_limit(gpu, cap // 1000)


def install(monkeypatch, sim: SimAmdSmi | None) -> SimAmdSmi | None:
    """Make `sim` the reader's amdsmi for one test (None: the package is not installed)."""
    monkeypatch.setattr(amd, "LIBRARY", amd.Binding(sim, load=False))
    return sim


def install_for_process(sim: SimAmdSmi) -> SimAmdSmi:
    """The same for a whole child process (the scripts the tests launch)."""
    amd.LIBRARY = amd.Binding(sim)
    return sim
