"""This process's part in a Lightning Fabric job, with Fabric's own collectives (no Lightning import)."""

from __future__ import annotations

from typing import Any

from energy_core.accounting.ranks import Ranks, let_go


def fabric_ranks(fabric: Any) -> Ranks:
    """A `Ranks` for ``EnergyLoop(ranks=...)`` from a launched ``lightning.fabric.Fabric``.

    Sums and decisions go through ``fabric.all_reduce`` on ``fabric.device``, so they work with
    every strategy Fabric runs; the rank trains on the GPU of ``fabric.device`` (none on a CPU).
    The record's per-rank header needs an object gather: it is ``torch.distributed``'s where
    Fabric initialised a process group (DDP, FSDP, DeepSpeed), else the header lists rank 0 only.

    Examples:
        >>> fabric = L.Fabric(accelerator="cpu", devices=2, strategy="ddp")   # doctest: +SKIP
        >>> fabric.launch()                                                     # doctest: +SKIP
        >>> with EnergyLoop(ranks=fabric_ranks(fabric)) as energy:              # doctest: +SKIP
        ...     ...
    """
    import torch
    import torch.distributed as dist

    device = fabric.device

    def total(values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        summed = fabric.all_reduce(tensor, reduce_op="sum").tolist()
        let_go(tensor)  # before the script can end (`let_go`)
        return summed

    def gather(obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * fabric.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def any_rank(flag: bool) -> bool:
        return total([float(flag)])[0] > 0

    gpu = (device.index or 0) if device.type == "cuda" else None
    can_gather = dist.is_available() and dist.is_initialized()
    ranks = Ranks(
        fabric.global_rank, fabric.local_rank, fabric.world_size, gpu, total, gather if can_gather else None, any_rank
    )
    return ranks.share_boards()  # ranks that share one board (or MIG instances of one) count it once
