"""What every HF adapter needs from the Trainer: messages, stored state, this rank's part in a job.

The HF Trainer does not synchronise ``control`` across ranks: every decision that can stop
or fail a run goes through `energy_core.Ranks.agree`, an all-reduce every rank reaches.
"""

from __future__ import annotations

from typing import Any

from transformers.trainer_callback import TrainerState
from transformers.training_args import TrainingArguments
from transformers.utils import logging

from energy_core import Notice, Ranks
from energy_core.notices import warn_at_user_code

logger = logging.get_logger("hf_energy")


def emit(notices: list[Notice], show: bool = True) -> None:
    """Show notices once: warnings as warnings, the rest on the transformers logger."""
    if not show:
        return
    for notice in notices:
        if notice.level == "warn":
            warn_at_user_code(notice.text)
        else:
            logger.info(notice.text)


def stored_attributes(state: TrainerState, name: str) -> dict[str, Any]:
    """The ``attributes`` a callback class stored in ``trainer_state.json`` ({} if none)."""
    saved = (state.stateful_callbacks or {}).get(name)
    if isinstance(saved, list):
        saved = saved[0] if saved else None
    return dict(saved.get("attributes", {})) if saved else {}


def rank_gpu(args: TrainingArguments) -> int | None:
    """The visible GPU index this rank trains on (None: none of its own)."""
    return (args.device.index or 0) if args.device.type == "cuda" else None


def ranks_of(args: TrainingArguments) -> Ranks:
    """This process's part in the job, with ``torch.distributed`` collectives when initialised."""
    import torch.distributed as dist

    if args.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return Ranks(rank=args.process_index, local_rank=args.local_process_index)
    import torch

    device = args.device

    def total(values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def gather(obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, obj)
        return gathered

    def any_rank(flag: bool) -> bool:
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    return Ranks(
        dist.get_rank(), args.local_process_index, dist.get_world_size(), rank_gpu(args), total, gather, any_rank
    )
