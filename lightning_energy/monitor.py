"""EnergyMonitor: energy, power, throughput and CO2e in every Lightning logger."""

from __future__ import annotations

import math
from typing import Any

from typing_extensions import Unpack

from energy_core.integration import (
    UNLOGGED_DECIDE_EVERY,
    EnergyTracker,
    HasMonitorRun,
    MeasureArgs,
    MeasureOptions,
    MonitorRun,
    checks,
    keys,
    scalar_losses,
    units_text,
)
from lightning_energy.framework import (
    CALLBACK_BASES,
    emit,
    end_status,
    find_callback,
    log,
    override,
    own_share,
    rank_zero_info,
    ranks_of,
    run_first,
)

EPOCH_KEYS = (keys.EPOCH_KWH, keys.err(keys.EPOCH_KWH))  # what an epoch's end adds to a window at its step


def cadence(trainer: Any) -> tuple[int, int]:
    """(log, decide): optimizer steps between the figures logged within an epoch, and between the
    decisions a budget or a time shift takes there (in a multi-process job, each a collective).

    The figures follow an `EnergyMonitor`'s ``log_every_n_steps`` where one overrides the trainer's,
    else the trainer's; its ``0`` (Lightning: no logging within an epoch) leaves the epoch ends only,
    and the decisions are then taken every `UNLOGGED_DECIDE_EVERY` steps, logging nothing.
    """
    monitor = find_callback(trainer, EnergyMonitor)
    every = (monitor.log_every_n_steps if monitor else None) or max(0, int(trainer.log_every_n_steps))
    return every, every or UNLOGGED_DECIDE_EVERY


class EnergyMonitor(HasMonitorRun, *CALLBACK_BASES):  # type: ignore[misc]
    """Logs energy, power, throughput, energy per sample/token and CO2e during training.

    Works with both ``lightning.pytorch.Trainer`` and ``pytorch_lightning.Trainer``.
    Figures are logged through ``trainer.loggers`` every ``log_every_n_steps`` optimizer
    steps (the trainer's own setting unless given; its ``0`` leaves only the epoch ends)
    and at every epoch end, and left in
    ``trainer.callback_metrics`` for other callbacks (``ModelCheckpoint(monitor="energy/total_kwh")``,
    ``EarlyStopping``, Ray's ``RayTrainReportCallback``); the monitor runs before the
    trainer's other callbacks, so theirs see each epoch's figures whatever the order given.
    The training loop itself only pays for a timestamp and a few integer additions per batch.

    One per Trainer: a second monitor, or this one given twice, would sample the devices again
    and count every step twice; Lightning refuses either when the Trainer is built ("Found more
    than one stateful callback of type `EnergyMonitor`"), before any figure.

    Args:
        log_every_n_steps: Override the trainer's logging cadence (optimizer steps).
        progress_bar: Show the window's mean power and the energy so far in the progress bar, in the units
            that fit (``power: 2.6 W energy: 75.7 J``; ``~`` before an energy that rests on an estimate).
        summary: Print a short summary when fit ends.
        **measure: The measurement arguments of `energy_core.MeasureOptions`:
            ``devices``, ``sample_interval_s``, ``country``, ``region``,
            ``cloud_provider``, ``cloud_region``, ``carbon_intensity_g_per_kwh``, ``pue``,
            ``record_path``, ``cpu_tdp_w``, ``carbon_intensity_series``,
            ``electricity_maps_zone``, ``price_per_kwh``, ``currency``.

    Raises:
        TypeError, ValueError: naming the argument, for any invalid value (unknown
            country or region, negative or non-finite PUE/intensity, interval outside
            [0.001, 60] s, unknown device name, a bool where a number belongs).

    Logged metrics: ``energy/step_j``, ``energy/total_kwh``, ``energy/{gpu,cpu,dram}_kwh``,
    ``power/total_w``, ``power/gpu{i}_w``, ``throughput/samples_per_s``,
    ``throughput/tokens_per_s``, ``efficiency/j_per_sample``, ``efficiency/j_per_token``,
    ``carbon/co2e_kg``, ``carbon/intensity_g_per_kwh``, ``cost/total`` (with ``price_per_kwh``); at epoch end also
    ``energy/epoch_kwh``; after validation/test/predict ``energy/val_kwh``,
    ``energy/test_kwh``, ``energy/predict_kwh``.

    Examples:
        >>> from lightning.pytorch import Trainer
        >>> from lightning_energy import EnergyMonitor
        >>> trainer = Trainer(callbacks=[EnergyMonitor(country="FRA", pue=1.1)])
    """

    def __init__(
        self,
        *,
        log_every_n_steps: int | None = None,
        progress_bar: bool = True,
        summary: bool = True,
        **measure: Unpack[MeasureArgs],
    ) -> None:
        self.log_every_n_steps = checks.integer("log_every_n_steps", log_every_n_steps, low=1, optional=True)
        self.progress_bar = checks.boolean("progress_bar", progress_bar)
        self.summary = checks.boolean("summary", summary)
        self.run = MonitorRun(EnergyTracker(MeasureOptions.of("EnergyMonitor", dict(measure))), emit)
        self._bar_values: dict[str, str] = {}
        self._bar: Any = None
        self._every = 1
        self._last_logged_step = -1

    def _extra(self, trainer: Any) -> dict[str, float] | None:
        return scalar_losses(trainer.callback_metrics) if self.tracker.record is not None else None

    # ------------------------------------------------------------------ fit
    @override
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        run_first(trainer, self)  # the epoch's figures before any other callback's epoch end

    @override
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._every, _ = cadence(trainer)
        settings = {
            "max_epochs": trainer.max_epochs,
            "max_steps": trainer.max_steps,
            "log_every_n_steps": self._every,
            "world_size": trainer.world_size,
        }
        self.run.start(
            ranks_of(trainer),
            trainer.global_step,
            resumed=trainer.ckpt_path is not None,
            wandb_runs=self._wandb_runs(trainer),
            step_metric="trainer/global_step",
            framework=type(trainer).__module__.split(".")[0],
            trainer=settings,
        )
        self._attach_progress_bar(trainer)

    @override
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # Lightning restores a checkpoint's global_step after on_fit_start (restore_training_state): the
        # fit's first window, opened there, took step 0 for its start. Its steps count from here, where the
        # step is known (no window closes and no batch is counted in between). A fresh fit's step is the same.
        self._last_logged_step = trainer.global_step
        self.tracker.training_starts_at(trainer.global_step)

    @staticmethod
    def _wandb_runs(trainer: Any) -> list[Any]:
        """The W&B runs of the trainer's WandbLoggers, on global rank 0 only."""
        if not trainer.is_global_zero:
            return []
        return [lg.experiment for lg in trainer.loggers if type(lg).__name__ == "WandbLogger"]

    def _attach_progress_bar(self, trainer: Any) -> None:
        """Add our figures to the progress bar through its documented `get_metrics` hook.

        (``pl_module.log(..., prog_bar=True)`` would make Lightning process the values
        on every step; this costs one dict merge per bar refresh.)
        """
        bar = getattr(trainer, "progress_bar_callback", None)
        if not self.progress_bar or bar is None or "get_metrics" in vars(bar):
            return
        original = bar.get_metrics

        def get_metrics(trainer: Any, pl_module: Any) -> dict[str, Any]:
            return {**original(trainer, pl_module), **self._bar_values}

        bar.get_metrics = get_metrics
        self._bar = bar

    def _detach_progress_bar(self) -> None:
        bar = self._bar
        if bar is not None and "get_metrics" in vars(bar):
            del bar.get_metrics
        self._bar = None

    @override
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.run.epoch_start(trainer.current_epoch)

    @override
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.run.count(batch)
        step = trainer.global_step
        if not self._every or step % self._every or step == self._last_logged_step:
            return
        self._last_logged_step = step
        metrics = self.run.window(step, extra=self._extra(trainer))
        log(trainer, metrics)
        self._bar_values.update(self._bar_text(metrics))

    def _bar_text(self, metrics: dict[str, float]) -> dict[str, str]:
        """The progress bar's figures, in the units that fit: the window's mean power and the energy so
        far, ``~`` before an energy that rests on an estimate (``energy: ~75.7 J``)."""
        shown = {}
        if math.isfinite(metrics.get(keys.TOTAL_W, math.nan)):
            shown["power"] = units_text.power(metrics[keys.TOTAL_W])
        if math.isfinite(metrics.get(keys.TOTAL_KWH, math.nan)):
            about = "~" if self.tracker.meter.estimated else ""
            shown["energy"] = about + units_text.energy_kwh(metrics[keys.TOTAL_KWH])
        return shown

    @override
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        step = trainer.global_step
        metrics = self.run.epoch(step, trainer.current_epoch, self._extra(trainer))
        # A window logged at this step already: the loggers get one value per key and step (the epoch's own
        # keys); the callbacks that read the epoch's end (a checkpoint, a report) get every figure.
        already = step == self._last_logged_step
        self._last_logged_step = step
        log(trainer, metrics, {key: value for key, value in metrics.items() if key in EPOCH_KEYS} if already else None)

    @override
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        status = "interrupted" if trainer.interrupted else "completed"
        metrics = self.run.finish(trainer.global_step, status, wandb_runs=self._wandb_runs(trainer))
        if self.summary and metrics:
            if trainer.is_global_zero:
                self._end_live_display(trainer)
            rank_zero_info(self.run.summary(metrics))

    @staticmethod
    def _end_live_display(trainer: Any) -> None:
        """End the rich progress bar's live display before the summary is printed.

        Lightning stops it only at teardown, after ``on_fit_end``: text printed meanwhile lands inside
        the redrawn bar, which splits lines and draws the bar again after the summary. Training is over
        here, so the bar is final; stopping its display again at teardown does nothing more (rich's
        ``Progress.stop`` is idempotent). A TQDM bar is closed by then.
        """
        stop = getattr(getattr(trainer.progress_bar_callback, "progress", None), "stop", None)
        if callable(stop):
            stop()

    @override
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        status = end_status(exception)  # other ranks may not be here: nothing waits for them
        self.run.abort_stages(trainer.global_step, status)  # trainer.validate() and the like, outside a fit
        self.run.finish(trainer.global_step, status, collective=False)
        self._detach_progress_bar()
        self.run.close()

    @override
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._detach_progress_bar()
        self.run.close()

    # ------------------------------------------------------------------ other stages
    def _stage_start(self, trainer: Any, stage: str) -> None:
        # outside a fit (trainer.validate() and the like) every rank runs the stage: the job is found here
        fitting = trainer.state.fn == "fit"
        self.run.stage_start(stage, None if fitting else ranks_of(trainer))

    def _stage_end(self, trainer: Any, stage: str) -> None:
        log(trainer, self.run.stage_end(stage, trainer.global_step))

    @override
    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._stage_start(trainer, "val")

    @override
    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._stage_end(trainer, "val")

    @override
    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._stage_start(trainer, "test")

    @override
    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        self._stage_end(trainer, "test")

    @override
    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self._stage_start(trainer, "predict")

    @override
    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        self._stage_end(trainer, "predict")

    # ------------------------------------------------------------------ checkpoints
    @override
    def state_dict(self) -> dict[str, Any]:
        return self.tracker.state_dict()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state_dict, own_share=own_share())
