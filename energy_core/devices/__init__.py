"""Devices: every hardware reader behind one interface; nothing above this package knows a vendor.

* `source` - the interfaces: `EnergySource` (a reader), `GpuBoard` (power limits);
* `ledger` - a source's readings turned into monotone joules: resets, glitches and gaps
  handled the same way for every vendor;
* `nvidia` - NVIDIA GPUs through NVML; `amd` - AMD GPUs through amdsmi; `rapl` - CPU
  package and DRAM through Linux RAPL; `cpu_estimate` - this process tree's CPU time (and
  memory) where RAPL cannot be read;
* shared by the readers: `counter` (wrapping counters), `visible` (which GPUs a process
  sees), `gpu` (opening a vendor's GPU sources), `deadline` (driver calls the training
  thread waits for, each at most `DRIVER_WAIT_S`).

Every call into a vendor's library from the functions below goes through `_ask`: it is
waited for at most `DRIVER_WAIT_S`, and whatever it raises (a binding may raise more than
its own error class) becomes a `DeviceError`. Discovery turns that into one notice and
leaves the vendor out; training starts all the same.

A new GPU vendor is a module with the members of `GPU_VENDORS`' modules (``VENDOR``,
``discover_gpus``, ``boards``, ``board_by_uuid``, ``driver_version``), listed there. On a
machine with GPUs of both vendors, the vendor torch computes on comes first and keeps its
device indices; the other's GPUs are numbered after them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from energy_core.devices import amd, cpu_estimate, nvidia, rapl, visible
from energy_core.devices.deadline import BoundedBoard, library_name, within_bound
from energy_core.devices.ledger import Ledger
from energy_core.devices.source import (
    DEVICE_KINDS,
    Accuracy,
    DeviceError,
    EnergySource,
    GpuBoard,
    LimitRange,
    Reading,
    SourceInfo,
)
from energy_core.notices import Notice

GPU_VENDORS: tuple[ModuleType, ...] = (nvidia, amd)
T = TypeVar("T")

__all__ = [
    "DEVICE_KINDS",
    "Accuracy",
    "DeviceError",
    "EnergySource",
    "GpuBoard",
    "Ledger",
    "LimitRange",
    "Reading",
    "SourceInfo",
    "board_by_uuid",
    "discover",
    "drivers",
    "parse_devices",
    "visible_boards",
]


def discover(
    kinds: Sequence[str],
    explicit: bool,
    gpu_indices: Sequence[int] | None = None,
    node_devices: bool = True,
    rapl_root: Path | None = None,
    cpu_tdp_w: float | None = None,
    host_peers: Sequence[cpu_estimate.Process] = (),
) -> tuple[list[EnergySource], list[Notice]]:
    """Open a source for every device of the requested kinds this process should measure.

    Args:
        kinds: Drawn from `DEVICE_KINDS`.
        explicit: Whether the user named the kinds (a missing kind is then worth a warning).
        gpu_indices: Only these visible GPUs (one rank's); None means all visible.
        node_devices: Open CPU and DRAM sources (False on all but one rank of a host).
        rapl_root: The powercap directory, for tests.
        cpu_tdp_w: The CPU socket's TDP for the CPU estimate, instead of codecarbon's table.
        host_peers: The host's other ranks (`cpu_estimate.this_process` of each), whose CPU time and
            memory the estimates count with this process's (RAPL reads the whole package anyway).

    Returns:
        The sources and the notices to show once. Missing hardware is not an error.
    """
    sources: list[EnergySource] = []
    notices: list[Notice] = []
    if "gpu" in kinds:
        taken: set[int] = set()
        for vendor in _vendors():
            try:
                gpus, found = _ask(vendor, partial(vendor.discover_gpus, gpu_indices))
            except DeviceError as err:
                notices.append(Notice("warn", f"{vendor.VENDOR.upper()} GPUs are not measured: {err}."))
                continue
            for source in gpus:
                index = _number(int(source.info.name[3:]), taken)
                source.info = dataclasses.replace(source.info, name=f"gpu{index}")
            sources += gpus
            notices += found
    node_kinds = {k for k in kinds if k in ("cpu", "dram")} if node_devices else set()
    if node_kinds:
        readers, found = rapl.discover_rapl(node_kinds, rapl_root)
        sources += readers
        notices += found
        measured = {s.info.kind for s in readers}
        if "cpu" in node_kinds and "cpu" not in measured:
            estimate, found = cpu_estimate.estimate_cpu(cpu_tdp_w, host_peers)
            sources.append(estimate)
            notices += found
        if "dram" in node_kinds and "dram" not in measured and explicit:
            dram, found = cpu_estimate.estimate_dram(host_peers)
            sources.append(dram)
            notices += found
    if explicit and "gpu" in kinds and not any(s.info.kind == "gpu" for s in sources):
        notices = [Notice("warn", n.text) if "GPU" in n.text else n for n in notices]  # asked for: a warning
    if sources:
        names = ", ".join(s.info.name + (" (estimated)" if s.info.estimated else "") for s in sources)
        notices.append(Notice("info", f"Measuring energy of: {names}."))
    else:
        notices.append(Notice("warn", f"Nothing to measure among {', '.join(kinds)}: energy stays at zero."))
    return sources, notices


def visible_boards() -> list[GpuBoard]:
    """Every GPU board this process can see, of every vendor, for power limits.

    Raises:
        DeviceError: when no vendor library can be reached at all (naming why, for each).
    """
    found: list[GpuBoard] = []
    errors: list[DeviceError] = []
    taken: set[int] = set()
    for vendor in _vendors():
        try:
            boards = _ask(vendor, vendor.boards)
        except DeviceError as err:
            errors.append(err)
            continue
        for board in boards:
            board.index = _number(board.index, taken)
        found += [BoundedBoard(board) for board in boards]
    if not found and errors:
        raise DeviceError("; ".join(map(str, errors)))
    return found


def board_by_uuid(uuid: str) -> GpuBoard | None:
    """The board with this UUID, of any vendor (None if none has it)."""
    for vendor in _vendors():
        try:
            board = _ask(vendor, partial(vendor.board_by_uuid, uuid))
        except DeviceError:
            continue
        if board is not None:
            return BoundedBoard(board)
    return None


def drivers() -> dict[str, str]:
    """Driver version per GPU vendor present, for the run record."""
    found = {}
    for vendor in GPU_VENDORS:
        try:
            version = _ask(vendor, vendor.driver_version)
        except DeviceError:
            continue
        if version is not None:
            found[vendor.VENDOR] = version
    return found


def _ask(vendor: ModuleType, call: Callable[[], T]) -> T:
    """One vendor's driver calls, waited for at most `DRIVER_WAIT_S`.

    Raises:
        DeviceError: anything the binding raised, named by its class, or a call that did
            not return in time (`deadline.DriverHung`).
    """
    try:
        return within_bound(library_name(vendor.VENDOR), call)
    except DeviceError:
        raise
    except Exception as err:  # noqa: BLE001 - a binding may raise anything; the caller gets one kind of error
        raise DeviceError(
            f"the {vendor.VENDOR.upper()} driver's library failed ({type(err).__name__}: {err})"
        ) from None


def _vendors() -> tuple[ModuleType, ...]:
    """`GPU_VENDORS`, the one torch computes on first (its GPUs keep torch's indices)."""
    first = visible.torch_vendor()
    return tuple(sorted(GPU_VENDORS, key=lambda vendor: vendor.VENDOR != first))


def _number(index: int, taken: set[int]) -> int:
    """`index`, or the next free one above every index taken (a second vendor's GPUs come after the first's)."""
    if index in taken:
        index = max(taken) + 1
    taken.add(index)
    return index


def parse_devices(devices: Any) -> tuple[tuple[str, ...], bool]:
    """Validate ``devices``: ``"auto"`` or a list drawn from ``"gpu"``, ``"cpu"``, ``"dram"``.

    Returns:
        (kinds, explicit): the kinds to measure and whether the user named them.
    """
    allowed = f"'auto' or a non-empty list drawn from {', '.join(map(repr, DEVICE_KINDS))}"
    if isinstance(devices, str):
        if devices == "auto":
            return DEVICE_KINDS, False
        devices = [devices]
    if not isinstance(devices, Sequence):
        raise TypeError(f"devices must be {allowed}; got {type(devices).__name__} {devices!r}")
    kinds = tuple(dict.fromkeys(d for d in devices if isinstance(d, str)))
    if not kinds or len(kinds) != len(set(devices)) or any(d not in DEVICE_KINDS for d in kinds):
        raise ValueError(f"devices must be {allowed}; got {devices!r}")
    return kinds, True
