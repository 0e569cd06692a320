"""Agreement across ranks for HF Trainer runs (the Trainer does not synchronise ``control``)."""

from __future__ import annotations

from typing import Any

from transformers.trainer_callback import TrainerState
from transformers.training_args import TrainingArguments

from energy_core.tracker import Distributed, EnergyTracker


def all_ranks_agree(flag: bool, args: TrainingArguments) -> bool:
    """True on every rank if it is True on any: an all-reduce that every rank must reach."""
    import torch
    import torch.distributed as dist

    if args.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=args.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def rank_gpus(args: TrainingArguments) -> list[int] | None:
    """The visible GPU indices this rank trains on (None: none of its own)."""
    return [args.device.index or 0] if args.device.type == "cuda" else None


def configure_ranks(tracker: EnergyTracker, args: TrainingArguments, state: TrainerState) -> None:
    """Prepare a tracker for this process before it starts (no-op in a single process).

    Each rank measures the GPU it trains on (``args.device``); CPU, DRAM and GPUs no rank
    trains on are node devices, measured by the node's local process zero only. Figures
    are summed over ranks with ``torch.distributed`` at logging boundaries; world process
    zero writes the record.
    """
    if not state.is_world_process_zero:
        tracker.record = None
    import torch.distributed as dist

    if args.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return
    import torch

    device = args.device
    own = rank_gpus(args)
    tracker.meter.cuda_indices = own if own is not None or state.is_local_process_zero else []
    tracker.meter.node_devices = state.is_local_process_zero

    def reduce_sum(values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def gather(obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, obj)
        return gathered

    tracker.set_distributed(Distributed(dist.get_rank(), dist.get_world_size(), reduce_sum, gather))
