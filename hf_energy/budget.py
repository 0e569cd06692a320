"""EnergyBudgetCallback: stop HF Trainer runs when an energy or carbon budget is spent."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState, TrainerControl, TrainerState
from transformers.training_args import TrainingArguments

from energy_core.budget import BudgetAction, BudgetGuard, BudgetRule
from energy_core.tracker import EnergyTracker
from hf_energy._distributed import all_ranks_agree, configure_ranks
from hf_energy.callback import LogContributor, emit, find_energy_callback, logger, stored_attributes


class EnergyBudgetCallback(LogContributor, TrainerCallback, ExportableState):
    """Stops HF Trainer training once the measured energy or CO2e crosses a limit.

    The limit is watched by the background sampler after every hardware reading; the
    per-step check is one flag read, and the stop sets ``control.should_training_stop``
    together with ``should_save`` and ``should_log``, so training ends after that step with
    its state saved (per the save strategy) and logged. At every logging step and epoch
    end it logs the remaining budget and, once an epoch (or, for a run of one long epoch,
    10% of the steps) has been seen, a projection of the whole run's total, re-made each
    time; ``forecast`` says what to do when it exceeds the budget.

    Attached with `hf_energy.attach` beside an `EnergyCallback`, it uses that callback's
    measurements (one sampler per process); otherwise it measures itself with the keyword
    arguments below.

    Args:
        max_kwh: Energy limit in kWh (measured, all devices, no PUE).
        max_co2e_kg: Carbon limit in kg CO2e (energy x PUE x grid intensity).
        forecast: ``"warn"`` (default), ``"stop"`` or ``"off"``.
        devices, sample_interval_s, country, region, cloud_provider, cloud_region,
        carbon_intensity_g_per_kwh, pue, record_path: as for `EnergyCallback`; used only
            when it measures itself.

    Raises:
        ValueError: naming the argument, for non-positive or non-finite limits, no limit
            at all, an unknown ``forecast``, or any invalid measurement argument.

    Logged metrics: ``budget/remaining_kwh``, ``budget/forecast_kwh``.

    Notes:
        The HF Trainer checks for a stop only after a step, so a run resumed with its
        budget already spent stops after its first step. In a multi-process run the
        decision is taken at logging steps with an all-reduce, so every rank stops at the
        same step.

    Example:
        >>> from hf_energy import EnergyBudgetCallback, EnergyCallback, attach
        >>> attach(trainer, EnergyCallback(country="FRA"), EnergyBudgetCallback(max_kwh=5.0))   # doctest: +SKIP
    """

    def __init__(
        self,
        max_kwh: float | None = None,
        max_co2e_kg: float | None = None,
        forecast: str = "warn",
        *,
        devices: str | Sequence[str] = "auto",
        sample_interval_s: float = 0.1,
        country: str | None = None,
        region: str | None = None,
        cloud_provider: str | None = None,
        cloud_region: str | None = None,
        carbon_intensity_g_per_kwh: float | None = None,
        pue: float = 1.0,
        record_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.rule = BudgetRule(max_kwh, max_co2e_kg, forecast)
        self._own_tracker = EnergyTracker(
            devices=devices, sample_interval_s=sample_interval_s, country=country, region=region,
            cloud_provider=cloud_provider, cloud_region=cloud_region,
            carbon_intensity_g_per_kwh=carbon_intensity_g_per_kwh, pue=pue, record_path=record_path,
        )  # fmt: skip
        self._args = {
            "max_kwh": max_kwh, "max_co2e_kg": max_co2e_kg, "forecast": forecast,
            "devices": devices if isinstance(devices, str) else list(devices),
            "sample_interval_s": sample_interval_s, "country": country, "region": region,
            "cloud_provider": cloud_provider, "cloud_region": cloud_region,
            "carbon_intensity_g_per_kwh": carbon_intensity_g_per_kwh, "pue": pue,
            "record_path": None if record_path is None else os.fspath(record_path),
        }  # fmt: skip
        self.tracker: EnergyTracker | None = None
        self.guard: BudgetGuard | None = None
        self.last_metrics: dict[str, float] = {}
        self._owns = False
        self._saved: dict[str, Any] = {}
        self._pending: dict[str, float] = {}
        self._world_zero = True

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """ExportableState: constructor args and the budget's state, in ``trainer_state.json``."""
        return {"args": dict(self._args), "attributes": {"budget_state": self.budget_state}}

    @property
    def budget_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"guard": self.guard.state_dict() if self.guard else self._saved.get("guard", {})}
        if self._owns and self.tracker is not None:
            state["tracker"] = self.tracker.state_dict()
        return state

    @budget_state.setter
    def budget_state(self, value: dict[str, Any]) -> None:  # called by HF's callback restore
        self._saved = dict(value or {})

    # ------------------------------------------------------------------ helpers
    def _act(self, action: BudgetAction | None, control: TrainerControl) -> None:
        if action is None:
            return
        if action.kind == "stop":
            control.should_training_stop = True
            control.should_save = True
            control.should_log = True
        if self._world_zero:
            logger.warning(action.reason)

    def contribute(self, logs: dict[str, float], state: TrainerState) -> dict[str, float]:
        added, self._pending = self._pending, {}
        logs.update(added)
        self.last_metrics.update(added)
        return added

    def _review(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, epochs: int) -> None:
        assert self.guard is not None and self.tracker is not None
        if self._owns:  # the job's totals now (a collective every rank reaches at this step)
            self.tracker.reduce_totals()
        metrics, action = self.guard.review(state.global_step, epochs, lambda flag: all_ranks_agree(flag, args))
        self._pending.update(metrics)
        self._act(action, control)

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self._world_zero = state.is_world_process_zero
        monitor = find_energy_callback(self.trainer)
        self._owns = monitor is None
        self.tracker = self._own_tracker if monitor is None else monitor.tracker
        if not self._saved:
            self._saved = dict(stored_attributes(state, type(self).__name__).get("budget_state", {}))
        if self._owns:
            configure_ranks(self.tracker, args, state)
            self.tracker.load_state_dict(self._saved.get("tracker", {}), own_share=state.is_world_process_zero)
            emit(self.tracker.start_fit(state.global_step), self._world_zero)
        return control

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if self.guard is None and self.tracker is not None and self.tracker.fitting:
            # After every callback's on_train_begin: a shared tracker is running, resumed totals loaded.
            epochs = args.num_train_epochs if args.max_steps <= 0 else None
            per_epoch = state.max_steps / epochs if epochs else None
            self.guard = BudgetGuard(self.rule, self.tracker, state.max_steps, per_epoch)
            self.guard.load_state_dict(self._saved.get("guard", {}))
            self._act(self.guard.begin(state.global_step, lambda flag: all_ranks_agree(flag, args)), control)
        return control

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        guard = self.guard
        if guard is None or guard.stopped is not None:
            return control
        if args.world_size <= 1 and guard.crossed() and guard.stopped is None:  # one flag read per step
            self._act(guard.stop_now(state.global_step), control)
        if control.should_log:  # a logging step, decided alike on every rank
            self._review(args, state, control, int(state.epoch or 0))
        return control

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if self.guard is not None and self.guard.stopped is None:
            self._review(args, state, control, int(round(state.epoch or 0)))
        return control

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs: Any):
        if logs is not None and self._pending and "budget/remaining_kwh" not in logs:  # not attached
            added = self.contribute(logs, state)
            if state.log_history:
                state.log_history[-1].update(added)
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if self._owns and self.tracker is not None:
            status = "budget-stop" if self.guard is not None and self.guard.stopped else "completed"
            self.tracker.end_fit(state.global_step, status=status)
            self.tracker.close()
        return control
