"""PowerCapCallback: GPU power caps for an HF Trainer run, always restored."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState, TrainerControl, TrainerState
from transformers.training_args import TrainingArguments
from typing_extensions import Unpack

from energy_core.integration import CapArgs, EnergyTracker, PowerCapRun
from hf_energy.callback import EnergyCallback
from hf_energy.framework import emit, ranks_of, speaks, stored_attributes
from hf_energy.registry import LogContributor


class PowerCapCallback(LogContributor, TrainerCallback, ExportableState):
    """Caps GPU power at train start and restores the previous limits on every way out.

    Same behaviour and arguments as `lightning_energy.PowerCap`: the node's local process
    zero recovers limits left by a killed run, caps the selected GPUs (``watts``, or
    ``fraction`` x each default limit, range-checked before any change) and reads them
    back; every rank waits for it and agrees on errors. The previous limit is restored at
    train end, on SIGTERM/SIGINT and at interpreter exit (the HF Trainer has no exception
    hook: `attach` restores as an exception leaves ``train()``; else ``atexit`` does, or the
    next ``train()`` begun on the same thread, a notebook's retry), and by the next run or
    ``energy-report --restore-power-limits`` after a SIGKILL. ``watts="auto"`` searches
    for the cap with least energy per step within ``max_slowdown`` (with the meter of the
    Trainer's `EnergyCallback`, else its own).

    Args:
        watts: Cap in W per GPU, or ``"auto"``.
        fraction: Cap as a fraction of each GPU's default limit, in (0, 1].
        gpus: ``"all"`` or a list of visible GPU indices.
        strict: Raise PermissionError before training when limits cannot be set.
        max_slowdown: For ``watts="auto"``, the largest accepted rise in time per step.
        min_watts: For ``watts="auto"``, the lowest cap tried per GPU in W (default: the
            board's minimum limit).

    Raises:
        ValueError: naming the argument and the allowed range (see `PowerCap`).

    Logged metrics: ``power/cap_w`` (with `attach`), also in `EnergyCallback`'s logs.

    Examples:
        >>> from hf_energy import EnergyCallback, PowerCapCallback, attach
        >>> attach(trainer, EnergyCallback(), PowerCapCallback(fraction=0.8))   # doctest: +SKIP
    """

    def __init__(self, **cap: Unpack[CapArgs]) -> None:
        self.run = PowerCapRun.of("PowerCapCallback", dict(cap))
        self._pending: dict[str, float] = {}
        self._world_zero = True
        self._restored = False

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """ExportableState: the constructor's arguments and the search's measurements and
        choice, in ``trainer_state.json`` (a resumed run does not search again)."""
        return {"args": dict(self.run.args), "attributes": {"cap_state": self.cap_state}}

    @property
    def cap_state(self) -> dict[str, Any]:
        return self.run.state_dict()

    @cap_state.setter
    def cap_state(self, value: dict[str, Any]) -> None:  # called by HF's callback restore
        self._restored = True
        self.run.load_state_dict(value)

    def _tracker(self) -> EnergyTracker | None:
        monitor = self.registry.first(EnergyCallback) if self.registry is not None else None
        return monitor.tracker if monitor is not None else None

    def contribute(self, logs: dict[str, float], state: TrainerState) -> dict[str, float]:
        added, self._pending = self._pending, {}
        logs.update(added)
        return added

    def withdraw(self) -> None:
        """Training was refused before its first step (a duplicate added with ``add_callback``):
        the cap already in force goes back to the administrator's limit now, not at exit."""
        emit(self.run.finish(), self._world_zero)

    def left_open(self) -> bool:
        return self.run.capping

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self.begin(kwargs.get("model"), state)
        ranks = ranks_of(args)
        self._world_zero = speaks(state, ranks)
        if not self._restored:
            self.run.load_state_dict(stored_attributes(state, type(self).__name__).get("cap_state"))
        emit(self.run.begin(ranks, self._tracker(), state.max_steps, step=state.global_step), self._world_zero)
        self._pending.update(self.run.figures())
        return control

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        metrics, notices = self.run.step(state.global_step)
        self._pending.update(metrics)
        emit(notices, self._world_zero)
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        emit(self.run.finish(), self._world_zero)
        return control
