"""A simulated NVML: the ``pynvml`` functions our meters call, driven by power traces.

Faithful to the real API where our code depends on it:

* ``nvmlDeviceGetTotalEnergyConsumption`` returns integer **mJ** since "driver load" and
  advances only every ``counter_period_s`` (real boards: roughly 20-100 ms); it raises
  ``NVMLError_NotSupported`` on boards older than Volta;
* ``nvmlDeviceGetPowerUsage`` returns integer **mW**: a 1 s average on Ampere and newer
  (except GA100), instantaneous on older boards;
* errors are the real ``pynvml.NVMLError`` subclasses, built from the real codes;
* MIG instances (``MIG-...`` UUIDs) map to their board; enumeration is PCI order.

`install` swaps these functions into the real ``pynvml`` module with ``monkeypatch``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pynvml

from tests.doubles.power_traces import Constant, Trace

ARCH_PASCAL, ARCH_VOLTA, ARCH_AMPERE, ARCH_HOPPER = 4, 5, 7, 9


@dataclass
class SimGpu:
    uuid: str
    trace: Trace = field(default_factory=lambda: Constant(300.0))
    name: str = "NVIDIA H100 80GB HBM3"
    arch: int = ARCH_HOPPER
    counter_period_s: float = 0.02
    power_average_s: float = 1.0  # 0 means instantaneous readings
    base_mj: int = 123_456_789  # energy since driver load before the test began
    mig_uuids: tuple[str, ...] = ()
    fail_between: tuple[float, float] | None = None  # seconds since start: reads raise GPU_IS_LOST
    # Field faults (seconds since start). A driver reload restarts the counter from 0; a
    # corrupt read adds 1e12 mJ (power: 1e12 mW, or the given mW); a broken binding raises
    # a non-NVML exception; a hung call blocks until `release` is set.
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


class SimNvml:
    """The simulated driver: a list of boards in PCI order and a clock.

    Args:
        gpus: The boards; an empty list behaves like a machine with the driver but no GPU.
        library: False behaves like a machine without the NVML library.
        clock: Seconds; defaults to ``time.perf_counter`` (the meters' clock).
    """

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
        self.root = root  # False: setting limits raises NVML_ERROR_NO_PERMISSION, as for a normal user
        self.state_file = state_file  # the driver's limits, shared by processes (persistence mode)
        if state_file is not None and not state_file.exists():
            state_file.write_text(json.dumps({g.uuid: g.default_limit_mw for g in gpus}))

    # -- the driver's power limits, which outlive a process --------------------
    def limit_mw(self, gpu: SimGpu) -> int:
        if self.state_file is not None:
            return int(json.loads(self.state_file.read_text())[gpu.uuid])
        return gpu.limit_history[-1][1] if gpu.limit_history else gpu.default_limit_mw

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

    def _check(self, gpu: SimGpu) -> None:
        if not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        gpu.calls += 1
        t = self.elapsed()
        if gpu.fail_between is not None and gpu.fail_between[0] <= t < gpu.fail_between[1]:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if gpu.raise_between is not None and gpu.raise_between[0] <= t < gpu.raise_between[1]:
            raise gpu.raise_between[2]("simulated failure of the binding")
        if gpu.hang_after is not None and t >= gpu.hang_after:
            gpu.release.wait()  # a driver call that does not return

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
        return gpu.name

    def nvmlDeviceGetArchitecture(self, gpu: SimGpu) -> int:
        return gpu.arch

    def nvmlDeviceGetMigMode(self, gpu: SimGpu) -> list[int]:
        if gpu.arch < ARCH_AMPERE:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if gpu.mig_uuids else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetTotalEnergyConsumption(self, gpu: SimGpu) -> int:
        self._check(gpu)
        if gpu.arch < ARCH_VOLTA:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        t = self.elapsed()
        updated = math.floor(t / gpu.counter_period_s) * gpu.counter_period_s
        if gpu.spike_between is not None and gpu.spike_between[0] <= t < gpu.spike_between[1]:
            return gpu.base_mj + int(1000.0 * self._capped_energy(gpu, updated)) + 10**12
        if gpu.reset_at is not None and t >= gpu.reset_at:  # the driver reloaded: counting from 0 again
            return int(1000.0 * (self._capped_energy(gpu, updated) - self._capped_energy(gpu, gpu.reset_at)))
        return gpu.base_mj + int(1000.0 * self._capped_energy(gpu, updated))

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
        t = self.elapsed()
        if gpu.power_mw_between is not None and gpu.power_mw_between[0] <= t < gpu.power_mw_between[1]:
            return gpu.power_mw_between[2]
        if gpu.power_average_s > 0 and gpu.arch >= ARCH_AMPERE:
            window = min(gpu.power_average_s, t) or 1e-9
            watts = gpu.trace.between(t - window, t) / window
        else:
            watts = gpu.trace.power(t)
        return int(round(watts * 1000.0))


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
    """End a launched script's process group on every rank together."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class ManualClock:
    """A clock the test advances by hand, for deterministic sampler tests."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
