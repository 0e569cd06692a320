"""What every GPU vendor module shares: the plausible power bound and the loop that opens sources.

A vendor module (`nvidia`, `amd`) lists the process's visible boards and knows how to
open one; opening them for a rank, skipping one that cannot be read and telling the user
why is the same for every vendor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from energy_core.devices.source import EnergySource
from energy_core.notices import Notice

GPU_MAX_POWER_W = 3000.0  # when the board does not say: no GPU board draws more


class Visible(Protocol):
    """A visible GPU: its index among the process's devices and its UUID."""

    @property
    def cuda_index(self) -> int: ...

    @property
    def uuid(self) -> str: ...


class GpuSource(EnergySource):
    """An energy source of a GPU. ``notes``: what to tell the user once about how it is read."""

    notes: list[str]


G = TypeVar("G", bound=Visible)


def max_power_w(highest_limit_w: float | None) -> float:
    """The most a board could plausibly draw: twice the highest limit it accepts, else `GPU_MAX_POWER_W`."""
    return 2.0 * highest_limit_w if highest_limit_w and highest_limit_w > 0 else GPU_MAX_POWER_W


def open_sources(
    gpus: Sequence[G],
    cuda_indices: Sequence[int] | None,
    open_one: Callable[[G], GpuSource],
    vendor: str,
) -> tuple[list[EnergySource], list[Notice]]:
    """Open a source for each visible GPU (of one rank when `cuda_indices` is given).

    Args:
        gpus: The visible GPUs of one vendor, in the process's order.
        cuda_indices: Only these visible indices; None means all.
        open_one: Opens one GPU's source (its ``notes`` are shown once). A GPU for which it
            raises anything (the vendor's error or any other a binding may raise) is skipped
            with a warning; the others are measured.
        vendor: ``"NVIDIA"``, ``"AMD"``, for messages.
    """
    if cuda_indices is not None:
        wanted = set(cuda_indices)
        gpus = [g for g in gpus if g.cuda_index in wanted]
    notices = [] if gpus else [Notice("info", f"No {vendor} GPU visible to this process.")]
    sources: list[EnergySource] = []
    for gpu in gpus:
        try:
            source = open_one(gpu)
        except Exception as err:  # noqa: BLE001 - one GPU that cannot be opened never stops the others or the run
            why = f"{type(err).__name__}: {err}"
            notices.append(Notice("warn", f"GPU {gpu.cuda_index} ({gpu.uuid}) cannot be read ({why}); skipped."))
            continue
        sources.append(source)
        notices += [Notice("info", text) for text in source.notes]
    return sources, notices
