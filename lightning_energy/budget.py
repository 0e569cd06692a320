"""EnergyBudget: stop Lightning training when an energy or carbon budget is spent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from energy_core.budget import BudgetAction, BudgetGuard, BudgetRule
from energy_core.tracker import EnergyTracker
from lightning_energy._compat import CALLBACK_BASES, configure_ranks, emit, override, own_share, rank_zero_warn
from lightning_energy.monitor import EnergyMonitor


class EnergyBudget(*CALLBACK_BASES):  # type: ignore[misc]
    """Stops training cleanly once the measured energy or CO2e crosses a limit.

    The limit is watched by the background sampler after every hardware reading, so the
    per-step check is one flag read and the stop lands at the end of the step in which
    the total crossed it (``trainer.should_stop``). At every logging step and epoch end
    it logs the remaining budget and, once an epoch (or 10% of the steps) has been seen,
    a projection of the whole run's total, re-made each time; ``forecast`` says what to
    do when the projection exceeds the budget.

    Beside an `EnergyMonitor` it uses the monitor's measurements (one sampler per
    process, the monitor's carbon settings); alone it measures with the keyword
    arguments below.

    Args:
        max_kwh: Energy limit in kWh (measured, all devices, no PUE).
        max_co2e_kg: Carbon limit in kg CO2e (energy x PUE x grid intensity).
        forecast: ``"warn"`` (default), ``"stop"`` or ``"off"``.
        devices, sample_interval_s, country, region, cloud_provider, cloud_region,
        carbon_intensity_g_per_kwh, pue, record_path: as for `EnergyMonitor`; used only
            when no monitor is in the trainer.

    Raises:
        ValueError: naming the argument, for non-positive or non-finite limits, no limit
            at all, an unknown ``forecast``, or any invalid measurement argument.

    Logged metrics: ``budget/remaining_kwh``, ``budget/forecast_kwh``.

    Notes:
        ``trainer.should_stop`` does not override ``min_epochs``/``min_steps``: Lightning
        keeps training until they are reached, and the stop message says so. In a
        multi-process run the decision is taken at logging steps, with
        ``strategy.reduce_boolean_decision``, so every rank stops at the same step.

    Example:
        >>> from lightning.pytorch import Trainer
        >>> from lightning_energy import EnergyBudget, EnergyMonitor
        >>> trainer = Trainer(max_epochs=10, callbacks=[EnergyMonitor(country="DEU"),
        ...                                             EnergyBudget(max_kwh=2.0, forecast="stop")])
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
        record_path: str | None = None,
    ) -> None:
        self.rule = BudgetRule(max_kwh, max_co2e_kg, forecast)
        self._own_tracker = EnergyTracker(
            devices=devices, sample_interval_s=sample_interval_s, country=country, region=region,
            cloud_provider=cloud_provider, cloud_region=cloud_region,
            carbon_intensity_g_per_kwh=carbon_intensity_g_per_kwh, pue=pue, record_path=record_path,
        )  # fmt: skip
        self.tracker: EnergyTracker | None = None
        self.guard: BudgetGuard | None = None
        self._owns = False
        self._saved: dict[str, Any] = {}
        self._every = 1
        self._last_review_step = -1

    # ------------------------------------------------------------------ setup
    @override
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        monitor = next((cb for cb in trainer.callbacks if isinstance(cb, EnergyMonitor)), None)
        self._owns = monitor is None
        self.tracker = self._own_tracker if self._owns else monitor.tracker
        if self._owns:  # alone: measure with our own tracker, started now so validation counts
            configure_ranks(self.tracker, trainer)
            self.tracker.load_state_dict(self._saved.get("tracker", {}), own_share=own_share())
            emit(self.tracker.start_fit(trainer.global_step))

    @override
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # After every callback's on_fit_start and the checkpoint restore: the shared
        # tracker is running and holds the resumed totals.
        assert self.tracker is not None
        self._every = max(1, int(trainer.log_every_n_steps))
        self._last_review_step = trainer.global_step
        total = trainer.estimated_stepping_batches
        per_epoch = total / trainer.max_epochs if trainer.max_steps == -1 and trainer.max_epochs else None
        self.guard = BudgetGuard(self.rule, self.tracker, total, per_epoch)
        self.guard.load_state_dict(self._saved.get("guard", {}))
        self._act(trainer, self.guard.begin(trainer.global_step, self._agree(trainer)))

    # ------------------------------------------------------------------ decisions
    @staticmethod
    def _agree(trainer: Any) -> Any:
        """The same decision on every rank: the strategy's collective, the identity alone."""
        if trainer.world_size <= 1:
            return bool
        return lambda flag: bool(trainer.strategy.reduce_boolean_decision(flag, all=False))

    def _act(self, trainer: Any, action: BudgetAction | None) -> None:
        if action is None:
            return
        message = action.reason
        if action.kind == "stop":
            trainer.should_stop = True
            blocked = []
            if trainer.min_epochs and trainer.current_epoch + 1 < trainer.min_epochs:
                blocked.append(f"min_epochs={trainer.min_epochs}")
            if trainer.min_steps and trainer.global_step < trainer.min_steps:
                blocked.append(f"min_steps={trainer.min_steps}")
            if blocked:
                message += (
                    f" Note: Lightning keeps training until {' and '.join(blocked)} are reached; "
                    "a budget stop (trainer.should_stop) cannot override them."
                )
        rank_zero_warn(message)

    def _review(self, trainer: Any, epochs_done: int) -> None:
        assert self.guard is not None and self.tracker is not None
        if self._owns:  # the job's totals now (a collective every rank reaches at this step)
            self.tracker.reduce_totals()
        metrics, action = self.guard.review(trainer.global_step, epochs_done, self._agree(trainer))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        self._act(trainer, action)

    @override
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        guard = self.guard
        if guard is None or guard.stopped is not None:
            return
        if trainer.world_size == 1 and guard.crossed():  # one flag read per step
            self._act(trainer, guard.stop_now(trainer.global_step))
            return
        step = trainer.global_step
        if step % self._every == 0 and step != self._last_review_step:
            self._last_review_step = step
            self._review(trainer, trainer.current_epoch)

    @override
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.guard is not None and self.guard.stopped is None:
            self._review(trainer, trainer.current_epoch + 1)

    # ------------------------------------------------------------------ end
    def _finish(self, trainer: Any, status: str) -> None:
        if self._owns and self.tracker is not None:
            self.tracker.end_fit(trainer.global_step, status=status)
            self.tracker.close()

    @override
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._finish(trainer, "budget-stop" if self.guard and self.guard.stopped else "completed")

    @override
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._finish(trainer, f"exception: {type(exception).__name__}")

    @override
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self._owns and self.tracker is not None:
            self.tracker.close()

    # ------------------------------------------------------------------ checkpoints
    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"guard": self.guard.state_dict() if self.guard else self._saved.get("guard", {})}
        if self._owns and self.tracker is not None:
            state["tracker"] = self.tracker.state_dict()
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved = dict(state_dict)
        if self._owns and self.tracker is not None and "tracker" in state_dict:  # restored after fit start
            self.tracker.load_state_dict(state_dict["tracker"], own_share=own_share())
