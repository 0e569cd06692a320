"""EnergyBudgetCallback: stop HF Trainer runs when an energy or carbon budget is spent."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState, TrainerControl, TrainerState
from transformers.training_args import TrainingArguments
from typing_extensions import Unpack

from energy_core.integration import BudgetAction, BudgetArgs, BudgetRun, HasBudgetRun
from hf_energy.callback import EnergyCallback
from hf_energy.framework import decision_every, emit, logger, ranks_of, speaks, stored_attributes
from hf_energy.registry import EnergyCallbacks, RunContributor


def act(action: BudgetAction | None, control: TrainerControl, world_zero: bool) -> None:
    """Carry out a budget's decision: a stop (training ends, its last state saved and logged), a
    warning (on the world's process zero) either way."""
    if action is None:
        return
    if action.kind == "stop":
        control.should_training_stop = True
        control.should_save = True
        control.should_log = True
    if world_zero:
        logger.warning(action.reason)


class EnergyBudgetCallback(HasBudgetRun, RunContributor[BudgetRun], TrainerCallback, ExportableState):
    """Stops HF Trainer training once the measured energy or CO2e crosses a limit.

    The limit is watched by the background sampler after every hardware reading; the
    per-step check is one flag read, and the stop sets ``control.should_training_stop``
    together with ``should_save`` and ``should_log``, so training ends after that step with
    its state saved (per the save strategy) and logged. At every logging step and epoch
    end it logs the remaining budget and, once an epoch (or, for a run of one long epoch,
    10% of the steps) has been seen, a projection of the whole run's total, re-made each
    time; ``forecast`` says what to do when it exceeds the budget.

    Beside an `EnergyCallback` of the same Trainer it uses that callback's measurements
    (one sampler per process); otherwise it measures itself with ``**measure``.

    Args:
        max_kwh: Energy limit in kWh (measured, all devices, no PUE).
        max_co2e_kg: Carbon limit in kg CO2e (energy x PUE x grid intensity).
        max_cost: Electricity cost limit, in ``currency`` (needs ``price_per_kwh``).
        forecast: ``"warn"`` (default), ``"stop"`` or ``"off"``.
        **measure: As for `EnergyCallback` (see `energy_core.MeasureOptions`); used only
            when it measures itself.

    Raises:
        TypeError, ValueError: naming the argument, for non-positive or non-finite limits,
            no limit at all, an unknown ``forecast``, or any invalid measurement argument.

    Logged metrics: ``budget/remaining_kwh``, ``budget/forecast_kwh``.

    Notes:
        The HF Trainer checks for a stop only after a step, so a run resumed with its
        budget already spent stops after its first step. In a multi-process run the
        decision is taken at logging steps with an all-reduce, so every rank stops at the
        same step.

    Examples:
        >>> from hf_energy import EnergyBudgetCallback, EnergyCallback, attach
        >>> attach(trainer, EnergyCallback(country="FRA"), EnergyBudgetCallback(max_kwh=5.0))   # doctest: +SKIP
    """

    def __init__(self, **budget: Unpack[BudgetArgs]) -> None:
        self.run = BudgetRun.from_args("EnergyBudgetCallback", **budget)
        self.last_metrics: dict[str, float] = {}
        self._pending: dict[str, float] = {}
        self._world_zero = True
        self._restored: dict[str, Any] | None = None

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """ExportableState: constructor args and the budget's state, in ``trainer_state.json``."""
        return {"args": dict(self.run.args), "attributes": {"budget_state": self.budget_state}}

    @property
    def budget_state(self) -> dict[str, Any]:
        return self.run.state_dict()

    @budget_state.setter
    def budget_state(self, value: dict[str, Any]) -> None:  # called by HF's callback restore
        self._restored = dict(value or {})
        self.run.load_state_dict(self._restored)

    # ------------------------------------------------------------------ helpers
    def contribute(self, logs: dict[str, float], state: TrainerState) -> dict[str, float]:
        added, self._pending = self._pending, {}
        logs.update(added)
        self.last_metrics.update(added)
        return added

    def _review(self, state: TrainerState, control: TrainerControl, epochs: int) -> None:
        metrics, action = self.run.review(state.global_step, epochs)
        self._pending.update(metrics)
        act(action, control, self._world_zero)

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        ranks = ranks_of(args)
        self._world_zero = speaks(state, ranks)
        if self._restored is None:
            self.run.load_state_dict(stored_attributes(state, type(self).__name__).get("budget_state", {}))
        registry = self.begin(kwargs.get("model"), state)
        if self._monitor(registry) is None:  # a budget, target or time shift's, or alone from now (validation too)
            shared = registry.shared_tracker(EnergyCallback) if registry is not None else None
            resumed = state.global_step > 0
            emit(self.run.bind(shared, ranks, state.global_step, resumed=resumed), self._world_zero)
        return control

    @staticmethod
    def _monitor(registry: EnergyCallbacks | None) -> EnergyCallback | None:
        """The trainer's `EnergyCallback`, whose tracker this budget shares (one that HF re-created on
        resume, never the one it dropped: see `hf_energy.registry`)."""
        return registry.first(EnergyCallback) if registry is not None else None

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if self.run.tracker is None:  # a monitor's: found once every callback has begun, its tracker running
            monitor = self._monitor(self.register(kwargs.get("model")))  # begun already, in on_train_begin
            if monitor is not None:
                self.run.bind(monitor.tracker, ranks_of(args), state.global_step)
        if not self.run.begun and self.run.tracker is not None and self.run.tracker.fitting:
            # After every callback's on_train_begin: a shared tracker is running, resumed totals loaded. Each
            # train() begins it again (as Lightning's on_train_start does): a spent budget stops a later one too.
            epochs = args.num_train_epochs if args.max_steps <= 0 else None
            per_epoch = state.max_steps / epochs if epochs else None
            begun = int(state.epoch or 0)  # epochs a resumed run had finished: the forecast waits for one of its own
            act(self.run.begin(state.global_step, state.max_steps, per_epoch, begun), control, self._world_zero)
        return control

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if not self.run.active:
            return control
        act(self.run.check(state.global_step), control, self._world_zero)  # one flag read per step
        # a logging step, or a step of the cadence where none is logged: decided alike on every rank
        if control.should_log or state.global_step % decision_every(args, state) == 0:
            self._review(state, control, int(state.epoch or 0))
        return control

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if self.run.active:
            self._review(state, control, int(round(state.epoch or 0)))
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        emit(self.run.finish(state.global_step), self._world_zero)
        return control
