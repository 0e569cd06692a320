"""MonitorRun: a monitor's part in one training run, the sequence every adapter follows.

Every way of measuring a run (Lightning's `EnergyMonitor`, HF's `EnergyCallback`,
`EnergyLoop`) drives one `EnergyTracker` through the same steps, written once here:

1. `MonitorRun.start`: this process's part in the job, the run's description for the
   record's header, the fit's start, and for each W&B run the energy keys defined by exact
   name (before the first log) and the carbon factor in its config;
2. `MonitorRun.count` for each (micro-)batch (two integer additions: the hot path),
   `MonitorRun.window` at each logging boundary, `MonitorRun.epoch_start` and `MonitorRun.epoch`
   around each epoch, `MonitorRun.stage_start`/`MonitorRun.stage_end` around validation, test
   and predict;
3. `MonitorRun.finish`: the final totals (and each W&B run's summary), then
   `MonitorRun.close` when the process is done with measuring.

What measurement finds on the way (a lost device, a record that cannot be written) is
handed to ``show``, the adapter's own channel, as it comes. The adapter decides *when*
(its framework's hooks) and *where* the returned dictionaries go (its loggers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from energy_core.accounting.figures import STAGES
from energy_core.accounting.ranks import Ranks
from energy_core.integration import wandb_run
from energy_core.notices import Notice
from energy_core.tracker import EnergyTracker


class MonitorRun:
    """A monitor's tracker, driven through one run.

    Args:
        tracker: The tracker (the monitor's own; budgets and caps may share it).
        show: Where notices go (the framework's channel, rank zero only where it matters).

    Attributes:
        last_metrics: Every figure returned so far, the latest value of each key.
    """

    def __init__(self, tracker: EnergyTracker, show: Callable[[list[Notice]], None]) -> None:
        self.tracker = tracker
        self.show = show
        self.last_metrics: dict[str, float] = {}
        self._said_uncounted = False

    def _done(self, metrics: dict[str, float]) -> dict[str, float]:
        self.last_metrics.update(metrics)
        self.show(self.tracker.pop_notices())  # what measurement found meanwhile
        return metrics

    def start(
        self,
        ranks: Ranks,
        step: int,
        resumed: bool,
        wandb_runs: Sequence[Any] = (),
        step_metric: str = "",
        prefix: str = "",
        **run_info: Any,
    ) -> None:
        """Start measuring the fit.

        Args:
            ranks: This process's part in the job.
            step: The optimizer step training starts at.
            resumed: The trainer resumed from a checkpoint.
            wandb_runs: The W&B runs the figures go to (on global rank 0 only).
            step_metric: The framework's step key in W&B (``trainer/global_step``).
            prefix: What the framework puts before every key in W&B (``train/``).
            run_info: The record header's description of the run (``framework=``,
                ``trainer=`` settings).
        """
        self.tracker.join(ranks)
        self.tracker.describe(**run_info)
        self.show(self.tracker.start_fit(step, resumed=resumed))
        for run in wandb_runs:  # exact keys, before the first energy log
            wandb_run.define_axes(run, self.tracker, step_metric, prefix)
            wandb_run.write_config(run, self.tracker)

    def count(self, batch: Any) -> None:
        """Count one (micro-)batch's samples and tokens. No device sync, no I/O. Never raises:
        a batch that cannot be counted (a shape of unknown size, nothing with a size) counts
        nothing, said once."""
        try:
            if self.tracker.add_batch(batch) > 0 or self._said_uncounted:
                return
            why = "gave no samples to count (no tensor, array or list of texts in it, or an empty one)"
            lost = "samples"
        except Exception as error:  # noqa: BLE001 - counting must never break training
            if self._said_uncounted:
                return
            why, lost = f"could not be counted ({type(error).__name__}: {error})", "samples or tokens"
        self._said_uncounted = True
        text = (
            f"A batch of type {type(batch).__name__} {why}: such batches add no {lost} to the throughput and "
            "per-sample figures."
        )
        self.show([Notice("warn", text)])

    def epoch_start(self, epoch: int | None = None) -> None:
        self.tracker.start_epoch(epoch)

    def window(self, step: int, extra: dict[str, Any] | None = None) -> dict[str, float]:
        """The figures of the logging window that ends at optimizer step ``step``."""
        return self._done(self.tracker.window(step, extra=extra))

    def epoch(self, step: int, epoch: int, extra: dict[str, Any] | None = None) -> dict[str, float]:
        """The figures at an epoch's end (the partial window, ``energy/epoch_kwh``)."""
        return self._done(self.tracker.end_epoch(step, epoch, extra))

    def stage_start(self, stage: str, ranks: Ranks | None = None) -> None:
        """A validation/test/predict run begins. Outside a fit, ``ranks`` (this process's part in the
        job, where every rank runs the stage) is taken first, as a fit's start takes it: the node's
        devices are measured once, by its local rank 0, and global rank 0 alone writes the record."""
        if ranks is not None and not self.tracker.fitting:
            self.tracker.join(ranks)
        self.show(self.tracker.start_stage(stage))

    def stage_end(
        self, stage: str, step: int, started_as: str | None = None, status: str = "completed", collective: bool = True
    ) -> dict[str, float]:
        """``energy/<stage>_kwh`` once the stage's energy is known (``status``, ``collective``:
        `EnergyTracker.end_stage`)."""
        return self._done(self.tracker.end_stage(stage, step, started_as, status, collective))

    def abort_stages(self, step: int, status: str) -> None:
        """An exception on this rank ends a stage run of its own (``trainer.validate()`` outside a fit): its
        stage line and a summary with ``status``, nothing waiting for the other ranks. Inside a fit,
        `finish` ends the fit, and its open stages with it."""
        if self.tracker.fitting:
            return
        for stage in STAGES:
            if self.tracker.in_stage(stage):
                self.stage_end(stage, step, status=status, collective=False)

    def finish(
        self,
        step: int,
        status: str = "completed",
        collective: bool = True,
        wandb_runs: Sequence[Any] = (),
        prefix: str = "",
    ) -> dict[str, float]:
        """End the fit: its final totals (in each W&B run's summary too).

        ``collective=False`` where the other ranks may not be here (an exception on this rank).
        """
        metrics = self.tracker.end_fit(step, status=status, collective=collective)
        for run in wandb_runs:
            wandb_run.write_summary(run, self.tracker, metrics, prefix)
        return self._done(metrics)

    def summary(self, metrics: dict[str, float]) -> str:
        """A few lines for the console at the end of a run."""
        return self.tracker.summary_text(metrics)

    def close(self) -> None:
        """Stop measuring (the process is done with it); the last notices are shown."""
        self.tracker.close()
        self.show(self.tracker.pop_notices())


class HasMonitorRun:
    """What a monitor callback shows of its `MonitorRun` (both framework adapters derive from it)."""

    run: MonitorRun

    @property
    def tracker(self) -> EnergyTracker:
        """The tracker: its meter, totals and record (budgets and caps of the trainer share it)."""
        return self.run.tracker

    @property
    def last_metrics(self) -> dict[str, float]:
        """Every figure logged so far, the latest value of each key."""
        return self.run.last_metrics
