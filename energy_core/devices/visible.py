"""Which physical GPUs a process sees, for every vendor: visible-device variables and torch's own view.

The vendors' libraries (NVML, amdsmi) enumerate every board of the machine, in their own
order, and ignore the variables that renumber devices for a process
(``CUDA_VISIBLE_DEVICES``; on ROCm ``ROCR_VISIBLE_DEVICES``, then ``HIP_VISIBLE_DEVICES``
or ``CUDA_VISIBLE_DEVICES``). The rules both runtimes share live here: an entry is an
index or a (prefix of a) UUID, entries are read up to the first invalid one, and a board
named twice counts once, at its first position. When torch has already initialised its
GPUs, their identities (UUID on CUDA, PCI address on ROCm) are exact whatever the order,
so they are preferred.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

Board = TypeVar("Board")


@dataclass(frozen=True)
class TorchGpu:
    """One GPU as torch sees it.

    Args:
        uuid: The runtime's UUID string (``str(props.uuid)``), or "" when torch has none.
        bdf: The PCI address ``"dddd:bb:dd"`` (function left out), or None when torch has none.
    """

    uuid: str
    bdf: str | None


def torch_vendor() -> str | None:
    """``"amd"`` for a ROCm build of torch, ``"nvidia"`` for a CUDA build, None without torch loaded."""
    torch = sys.modules.get("torch")
    version = getattr(torch, "version", None)
    if version is None:
        return None
    if getattr(version, "hip", None):
        return "amd"
    return "nvidia" if getattr(version, "cuda", None) else None


def torch_gpus(vendor: str) -> list[TorchGpu] | None:
    """The process's visible GPUs in torch's order, if torch is loaded, built for `vendor` and has GPUs."""
    torch = sys.modules.get("torch")
    if torch is None or torch_vendor() != vendor:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        found = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            bus = getattr(props, "pci_bus_id", None)  # torch 2.6 and newer
            bdf = None if bus is None else f"{props.pci_domain_id:04x}:{bus:02x}:{props.pci_device_id:02x}"
            found.append(TorchGpu(str(getattr(props, "uuid", "")), bdf))
        return found
    except Exception:  # noqa: BLE001 - an odd build or a runtime error: the environment variables decide instead
        return None


def entries(variable: str) -> list[str] | None:
    """The comma-separated entries of a visible-devices variable; None when it is unset."""
    value = os.environ.get(variable)
    if value is None:
        return None
    return [e.strip() for e in value.split(",") if e.strip()]


def by_uuid_prefix(entry: str, boards: Mapping[str, Board]) -> Board | None:
    """The one board whose UUID starts with `entry` (case-insensitive), as the runtimes accept."""
    matches: list[Board] = []
    for uuid, board in boards.items():
        if uuid.lower().startswith(entry.lower()) and not any(board is m for m in matches):
            matches.append(board)
    return matches[0] if len(matches) == 1 else None


def by_index_or_uuid(entry: str, ordered: Sequence[Board], uuids: Mapping[str, Board]) -> Board | None:
    """An index into `ordered`, or else a UUID (prefix) among `uuids`; None when it names no board."""
    if entry.isdigit():
        index = int(entry)
        return ordered[index] if index < len(ordered) else None
    return by_uuid_prefix(entry, uuids)


def select(
    names: Sequence[str], resolve: Callable[[str], Board | None], key: Callable[[Board], str]
) -> list[tuple[int, Board]]:
    """(visible index, board) for each entry up to the first one `resolve` rejects.

    Args:
        names: The entries, in the process's order.
        resolve: An entry to its board, or None when invalid (the runtime stops there).
        key: A board's identity: a board named twice (e.g. two MIG instances of it)
            counts once, at its first position.
    """
    result: list[tuple[int, Board]] = []
    seen: set[str] = set()
    for index, name in enumerate(names):
        board = resolve(name)
        if board is None:
            break
        if key(board) not in seen:
            seen.add(key(board))
            result.append((index, board))
    return result


def by_torch_pci_address(vendor: str, boards: Mapping[str, Board]) -> list[tuple[int, Board]] | None:
    """(torch index, board) for torch's GPUs matched by PCI address, if torch has them and all match.

    Args:
        vendor: The vendor whose torch build to ask (``"amd"`` for ROCm).
        boards: Boards by PCI address ``"dddd:bb:dd.f"`` (torch gives no function: it is ignored).
    """
    by_device = {address.lower()[:10]: board for address, board in boards.items()}
    seen = torch_gpus(vendor)
    if not seen or not all(g.bdf in by_device for g in seen):
        return None
    return [(i, by_device[g.bdf]) for i, g in enumerate(seen) if g.bdf is not None]


def rocm_select(
    boards: Sequence[Board], uuids: Mapping[str, Board], key: Callable[[Board], str]
) -> list[tuple[int, Board]]:
    """ROCm's rules: ``ROCR_VISIBLE_DEVICES`` picks among all GPUs, then ``HIP_VISIBLE_DEVICES``
    (or ``CUDA_VISIBLE_DEVICES`` when it is unset) picks among those.

    Args:
        boards: Every GPU, in the runtime's order with nothing hidden.
        uuids: The boards by every UUID an entry may give.
        key: A board's identity (`select`).
    """
    chosen = list(enumerate(boards))
    for variables in (("ROCR_VISIBLE_DEVICES",), ("HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")):
        names = next((found for v in variables if (found := entries(v)) is not None), None)
        if names is not None:
            pool = [board for _, board in chosen]

            def find(entry: str, pool: list[Board] = pool) -> Board | None:
                return by_index_or_uuid(entry, pool, uuids)

            chosen = select(names, find, key)
    return chosen
