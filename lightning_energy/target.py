"""EnergyToTarget: what reaching a validation metric cost a Lightning run, and stopping there."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from typing_extensions import Unpack

from energy_core.integration import HasTargetRun, Notice, TargetArgs, TargetRun
from lightning_energy.framework import emit, log, override, stop
from lightning_energy.shared_run import SharedRunCallback


class EnergyToTarget(HasTargetRun, SharedRunCallback[TargetRun]):
    """Logs the energy, CO2e and time a run took to reach a validation metric, and stops there.

    At the end of every validation of the fit (not the sanity check), it reads ``monitor``
    from ``trainer.callback_metrics`` as logged during that validation (a value Lightning kept
    from an earlier one is not this validation's: no figure, a gap) and what training has cost
    so far: since fit start up to the end of that validation, every validation included
    (checkpoints resumed from too). The first validation whose value reaches ``target`` logs
    ``target/energy_kwh``, ``target/co2e_kg``, ``target/seconds`` and ``target/step`` once,
    writes a ``target`` line to the run record and, with ``stop=True``, stops training there
    (``trainer.should_stop``).

    With ``min_gain_per_kwh``, every validation logs ``target/gain_per_kwh``, the metric's
    improvement per kWh over the last ``patience`` validations, and training stops when it
    falls below the limit (diminishing returns), with a message that gives the gain and
    the energy.

    Beside an `EnergyMonitor` it uses the monitor's measurements; alone it measures with
    ``**measure``.

    Args:
        monitor: The logged metric to watch (as for ``EarlyStopping``), e.g. ``"val_acc"``.
        target: The value to reach (None: only ``min_gain_per_kwh``).
        mode: ``"max"`` (reached when ``monitor >= target``) or ``"min"`` (``<=``).
        stop: Stop training at the validation that first reaches the target.
        min_gain_per_kwh: Stop when the metric improves by less than this per kWh
            (metric units per kWh) over the last ``patience`` validations.
        patience: How many validations back the gain is measured from.
        **measure: The measurement arguments, as for `EnergyMonitor`; used only when no
            monitor is in the trainer.

    Raises:
        TypeError, ValueError: naming the argument, for an empty ``monitor``, a non-finite
            ``target``, an unknown ``mode``, a negative ``min_gain_per_kwh``, ``patience``
            below 1, neither ``target`` nor ``min_gain_per_kwh``, or any invalid
            measurement argument.

    Logged metrics: ``target/energy_kwh``, ``target/co2e_kg``, ``target/seconds``,
    ``target/step`` (once); ``target/gain_per_kwh`` (each validation, with ``min_gain_per_kwh``).

    Notes:
        In a multi-process run every rank takes the decision together
        (``strategy.reduce_boolean_decision``): the target is reached when any rank's value
        reaches it, so log the metric with ``sync_dist=True`` for one value across ranks.
        ``trainer.should_stop`` does not override ``min_epochs``/``min_steps``. A target
        reached before a checkpoint resume is not reported again, and does not stop the
        resumed run.

    Examples:
        >>> from lightning.pytorch import Trainer
        >>> from lightning_energy import EnergyMonitor, EnergyToTarget
        >>> trainer = Trainer(max_epochs=50, callbacks=[EnergyMonitor(country="FRA"),
        ...                                             EnergyToTarget("val_acc", 0.9)])
    """

    def __init__(self, monitor: str, target: float | None, **args: Unpack[TargetArgs]) -> None:
        self.run = TargetRun.from_args("EnergyToTarget", monitor, target, metric_arg="monitor", **args)
        self.monitor = self.run.rule.metric
        self._before: dict[str, Any] = {}  # trainer.callback_metrics as this validation started

    @property
    def state_key(self) -> str:
        """One per metric and target: several targets in one trainer keep their own state."""
        return self._generate_state_key(monitor=self.monitor, target=self.run.rule.target)

    @override
    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._before = dict(trainer.callback_metrics)  # the entries, not copies: see `logged_in_validation`

    @override
    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        before, self._before = self._before, {}
        if trainer.sanity_checking:  # two batches of an untrained model: not an evaluation of the run
            return
        metrics = logged_in_validation(trainer.callback_metrics, before)
        outcome = self.run.evaluate(trainer.global_step, metrics.get(self.monitor), logged=list(metrics))
        log(trainer, outcome.metrics)
        emit(outcome.notices)
        if outcome.stop is not None:  # every rank alike (the decision is the job's)
            emit([Notice("warn", stop(trainer, outcome.stop))])


def logged_in_validation(metrics: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``trainer.callback_metrics`` set during this validation: those that are not,
    object for object, what they were when it started.

    Lightning keeps a metric's entry from one validation to the next until it is logged again, so
    a validation that does not log the metric still shows the previous value: read as this
    validation's, it would reach the target or give a false gain. Lightning sets a logged metric's
    entry to a new tensor object each time (its result, computed and detached anew), so a metric
    logged again, even with an equal value, is a new entry; an entry left as it was is not this
    validation's. The objects compared are held in ``before``, so no identity can be reused.
    """
    return {key: value for key, value in metrics.items() if key not in before or before[key] is not value}
