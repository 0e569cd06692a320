"""One callback class for both Lightning flavours, and this rank's part in a job.

``lightning.pytorch`` and ``pytorch_lightning`` are separate class hierarchies; a class
deriving from both ``Callback`` bases is accepted by both ``Trainer`` classes. Messages go
through ``lightning_utilities``' rank-zero helpers, which both flavours route to their
own logger.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import override

from energy_core.integration import BudgetAction, Notice, Ranks, end_status, let_go, warn_at_user_code

# Lightning first: without it, lightning_utilities (its dependency) is missing too, and the
# message must name the extra rather than that module.
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
    raise ImportError(
        "lightning_energy needs lightning or pytorch_lightning: pip install 'energy-callbacks[lightning]'"
    )

from lightning_utilities.core.rank_zero import rank_zero_info, rank_zero_only, rank_zero_warn  # noqa: E402

CALLBACK_BASES: tuple[type, ...] = tuple(_bases)


def emit(notices: list[Notice]) -> None:
    """Show notices once, on rank zero: warnings pointed at the user's code, the rest as info."""
    for notice in notices:
        if notice.level == "warn":
            if getattr(rank_zero_only, "rank", 0) == 0:
                warn_at_user_code(notice.text)
        else:
            rank_zero_info(notice.text)


def rank_gpu(trainer: Any) -> int | None:
    """The visible GPU index this rank trains on (None: none of its own)."""
    root = trainer.strategy.root_device
    return (root.index or 0) if root.type == "cuda" else None


def ranks_of(trainer: Any) -> Ranks:
    """This rank's part in the job, with the strategy's collectives (see `energy_core.Ranks`)."""
    if trainer.world_size <= 1:
        return Ranks(rank=trainer.global_rank, local_rank=trainer.local_rank)
    import torch
    import torch.distributed as dist

    device = trainer.strategy.root_device

    def total(values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        summed = trainer.strategy.reduce(tensor, reduce_op="sum").tolist()
        let_go(tensor)  # before the script can end (`let_go`)
        return summed

    def gather(obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * trainer.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def any_rank(flag: bool) -> bool:
        return total([float(flag)])[0] > 0

    can_gather = dist.is_available() and dist.is_initialized()
    ranks = Ranks(
        trainer.global_rank,
        trainer.local_rank,
        trainer.world_size,
        rank_gpu(trainer),
        total,
        gather if can_gather else None,
        any_rank,
    )
    return ranks.share_boards()  # ranks that share one board (or MIG instances of one) count it once


def find_callback(trainer: Any, cls: type) -> Any:
    """The trainer's first callback of this class, or None."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, cls)), None)


def stop(trainer: Any, reason: str) -> str:
    """Ask the trainer to stop (``trainer.should_stop``); ``reason``, with a note when Lightning's
    ``min_epochs``/``min_steps`` will keep it training, which ``should_stop`` cannot override."""
    trainer.should_stop = True
    blocked = _held(trainer)
    if not blocked:
        return reason
    return (
        f"{reason} Note: Lightning keeps training until {' and '.join(blocked)} are reached; "
        "a stop from a callback (trainer.should_stop) cannot override them."
    )


def log(trainer: Any, metrics: dict[str, float], logged: dict[str, float] | None = None) -> None:
    """Log figures to every logger of the trainer at its global step, and leave them where
    Lightning's callbacks look (``trainer.callback_metrics``: ``ModelCheckpoint(monitor=...)``,
    ``EarlyStopping``, Ray's ``RayTrainReportCallback``).

    They are set as they are, already the job's on every rank: Lightning neither reduces nor
    keeps them per step, and a key keeps its latest value until the next one. ``logged``: the
    part of them the loggers get (default: all), where the step already has values of the others.
    """
    if not metrics:
        return
    for logger in trainer.loggers if logged is None or logged else ():
        logger.log_metrics(metrics if logged is None else logged, step=trainer.global_step)
    import torch

    trainer.callback_metrics.update({key: torch.tensor(value, dtype=torch.float64) for key, value in metrics.items()})


def run_first(trainer: Any, callback: Any) -> None:
    """Move ``callback`` just before the first of the trainer's other callbacks that acts at a
    training epoch's end (Ray's ``RayTrainReportCallback``, ``EarlyStopping``, a budget), so that
    what they report, check or save there holds the epoch's figures, in whatever order the
    callbacks were given. Callbacks that do nothing at an epoch's end keep their place."""
    callbacks = trainer.callbacks
    if callback not in callbacks:
        return
    base_hooks = {getattr(base, "on_train_epoch_end") for base in CALLBACK_BASES}  # noqa: B009 - types of a tuple
    readers = [i for i, other in enumerate(callbacks) if type(other).on_train_epoch_end not in base_hooks]
    first = readers[0]
    if callbacks[first] is not callback:  # the monitor is a reader too: only one listed before it moves it
        callbacks.remove(callback)
        callbacks.insert(first, callback)


def _epochs_done(trainer: Any) -> int:
    """The epochs Lightning counts as done when it next asks whether it may stop. It counts an epoch once
    its data runs out (``epoch_progress.current.processed``, raised just before ``on_train_epoch_end``),
    so from the last batch of an epoch in progress on (its validation, its end) that epoch counts. An
    epoch is in progress once started and not yet processed: ``is_last_batch`` is left over from the
    last epoch until the next one's first batch (a resume from an epoch's end restores it too)."""
    loop = getattr(trainer, "fit_loop", None)
    if loop is None:
        return int(trainer.current_epoch)
    current = loop.epoch_progress.current
    ending = current.started > current.processed and bool(loop.epoch_loop.batch_progress.is_last_batch)
    return int(current.processed) + int(ending)


def _held(trainer: Any) -> list[str]:
    """The trainer's settings that keep it training past ``should_stop`` now (``min_epochs=3``...)."""
    blocked = []
    if trainer.min_epochs and _epochs_done(trainer) < trainer.min_epochs:  # it ends the epoch it is in
        blocked.append(f"min_epochs={trainer.min_epochs}")
    if trainer.min_steps and trainer.global_step < trainer.min_steps:
        blocked.append(f"min_steps={trainer.min_steps}")
    return blocked


def stopping(trainer: Any) -> bool:
    """Whether training ends at this step: ``should_stop`` is set and neither ``min_epochs`` nor
    ``min_steps`` keeps it going (Lightning leaves ``should_stop`` set while they do)."""
    return bool(trainer.should_stop) and not _held(trainer)


def run_before(trainer: Any, callback: Any, kinds: tuple[type, ...]) -> None:
    """Move ``callback`` just before the first of the trainer's callbacks of ``kinds`` listed before it,
    so that at each hook they see what it decided there, in whatever order given. Only ever earlier:
    called from a hook, whose loop has passed every callback it moves over (none is skipped)."""
    callbacks = trainer.callbacks
    if callback not in callbacks:
        return
    first = next((i for i, other in enumerate(callbacks) if isinstance(other, kinds)), len(callbacks))
    if first < callbacks.index(callback):
        callbacks.remove(callback)
        callbacks.insert(first, callback)


def act(trainer: Any, action: BudgetAction | None) -> None:
    """Carry out a budget's decision: a stop (``trainer.should_stop``), a warning either way."""
    if action is None:
        return
    message = stop(trainer, action.reason) if action.kind == "stop" else action.reason
    emit([Notice("warn", message)])


def own_share() -> bool:
    """Whether this process carries a checkpoint's totals (global rank 0 only).

    Callback state is loaded before fit start, before the trainer's ranks are known to the
    tracker: Lightning's rank-zero helper knows the rank by then.
    """
    return getattr(rank_zero_only, "rank", 0) == 0


__all__ = [
    "CALLBACK_BASES",
    "act",
    "emit",
    "end_status",
    "find_callback",
    "log",
    "override",
    "own_share",
    "rank_zero_info",
    "rank_zero_warn",
    "ranks_of",
    "run_before",
    "stopping",
    "run_first",
    "stop",
]
