"""EnergyBudget: stop Lightning training when an energy or carbon budget is spent."""

from __future__ import annotations

from typing import Any

from typing_extensions import Unpack

from energy_core.integration import BudgetArgs, BudgetRun, HasBudgetRun
from lightning_energy.framework import act, log, override, run_before
from lightning_energy.monitor import cadence
from lightning_energy.shared_run import SharedRunCallback
from lightning_energy.time_shift import TimeShift


class EnergyBudget(HasBudgetRun, SharedRunCallback[BudgetRun]):
    """Stops training cleanly once the measured energy or CO2e crosses a limit.

    The limit is watched by the background sampler after every hardware reading, so the
    per-step check is one flag read and the stop lands at the end of the step in which
    the total crossed it (``trainer.should_stop``). At every logging step and epoch end
    it logs the remaining budget and, once an epoch (or 10% of the steps) has been seen,
    a projection of the whole run's total, re-made each time; ``forecast`` says what to
    do when the projection exceeds the budget.

    Beside an `EnergyMonitor` it uses the monitor's measurements (one sampler per
    process, the monitor's carbon settings); alone it measures with ``**measure``.

    Args:
        max_kwh: Energy limit in kWh (measured, all devices, no PUE).
        max_co2e_kg: Carbon limit in kg CO2e (energy x PUE x grid intensity).
        max_cost: Electricity cost limit, in ``currency`` (needs ``price_per_kwh``).
        forecast: ``"warn"`` (default), ``"stop"`` or ``"off"``.
        **measure: The measurement arguments, as for `EnergyMonitor` (see
            `energy_core.MeasureOptions`); used only when no monitor is in the trainer.

    Raises:
        TypeError, ValueError: naming the argument, for non-positive or non-finite limits,
            no limit at all, an unknown ``forecast``, or any invalid measurement argument.

    Logged metrics: ``budget/remaining_kwh``, ``budget/forecast_kwh``.

    Notes:
        ``trainer.should_stop`` does not override ``min_epochs``/``min_steps``: Lightning
        keeps training until they are reached, and the stop message says so. In a
        multi-process run the decision is taken at logging steps, with
        ``strategy.reduce_boolean_decision``, so every rank stops at the same step.

    Examples:
        >>> from lightning.pytorch import Trainer
        >>> from lightning_energy import EnergyBudget, EnergyMonitor
        >>> trainer = Trainer(max_epochs=10, callbacks=[EnergyMonitor(country="DEU"),
        ...                                             EnergyBudget(max_kwh=2.0, forecast="stop")])
    """

    def __init__(self, **budget: Unpack[BudgetArgs]) -> None:
        self.run = BudgetRun.from_args("EnergyBudget", **budget)
        self._every = self._decide_every = 1
        self._last_review_step = -1

    # ------------------------------------------------------------------ setup
    @override
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        run_before(trainer, self, (TimeShift,))  # its stop at a step comes before a pause there

    @override
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # After every callback's on_fit_start and the checkpoint restore: a shared tracker
        # is running and holds the resumed totals.
        self._every, self._decide_every = cadence(trainer)
        self._last_review_step = trainer.global_step
        total = trainer.estimated_stepping_batches
        per_epoch = total / trainer.max_epochs if trainer.max_steps == -1 and trainer.max_epochs else None
        act(trainer, self.run.begin(trainer.global_step, total, per_epoch, trainer.current_epoch))

    # ------------------------------------------------------------------ decisions
    def _review(self, trainer: Any, epochs_done: int, logged: bool = True) -> None:
        metrics, action = self.run.review(trainer.global_step, epochs_done)
        if logged:
            log(trainer, metrics)
        act(trainer, action)

    @override
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self.run.active:
            return
        stop = self.run.check(trainer.global_step)  # one flag read per step
        if stop is not None:
            act(trainer, stop)
            return
        step = trainer.global_step
        if step % self._decide_every == 0 and step != self._last_review_step:
            self._last_review_step = step
            self._review(trainer, trainer.current_epoch, logged=bool(self._every) and step % self._every == 0)

    @override
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.run.active:
            self._review(trainer, trainer.current_epoch + 1)

    # ------------------------------------------------------------------ end

    # ------------------------------------------------------------------ checkpoints
