"""A simulated NVML: the ``pynvml`` functions our meters call, driven by power traces.

Faithful to the real API where our code depends on it:

* ``nvmlDeviceGetTotalEnergyConsumption`` returns integer **mJ** since "driver load" and
  advances only every ``counter_period_s`` (real boards: roughly 20-100 ms); it raises
  ``NVMLError_NotSupported`` on boards older than Volta;
* ``nvmlDeviceGetPowerUsage`` returns integer **mW**: a 1 s average on Ampere and newer
  (except GA100), instantaneous on older boards;
* errors are the real ``pynvml.NVMLError`` subclasses, built from the real codes;
* MIG instances (``MIG-...`` UUIDs) map to their board; enumeration is PCI order.

The boards themselves (`SimGpu`, what they draw, their limits and faults) are
vendor-neutral (`sim_gpu`). `install` swaps these functions into the real ``pynvml``
module with ``monkeypatch``.
"""

from __future__ import annotations

import pynvml

from tests.doubles.sim_gpu import ARCH_AMPERE, ARCH_HOPPER, ARCH_PASCAL, ARCH_VOLTA, ManualClock, SimDriver, SimGpu

__all__ = ["ARCH_AMPERE", "ARCH_HOPPER", "ARCH_PASCAL", "ARCH_VOLTA", "ManualClock", "SimGpu", "SimNvml", "install"]


USUAL_CAPABILITY = {ARCH_PASCAL: (6, 0), ARCH_VOLTA: (7, 0), ARCH_AMPERE: (8, 6), ARCH_HOPPER: (9, 0)}


def averages_power(gpu: SimGpu) -> bool:
    """NVML's power reading is a 1 s average on Ampere and newer, but for GA100 (A100, A30): instantaneous."""
    return gpu.arch >= ARCH_AMPERE and gpu.compute_capability != (8, 0)


class SimNvml(SimDriver):
    """The simulated NVIDIA driver: a list of boards in PCI order and a clock (see `SimDriver`)."""

    vendor = "nvml"
    LOST_TEXT = "GPU is lost"  # what a reader's error says of a board that fell off the bus

    def lost(self) -> Exception:
        return pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    def _check(self, gpu: SimGpu) -> None:
        if not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        super()._check(gpu)

    # -- the pynvml API -----------------------------------------------------
    def nvmlInit(self) -> None:
        if not self.library:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.159.04"

    def nvmlDeviceGetCount(self) -> int:
        if not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> SimGpu:
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> tuple[str, SimGpu] | SimGpu:
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
            if uuid in gpu.mig_uuids:
                return ("mig", gpu)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: tuple[str, SimGpu]) -> SimGpu:
        if not isinstance(handle, tuple):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle[1]

    def nvmlDeviceGetUUID(self, gpu: SimGpu) -> str:
        return gpu.uuid

    def nvmlDeviceGetName(self, gpu: SimGpu) -> str:
        return gpu.name or "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetArchitecture(self, gpu: SimGpu) -> int:
        return gpu.arch

    def nvmlDeviceGetCudaComputeCapability(self, gpu: SimGpu) -> tuple[int, int]:
        return gpu.compute_capability or USUAL_CAPABILITY[gpu.arch]

    def nvmlDeviceGetMigMode(self, gpu: SimGpu) -> list[int]:
        if gpu.arch < ARCH_AMPERE:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if gpu.mig_uuids else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetTotalEnergyConsumption(self, gpu: SimGpu) -> int:
        self._check(gpu)
        if gpu.arch < ARCH_VOLTA or not gpu.energy_counter:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        joules, since_load = self.counter_joules(gpu)
        return (gpu.base_mj if since_load else 0) + int(1000.0 * joules)

    def nvmlDeviceGetPowerManagementLimit(self, gpu: SimGpu) -> int:
        return self.limit_mw(gpu)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, gpu: SimGpu) -> int:
        return gpu.default_limit_mw

    def nvmlDeviceGetPowerManagementLimitConstraints(self, gpu: SimGpu) -> list[int]:
        return [gpu.min_limit_mw, gpu.max_limit_mw]

    def nvmlDeviceSetPowerManagementLimit(self, gpu: SimGpu, mw: int) -> None:
        if not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        if not self.root:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)
        if not gpu.min_limit_mw <= mw <= gpu.max_limit_mw:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self._store_limit(gpu, int(mw))

    def nvmlDeviceGetPowerUsage(self, gpu: SimGpu) -> int:
        self._check(gpu)
        return int(round(self.power_w(gpu, averaged=averages_power(gpu)) * 1000.0))


API = [name for name in dir(SimNvml) if name.startswith("nvml")]


def install(monkeypatch, sim: SimNvml) -> SimNvml:
    """Replace the real pynvml functions with the simulation's for one test."""
    for name in API:
        monkeypatch.setattr(pynvml, name, getattr(sim, name))
    return sim


def install_for_process(sim: SimNvml) -> SimNvml:
    """The same for a whole child process (the scripts the tests launch)."""
    for name in API:
        setattr(pynvml, name, getattr(sim, name))
    return sim


def end_process_group() -> None:
    """End a launched script's process group on every rank together, then leave at once.

    After a gloo job, torch can abort in C++ during interpreter finalization ("terminate
    called without an active exception", exit -6; about one run in twenty on a loaded
    machine), after every result was written. Leaving with ``os._exit`` skips that
    finalization; the scripts write nothing at exit (no ``atexit`` work of theirs).
    """
    import os
    import sys

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
