"""Agreement across ranks for HF Trainer runs (the Trainer does not synchronise ``control``)."""

from __future__ import annotations

from transformers.training_args import TrainingArguments


def all_ranks_agree(flag: bool, args: TrainingArguments) -> bool:
    """True on every rank if it is True on any: an all-reduce that every rank must reach."""
    import torch
    import torch.distributed as dist

    if args.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=args.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
