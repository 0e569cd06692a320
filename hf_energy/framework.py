"""What every HF adapter needs from the Trainer: messages, stored state, this rank's part in a job.

The HF Trainer does not synchronise ``control`` across ranks: every decision that can stop
or fail a run goes through `energy_core.Ranks.agree`, an all-reduce every rank reaches.
"""

from __future__ import annotations

from typing import Any

from transformers.trainer_callback import TrainerState
from transformers.training_args import TrainingArguments
from transformers.utils import logging

from energy_core.integration import Notice, Ranks, torch_distributed, warn_at_user_code

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


def rank_gpu(args: TrainingArguments) -> int | None:
    """The visible GPU index this rank trains on (None: none of its own)."""
    return (args.device.index or 0) if args.device.type == "cuda" else None


def ranks_of(args: TrainingArguments) -> Ranks:
    """This process's part in the job, with ``torch.distributed`` collectives when initialised."""
    ranks = torch_distributed(args.local_process_index, rank_gpu(args), args.device)
    return ranks if ranks.distributed else Ranks(rank=args.process_index, local_rank=args.local_process_index)
