"""What every HF adapter needs from the Trainer: messages, stored state, this rank's part in a job.

The HF Trainer does not synchronise ``control`` across ranks: every decision that can stop
or fail a run goes through `energy_core.Ranks.agree`, an all-reduce every rank reaches.
"""

from __future__ import annotations

from typing import Any

from transformers.trainer_callback import TrainerState
from transformers.training_args import TrainingArguments
from transformers.utils import logging

from energy_core.integration import (
    UNLOGGED_DECIDE_EVERY,
    Notice,
    Ranks,
    as_launched,
    torch_distributed,
    warn_at_user_code,
)

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
    stored: dict[str, Any] = state.stateful_callbacks or {}  # type: ignore[assignment]  # a dict in the JSON file
    saved = stored.get(name)
    if isinstance(saved, list):
        saved = saved[0] if saved else None
    return dict(saved.get("attributes", {})) if saved else {}


def decision_every(args: TrainingArguments, state: TrainerState) -> int:
    """Optimizer steps between a job's decisions (a budget's review, a time shift's plan; a collective
    each): the Trainer's ``logging_steps`` (resolved from a ratio), or every `UNLOGGED_DECIDE_EVERY`
    steps where it logs no steps within an epoch (``logging_strategy`` ``"no"`` or ``"epoch"``)."""
    if args.logging_strategy == "steps":
        return max(1, int(state.logging_steps or 1))
    return UNLOGGED_DECIDE_EVERY


def rank_gpu(args: TrainingArguments) -> int | None:
    """The visible GPU index this rank trains on (None: none of its own)."""
    return (args.device.index or 0) if args.device.type == "cuda" else None


def speaks(state: TrainerState, ranks: Ranks) -> bool:
    """Whether this process says the job's messages: HF's world process zero and the job's leader (where
    the Trainer is not parallel in a process group, every process is HF's world process zero)."""
    return state.is_world_process_zero and ranks.leads_job


def ranks_of(args: TrainingArguments) -> Ranks:
    """This process's part in the job.

    With ``torch.distributed`` initialised, the job is its process group, every figure of its shape
    from there (`energy_core.integration.torch_distributed`). Where the Trainer is not parallel in
    it (``args.world_size`` 1: Ray's or torchrun's CPU workers with default arguments), each process
    trains on its own; their figures are still summed over the group, and a node's GPUs are measured
    once, by its local rank 0 (each process would otherwise take ``cuda:0`` for its own).
    Else one process, as the Trainer sees it.
    """
    alone = args.world_size <= 1
    ranks = torch_distributed(gpu_index=None if alone else rank_gpu(args), device=args.device)
    if not ranks.distributed:
        return Ranks(rank=args.process_index, local_rank=args.local_process_index)
    return ranks


def stage_ranks(args: TrainingArguments) -> Ranks:
    """This process's part in an ``evaluate()`` or ``predict()`` before any ``train()``: where the Trainer
    is parallel every process evaluates, and the job is found as `ranks_of` finds it (one gather);
    else each process evaluates on its own, if at all (one may evaluate while the others wait at a
    barrier): `as_launched`, no collective."""
    return ranks_of(args) if args.world_size > 1 else as_launched()


def shape_notices(args: TrainingArguments, ranks: Ranks) -> list[Notice]:
    """What to say when the job (the process group) and the Trainer see different shapes."""
    if not ranks.distributed or ranks.world_size == args.world_size:
        return []
    text = (
        f"torch.distributed is initialised with {ranks.world_size} processes but the Trainer is not parallel "
        f"(parallel_mode={args.parallel_mode.value}): each process trains on its own. The figures are the sum "
        "over all the processes, each device counted once (a node's GPUs by its local rank 0)."
    )
    return [Notice("warn", text)]
