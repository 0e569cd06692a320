"""EnergyTracker: the bookkeeping every framework adapter shares.

It turns hook calls (fit start, batch end, logging boundary, epoch end, stage start and
end, fit end) into the metric dictionaries of the spec, keeps totals across checkpoint
resumes, and writes the run record. Adapters decide *when* (the framework's hooks and
logging cadence) and *where* (the framework's loggers); this class decides *what*. Its
state, and the figures read from it between hooks (totals, a budget's watch, checkpoint
state, summary), are its base `RunBooks` (books.py); the hooks orchestrate the pieces:
`Window` (work of the open window), `Stages`, `Accounts` (totals, summed over a job),
`RunFactors` (carbon and price), `metrics` and `header`.

Hot path: `EnergyTracker.add_batch` adds two integers (and, for token masks, queues one
lazy device sum). Everything that reads the hardware happens on the sampler thread;
everything that computes figures happens at logging boundaries.
"""

from __future__ import annotations

from typing import Any

from energy_core.accounting.figures import J_PER_KWH, STAGES
from energy_core.accounting.ranks import Ranks
from energy_core.accounting.stages import StageRun
from energy_core.accounting.window import Window
from energy_core.books import RunBooks
from energy_core.notices import Notice
from energy_core.output import keys
from energy_core.output import metrics as metric_dicts
from energy_core.output import record as lines
from energy_core.output.header import run_header
from energy_core.output.summary import quality_notices
from energy_core.sampling.meter import Mark

__all__ = ["J_PER_KWH", "STAGES", "EnergyTracker"]


class EnergyTracker(RunBooks):
    """Framework-free energy bookkeeping for one training process.

    Args:
        options: The measurement options; or give their fields as keyword arguments
            (``devices``, ``sample_interval_s``, ``country``, ... see `MeasureOptions`).

    Raises:
        TypeError, ValueError: naming the argument, for any invalid value.

    Metrics: ``energy/step_j``, ``energy/total_kwh``, ``energy/{gpu,cpu,dram}_kwh``,
    ``power/total_w``, ``power/gpu{i}_w``, ``throughput/samples_per_s``,
    ``throughput/tokens_per_s``, ``efficiency/j_per_sample``, ``efficiency/j_per_token``,
    ``carbon/co2e_kg``, ``carbon/intensity_g_per_kwh`` at every `window`;
    ``energy/epoch_kwh`` at `end_epoch`; ``energy/{val,test,predict}_kwh`` at `end_stage`.

    Examples:
        >>> tracker = EnergyTracker(country="FRA")
        >>> notices = tracker.start_fit(step=0)            # doctest: +SKIP
        >>> tracker.add_batch(batch)                        # every micro-batch  # doctest: +SKIP
        >>> metrics = tracker.window(step=50)               # at a logging step  # doctest: +SKIP
        >>> summary = tracker.end_fit(step=100)             # doctest: +SKIP
    """

    # ----------------------------------------------------------------- set-up
    def join(self, ranks: Ranks) -> None:
        """Take this process's part in a job (before `start_fit`): its devices, the record, sums."""
        self.ranks = ranks
        self.meter.assign(ranks.gpu_indices, ranks.node_devices)
        if not ranks.leads_job:
            self.record = None

    def describe(self, **run_info: Any) -> None:
        """Fields for the record's header: the framework and its trainer's settings."""
        self._run_info = run_info

    def show_power_cap(self, cap_w: float | None, caps: list[dict[str, Any]]) -> None:
        """A cap in force: ``power/cap_w`` in every window (None takes it away) and the header's caps."""
        self._cap_w, self._caps = cap_w, caps

    # ----------------------------------------------------------------- lifecycle
    def _open(self) -> list[Notice]:
        """Start measuring; the notices are returned once per tracker, then []."""
        notices = self.meter.open()
        found, self._pending_notices = self._pending_notices, None
        return [] if found is None else found + notices

    def start_fit(self, step: int = 0, resumed: bool = False) -> list[Notice]:
        """Begin a training run at optimizer step ``step``; returns notices to show once.

        Idempotent: when several callbacks share this tracker, the first one starts it.

        Args:
            step: The optimizer step training starts at.
            resumed: The trainer resumed from a checkpoint: without energy state in it, the
                totals restart at zero, and a notice says so.
        """
        if self.fitting:
            return []
        notices = self._open()
        if resumed and not self._accounts.loaded:
            text = "Resumed from a checkpoint without energy state: the energy and CO2e totals restart at zero."
            notices.append(Notice("warn", text))
        start = self._epoch_start = self.meter.mark()
        self._accounts.begin(start)
        self.factors.start()
        self._window = Window(start, step)
        resumed = self._accounts.resumed.to_state() if self._accounts.resumed.energy_j else None
        carbon = self.factors.header(self._accounts.wall_now())
        header = run_header(
            self.meter, carbon, notices, self.ranks, power_caps=self._caps, resumed_from=resumed, **self._run_info
        )
        if self.record is not None:
            self.record.new_run()
        self.write_record(lines.HEADER, **header)
        return notices

    def end_fit(self, step: int, status: str = "completed", collective: bool = True) -> dict[str, float]:
        """Finish the run: final cumulative metrics, summary line, sampler stopped.

        Args:
            step: The last optimizer step.
            status: How it ended: ``"completed"``, ``"exception: ..."``, ``"interrupted"``...
            collective: False where the other ranks may not be here (an exception on this
                rank): the figures stay this process's own, and nothing waits for the others.
        """
        if not self.fitting:
            return {}
        self._notices += self.meter.close()
        self.factors.stop()
        end = self.meter.mark()
        charged = self._stages.charge_ready(self.meter)  # every mark is fixed now
        if not collective:
            self.ranks = Ranks(self.ranks.rank, self.ranks.local_rank)  # from here on, nothing waits for others
        metrics = self._cumulative(self._sum(end).totals)
        metrics.update(self._record_stages(charged))
        # Fold this run into the resumed totals: a later fit of this tracker continues them.
        self.load_state_dict(self.state_dict(at=end), own_share=not self.ranks.distributed or self.ranks.leads_job)
        self._accounts.end()
        self._window = Window(None, step)
        fields = self.summary_fields(metrics)
        self._notices += quality_notices(fields)
        self.write_record(lines.SUMMARY, step=step, status=status, **fields)
        return metrics

    def close(self) -> None:
        """Stop sampling and close the record (end of the process's use)."""
        self._notices += self.meter.close()
        self.factors.stop()
        if self.record is not None:
            self.record.close()

    # ----------------------------------------------------------------- hot path
    def add_batch(self, batch: Any) -> None:
        """Count one (micro-)batch's samples and tokens. No device sync, no I/O."""
        self._window.add_batch(batch)

    # ----------------------------------------------------------------- windows and epochs
    def window(self, step: int, end: Mark | None = None, extra: dict[str, Any] | None = None) -> dict[str, float]:
        """Close the logging window at optimizer step ``step`` and return its metrics.

        Window figures (mean power, J per step/sample/token, throughput) cover the
        training time since the previous window, with the stages that ran inside it taken
        out; cumulative figures cover the whole run. ``extra`` (e.g. the loss) goes to the
        run record only.
        """
        return self._close(step, end or self.meter.mark(), extra, None)[0]

    def _close(
        self, step: int, end: Mark, extra: dict[str, Any] | None, epoch_start: Mark | None
    ) -> tuple[dict[str, float], float | None]:
        """The window's (and the epoch's) figures at ``end``; the epoch's joules, or None."""
        if self._window.start is None:
            return {}, None
        if not self.meter.resolvable(end):  # before the sampler's second reading: no figure, not a zero
            self._sum(end)  # ranks reach this alike: keep the sums aligned
            if not self._said_unresolved:
                self._said_unresolved = True
                text = (
                    "A logging window ended before the sampler's second hardware reading (sample_interval_s="
                    f"{self.meter.sample_interval_s:g}): its energy figures are left out, not logged as zeros; the "
                    "run's totals include that time."
                )
                self._notices.append(Notice("info", text))
            return metric_dicts.cap(self._cap_w), None
        epoch_j = 0.0
        if epoch_start is not None:
            start_j, end_j = self.meter.joules(epoch_start, end)
            epoch_j = float((end_j - start_j).sum())
        charged = self._stages.charge_ready(self.meter)  # runs too short to resolve at their end
        self._notices += self.meter.new_silences()
        if self._window.idle(step):  # nothing trained since the last window: it stays open
            idle = self._sum(end, epoch_j=epoch_j)  # ranks reach this alike: keep the sums aligned
            return {**self._cumulative(idle.totals), **self._record_stages(charged)}, idle.epoch_j
        local = self._window.close(self.meter, end, step)
        job = self._sum(end, local, epoch_j)
        figures = job.window or local
        metrics = {**self._cumulative(job.totals), **metric_dicts.window(figures), **self._record_stages(charged)}
        self._accounts.close_window(local.samples, local.tokens)
        self.write_record(
            lines.WINDOW,
            step=step,
            steps=figures.steps,
            samples=figures.samples,
            tokens=figures.tokens,
            seconds=local.seconds,
            elapsed_s=self.fit_seconds(end),
            metrics=metrics,
            extra=extra or {},
            ranks=job.breakdown,
        )
        self._window = Window(end, step)
        return metrics, job.epoch_j

    def start_epoch(self) -> None:
        self._epoch_start = self.meter.mark()

    def end_epoch(self, step: int, epoch: int, extra: dict[str, Any] | None = None) -> dict[str, float]:
        """Metrics at an epoch end: the partial window since the last log, the totals,
        and ``energy/epoch_kwh`` (everything since the epoch began, validation included)."""
        end = self.meter.mark()
        start = self._epoch_start if self.fitting else None
        metrics, epoch_j = self._close(step, end, extra, start)
        if start is not None and epoch_j is not None:
            metrics[keys.EPOCH_KWH] = epoch_j / J_PER_KWH
            self.write_record(
                lines.EPOCH,
                step=step,
                epoch=epoch,
                seconds=end.t - start.t,
                elapsed_s=self.fit_seconds(end),
                metrics=metrics,
                extra=extra or {},
            )
        self._epoch_start = end
        return metrics

    # ----------------------------------------------------------------- other stages
    def start_stage(self, stage: str) -> list[Notice]:
        """Begin a validation/test/predict run (``stage`` in `STAGES`, or a provisional name)."""
        notices = self._open()
        self._stages.start(stage, self.meter.mark())
        return notices

    def end_stage(self, stage: str, step: int, started_as: str | None = None) -> dict[str, float]:
        """End a stage; returns ``{"energy/<stage>_kwh": cumulative kWh of that stage}``.

        During a fit, the stage's time and energy are taken out of the current training
        window so that power and J/step describe training alone. A run too short for the
        sampler to give a figure yet (before its second reading) is charged, and its key
        logged, at the next window instead.

        Args:
            stage: The stage the energy is charged to, in `STAGES`.
            step: The optimizer step, for the record.
            started_as: The name given to `start_stage`, when it was not yet known which
                stage an inference run was.
        """
        run = self._stages.end(stage, step, self.meter, started_as)
        if run is None:
            return {}
        if self.fitting:
            self._window.exclude(run.start, run.end)
        charged = self._stages.charge_ready(self.meter)
        self._stages.sum_over(self.ranks)
        return self._record_stages(charged)

    def _record_stages(self, charged: list[tuple[StageRun, float]]) -> dict[str, float]:
        """A record line per charged run; the stages' cumulative figures."""
        for line in self._stages.lines(charged):
            self.write_record(lines.STAGE, **line)
        return self._stages.figures(charged)
