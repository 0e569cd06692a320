"""One callback class for both Lightning flavours.

``lightning.pytorch`` and ``pytorch_lightning`` are separate class hierarchies; a class
deriving from both ``Callback`` bases is accepted by both ``Trainer`` classes. Messages go
through ``lightning_utilities``' rank-zero helpers, which both flavours route to their
own logger.
"""

from __future__ import annotations

from typing import Any

from lightning_utilities.core.rank_zero import rank_zero_info, rank_zero_only, rank_zero_warn
from typing_extensions import override

from energy_core.source import Notice
from energy_core.tracker import Distributed, EnergyTracker

_bases: list[type] = []
try:
    from lightning.pytorch import Callback as _LightningCallback

    _bases.append(_LightningCallback)
except ImportError:  # pragma: no cover - depends on what is installed
    pass
try:
    from pytorch_lightning import Callback as _PLCallback

    _bases.append(_PLCallback)
except ImportError:  # pragma: no cover
    pass
if not _bases:  # pragma: no cover
    raise ImportError("lightning_energy needs `lightning` or `pytorch_lightning`: pip install 'energy-callbacks[lightning]'")

CALLBACK_BASES: tuple[type, ...] = tuple(_bases)


def emit(notices: list[Notice]) -> None:
    """Show discovery notices once, on rank zero."""
    for notice in notices:
        if notice.level == "warn":
            rank_zero_warn(notice.text)
        else:
            rank_zero_info(notice.text)




def rank_gpus(trainer: Any) -> list[int] | None:
    """The visible GPU indices this rank trains on (None: none of its own, see `configure_ranks`)."""
    root = trainer.strategy.root_device
    return [root.index or 0] if root.type == "cuda" else None


def configure_ranks(tracker: EnergyTracker, trainer: Any) -> None:
    """Prepare a tracker for this rank before it starts (no-op in a single process).

    Each rank measures the GPU it trains on; CPU, DRAM and GPUs that no rank trains on
    are node devices, measured by the node's local rank 0 only. Figures are summed over
    ranks with the strategy's ``reduce`` at logging boundaries; rank 0 writes the record.
    """
    if not trainer.is_global_zero:
        tracker.record = None
    if trainer.world_size <= 1:
        return
    import torch
    import torch.distributed as dist

    gpus = rank_gpus(trainer)
    tracker.meter.cuda_indices = gpus if gpus is not None or trainer.local_rank == 0 else []
    tracker.meter.node_devices = trainer.local_rank == 0
    device = trainer.strategy.root_device

    def reduce_sum(values: list[float]) -> list[float]:
        return trainer.strategy.reduce(torch.tensor(values, dtype=torch.float64, device=device), reduce_op="sum").tolist()

    def gather(obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * trainer.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    tracker.set_distributed(Distributed(trainer.global_rank, trainer.world_size, reduce_sum,
                                        gather if dist.is_available() and dist.is_initialized() else None))  # fmt: skip


def own_share() -> bool:
    """Whether this process carries a checkpoint's totals (global rank 0 only)."""
    return getattr(rank_zero_only, "rank", 0) == 0


__all__ = ["CALLBACK_BASES", "configure_ranks", "emit", "override", "own_share", "rank_zero_info", "rank_zero_warn"]
