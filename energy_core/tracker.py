"""EnergyTracker: one process's energy bookkeeping, driven at the hooks of a training run.

It turns hook calls (fit start, batch end, logging boundary, epoch end, stage start and
end, fit end) into the metric dictionaries of the spec, keeps totals across checkpoint
resumes, and writes the run record. Adapters decide *when* (the framework's hooks and
logging cadence) and *where* (the framework's loggers); this class decides *what*, and
owns every piece it asks:

* the `EnergyMeter` (marks on the training thread, readings on the sampler thread);
* the open `Window`, the `Stages` and the `Accounts` (totals, summed over a job through
  `Ranks`), the run's `RunFactors` (carbon and price over time) and their `Charges`;
* the `RunRecord`, written through `energy_core.output` (keys, metric dictionaries,
  header, summary).

At a boundary the joules of its end mark are read once and handed to each piece, and the next
window starts from them: the windows and stages of a run add up to its totals at each boundary,
even where a boundary's joules were extrapolated past the newest reading (the next window then
carries the correction). The totals at the fit's end are exact (every mark fixed).

Hot path: `EnergyTracker.add_batch` adds two integers (and, for token masks, queues one
lazy device sum). Everything that reads the hardware happens on the sampler thread;
everything that computes figures happens at logging boundaries.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np
from typing_extensions import Unpack

from energy_core.accounting.accounts import Accounts
from energy_core.accounting.figures import STAGES, EpochPart, RunTotals, WindowFigures
from energy_core.accounting.ranks import JobSums, Ranks, job_gpus
from energy_core.accounting.stages import StageRun, Stages
from energy_core.accounting.window import Window
from energy_core.carbon.charges import Charges
from energy_core.carbon.run_factors import RunFactors
from energy_core.notices import Notice
from energy_core.options import MeasureArgs, MeasureOptions
from energy_core.output import metrics as metric_dicts
from energy_core.output import record as lines
from energy_core.output.header import run_header, this_process
from energy_core.output.record import RunRecord
from energy_core.output.summary import quality_notices, summary_fields, summary_text
from energy_core.sampling.bounds import MarkBound, between
from energy_core.sampling.meter import EnergyMeter, Mark
from energy_core.units import J_PER_KWH

__all__ = ["EnergyTracker", "TrackerLink"]


class BudgetStop(Protocol):
    """A budget, as a time shift on the same tracker sees it (`energy_core.budget.run.BudgetRun`)."""

    def stop_asked(self) -> bool:
        """Whether its limit is spent in this fit (one flag read): a pause ends on it."""
        ...

    def stop_if_spent(self, step: int) -> Any:
        """Its stop at ``step`` (a `BudgetAction`), once spent; else None."""
        ...


@dataclasses.dataclass
class TrackerLink:
    """What the runs that read one tracker tell each other (a budget, a power cap and a time shift in one run).

    Attributes:
        stops: The budgets reading the tracker, by id: a pause ends on a spent one, which then stops
            training before another step.
        paused_kwh: The job's energy this process's pauses used (a budget's forecast leaves
            it out of its per-step rate: a pause is no part of a step).
        paused_s: Seconds this process paused, on the meter's clock (a power cap that follows
            the grid books training time, not the pauses).
        fit_start_paused_kwh: ``paused_kwh`` when the fit began (`EnergyTracker.start_fit`): what
            the fit paused is the difference, whenever a reader starts counting.
        stopped_by: The status of the first run that ended this fit early (``budget-stop``,
            ``target-stop``, ``requeued``; `stop_by`): the summary of a fit the trainer completed
            says it, whichever run measures and in whatever order the callbacks run.
    """

    stops: dict[int, BudgetStop] = dataclasses.field(default_factory=dict)
    paused_kwh: float = 0.0
    paused_s: float = 0.0
    fit_start_paused_kwh: float = 0.0
    stopped_by: str | None = None

    def stop_asked(self) -> bool:
        return any(budget.stop_asked() for budget in self.stops.values())

    def stop_by(self, status: str) -> None:
        """A run ends this fit early: ``status`` is the summary's, unless another run did so first."""
        if self.stopped_by is None:
            self.stopped_by = status

    def final_status(self, status: str) -> str:
        """The summary's status: who ended a fit the trainer completed, else ``status`` as it is."""
        return self.stopped_by if self.stopped_by is not None and status == "completed" else status

    def stop(self, step: int) -> Any:
        """The first budget's stop at ``step`` (a `BudgetAction`), or None."""
        return next((a for budget in self.stops.values() if (a := budget.stop_if_spent(step)) is not None), None)


class Reading(NamedTuple):
    """A boundary's cumulative joules and bound per source, read in one snapshot with the fit's start
    (``start``: its joules and bound; None outside a fit) and another mark where asked (``other``). A
    moment past the newest reading is fixed at the next one: figures read apart could mix two moments'
    readings (a fit's energy, or an epoch's, below zero)."""

    joules: np.ndarray
    bound: MarkBound
    start: tuple[np.ndarray, MarkBound] | None = None
    other: tuple[np.ndarray, MarkBound] | None = None

    def since_other(self) -> tuple[float, float] | None:
        """(joules, bound) from ``other`` to the boundary, all sources (None: no other mark read)."""
        if self.other is None:
            return None
        other_j, other_bound = self.other
        return float((self.joules - other_j).sum()), float(between(other_bound, self.bound).sum())


class EnergyTracker:
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

    def __init__(self, options: MeasureOptions | None = None, **measure: Unpack[MeasureArgs]) -> None:
        if options is not None and measure:
            raise TypeError("EnergyTracker takes a MeasureOptions or its fields as keyword arguments, not both")
        self.options = options if options is not None else MeasureOptions.of("EnergyTracker", dict(measure))
        self.meter = EnergyMeter(self.options.devices, self.options.sample_interval_s, cpu_tdp_w=self.options.cpu_tdp_w)
        location_notices = self.options.location_notices()
        self.factors = RunFactors(
            self.options.carbon_factor(), self.options.price_factor(), self.options.pue, self.options.currency
        )
        self.record = RunRecord(self.options.record_path) if self.options.record_path else None
        self.ranks = Ranks()
        self.joined = False  # whether a job's part was taken (`join`): a fit's start, or a stage's of its own
        self._gpus: list[str] | None = None  # the job's GPU names, once a fit has started
        self._ended: RunTotals | None = None  # the job's totals at the last fit's end, in a multi-process job
        self._start_notices: list[Notice] | None = location_notices  # shown once, at the first start
        self._notices: list[Notice] = []  # found while measuring, for the adapters to show
        self._said_unresolved = False
        self._disagreeing: set[str] = set()  # boards whose two instruments disagreed (said once each)
        self._run_info: dict[str, Any] = {}
        self._cap_in_force: Callable[[], float | None] | None = None  # `show_power_cap`'s
        self._caps: list[dict[str, Any]] = []
        self._parts: dict[str, Callable[[RunTotals], dict[str, Any]]] = {}
        self._epoch_start: Mark | None = None
        self._epoch_begun: tuple[float, float, float] = (0.0, 0.0, 0.0)  # in a job: its (J, bound, s) then
        self._epoch_before: EpochPart | None = None  # the epoch under way's part before this fit (a checkpoint's)
        self._epoch_resumed: EpochPart | None = None  # a loaded checkpoint's, for the next fit
        self._epoch_index: int | None = None  # the epoch under way, as the adapter numbers them (None: unknown)
        self._stages = Stages()
        self._alone: tuple[str, Charges] | None = None  # a stage run outside a fit: its name, its charges
        self._others: tuple[dict[str, dict[str, Any]], dict[str, int]] = ({}, {})  # the other ranks' faults
        self._window = Window()
        self._accounts = Accounts(self.meter, Charges(self.factors))
        self.link = TrackerLink()  # what the budget, cap and time shift reading this tracker tell each other
        self.measures_alone = False  # made by a budget, target or time shift with no monitor (`TrackerShare`)
        self._held: list[tuple[str, dict[str, Any]]] | None = None  # lines for the next run's record, after its header

    # ----------------------------------------------------------------- set-up
    def join(self, ranks: Ranks) -> None:
        """Take this process's part in a job (before `start_fit`): its devices, the record, sums."""
        self.ranks, self.joined = ranks, True
        self.meter.assign(ranks.gpu_indices, ranks.node_devices, ranks.host_peers)
        if not ranks.leads_job:
            self.record = None

    def describe(self, **run_info: Any) -> None:
        """Fields for the record's header: the framework and its trainer's settings."""
        self._run_info = run_info

    def show_power_cap(self, cap_w: Callable[[], float | None] | None, caps: list[dict[str, Any]]) -> None:
        """A cap: ``power/cap_w`` in every window is ``cap_w()`` then (None, or a None it returns: no
        figure), and the header's caps.

        Asked at each window, not kept: a limit put back meanwhile (by the exit guard, on a signal whose
        handler let training go on) is no longer shown as in force."""
        self._cap_in_force, self._caps = cap_w, caps
        if self._cap_w() is not None and not self.fitting and self._held is None:
            self._held = []  # a cap put in force for a fit not started yet: its lines follow that fit's header

    def _cap_w(self) -> float | None:
        """The cap in force now, for ``power/cap_w`` (None: no figure)."""
        return self._cap_in_force() if self._cap_in_force is not None else None

    def add_summary(self, name: str, part: Callable[[RunTotals], dict[str, Any]]) -> None:
        """A part of the summary another run adds (a time shift: ``time_shift``), made from the
        job's totals when the summary is written."""
        self._parts[name] = part

    @property
    def fitting(self) -> bool:
        return self._accounts.fit_start is not None

    @property
    def fit_start(self) -> Mark | None:
        """Where the fit now running began (None outside a fit): each fit's own, so a run can
        tell the fit it was begun in from a later one."""
        return self._accounts.fit_start

    def now(self) -> float:
        """Unix time now, on the meter's clock (the clock every figure of the run is timed by)."""
        return self._accounts.wall_now()

    # ----------------------------------------------------------------- lifecycle
    def _open(self) -> list[Notice]:
        """Start measuring; the notices are returned once per tracker, then []."""
        notices = self.meter.open()
        found, self._start_notices = self._start_notices, None
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
        self._name_gpus()
        self._ended = None
        if resumed and not self._accounts.loaded:
            text = "Resumed from a checkpoint without energy state: the energy and CO2e totals restart at zero."
            notices.append(Notice("warn", text))
        start = self._epoch_start = self.meter.mark()
        carried = self._accounts.resumed
        self._epoch_before, self._epoch_resumed = self._epoch_resumed, None
        self._epoch_index = self._epoch_before.epoch if self._epoch_before is not None else None
        job = self._accounts.resumed_job  # the job's totals are what the epoch is taken out of, on every rank
        self._epoch_begun = (job.total_j, job.total_err, job.fit_s)
        self._accounts.begin(start)
        self.link.fit_start_paused_kwh = self.link.paused_kwh
        self.link.stopped_by = None
        self.factors.start()
        self._window = Window(start, step)
        self._new_run(notices, resumed_from=carried.to_state() if carried.energy_j else None)
        return notices

    def training_starts_at(self, step: int) -> None:
        """The fit's training starts at optimizer step ``step`` (a framework that restores a checkpoint's
        step after the fit began, as Lightning does): the open window counts its steps from there. Its
        energy still runs from the fit's start, the stages in between taken out of it."""
        if self._window.start is not None:
            self._window.step = step

    def _name_gpus(self) -> None:
        """Each GPU this process measures under its name in the job (`job_gpus`: a sum over the
        ranks in a job), the name its power is logged and recorded under."""
        mine = [s for s in self.meter.sources if s.info.kind == "gpu"]
        names, self._gpus = job_gpus(self.ranks, [s.info.name for s in mine])
        for source in mine:
            source.info = dataclasses.replace(source.info, name=names[source.info.name])

    @property
    def gpu_names(self) -> list[str]:
        """The names of the job's GPUs (``power/<name>_w``): every rank's, once a fit has started."""
        if self._gpus is not None:
            return list(self._gpus)
        return [s.info.name for s in self.meter.sources if s.info.kind == "gpu"]

    def _new_run(self, notices: list[Notice], **fields: Any) -> None:
        """A new run in the record: its id and its header (a collective in a job: every rank's devices)."""
        everyone = self.ranks.gather_all({"rank": self.ranks.rank, **this_process(self.meter)})
        carbon = self.factors.header(self._accounts.wall_now())
        header = run_header(self.meter, carbon, notices, everyone, power_caps=self._caps, **fields, **self._run_info)
        if self.record is not None:
            self.record.new_run()
        self.write_record(lines.HEADER, **header)
        self._release_held()

    def _release_held(self) -> None:
        """The lines held for this run (`show_power_cap` before the fit started), written now."""
        held, self._held = self._held or [], None
        for kind, fields in held:
            self.write_record(kind, **fields)

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
        end = self.meter.mark()  # before the sampler stops: its last reading fixes the fit's end exactly
        self._notices += self.meter.close()
        self._cross_check()
        self.factors.stop()
        settled = self._stages.settle(self.meter)  # every mark is fixed now
        self._stages.abandon()  # a stage the fit's end cut short (an exception, a close from another thread)
        if not collective:
            self._wait_for_no_other_rank()
        self._others = self._faults_elsewhere()  # the meter is closed: every rank's faults are final
        job = self._sum(end, self._window.work(), self._read(end))
        metrics = {**self._cumulative(job.totals), **self._record_stages(settled)}
        # Fold this run into the resumed totals: a later fit of this tracker continues them.
        kept = self._kept(job.totals, end)
        self._continue(kept, own_share=not self.ranks.distributed or self.ranks.leads_job)
        self._ended = kept if self.ranks.distributed else None  # every rank's summary: the job's
        self._accounts.end()
        self._window = Window(None, step)
        fields = self.summary_fields(metrics)
        self._notices += quality_notices(fields)
        self.write_record(lines.SUMMARY, step=step, status=self.link.final_status(status), **fields)
        self.link.stopped_by = None  # the next fit's, if one stops it
        return metrics

    def close(self) -> None:
        """Stop sampling and close the record (end of the process's use)."""
        self._notices += self.meter.close()
        self.factors.stop()
        if self._held and self.record is not None:  # a fit that never started: the cap's lines, written all
            self.record.new_run()  # the same, are no earlier run's (that run was never capped)
        self._release_held()
        if self.record is not None:
            self.record.close()

    # ----------------------------------------------------------------- hot path
    def add_batch(self, batch: Any) -> int:
        """Count one (micro-)batch's samples and tokens; its samples. No device sync, no I/O."""
        return self._window.add_batch(batch)

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
    ) -> tuple[dict[str, float], JobSums | None]:
        """The window's (and the epoch's) figures at ``end``; the job's sums (the epoch's joules
        and bound), or None when no figure could be given."""
        if self._window.start is None:
            return {}, None
        if not self.meter.resolvable(end):  # before the sampler's second reading: no figure, not a zero
            self._sum(end, self._window.counted(), self._read(end))  # ranks reach this alike
            if not self._said_unresolved:
                self._said_unresolved = True
                text = (
                    "A logging window ended before the sampler's second hardware reading (sample_interval_s="
                    f"{self.meter.sample_interval_s:g}): its energy figures are left out, not logged as zeros; the "
                    "run's totals include that time."
                )
                self._notices.append(Notice("info", text))
            return metric_dicts.cap(self._cap_w()), None
        # The end and the epoch's start are read together: either may be past the newest reading, fixed by
        # the next one, and two reads could give the epoch a figure below zero.
        reading = self._read(end, epoch_start)
        end_j, end_bound = reading.joules, reading.bound
        epoch_j, epoch_err = reading.since_other() or (0.0, 0.0)
        settled = self._stages.settle(self.meter)  # runs too short to resolve at their end
        self._notices += self.meter.new_silences()
        self._cross_check()
        if self._window.idle(step):  # nothing trained since the last window: it stays open
            idle = self._sum(end, self._window.counted(), reading, epoch_j=epoch_j, epoch_err=epoch_err)
            return {**self._cumulative(idle.totals), **self._record_stages(settled)}, idle  # ranks reach this alike
        local, carried_j = self._window.close(self.meter, end, end_j, step, end_bound)
        job = self._sum(end, (local.samples, local.tokens), reading, local, epoch_j, epoch_err)
        figures = job.window or local
        metrics = {**self._cumulative(job.totals), **metric_dicts.window(figures), **self._record_stages(settled)}
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
        # A window that came out below zero carries its excess into the next: so does its bound.
        carried_bound = dataclasses.replace(end_bound, spread=end_bound.spread + np.maximum(carried_j - end_j, 0.0))
        self._window = Window(end, step, carried_j, carried_bound)
        return metrics, job

    def start_epoch(self, epoch: int | None = None) -> None:
        """An epoch begins (``epoch``: its index, as `end_epoch` will be given it; None where unknown)."""
        self._epoch_start = self.meter.mark()
        if epoch is not None:
            self._epoch_index = epoch
            self._keep_epoch_part_of(epoch)

    def _keep_epoch_part_of(self, epoch: int) -> EpochPart:
        """The part before this fit of epoch ``epoch`` (a checkpoint's), kept; a part of another epoch
        (a checkpoint written after an epoch's last step, before its end, resumes at the next one) is
        dropped, and none is returned."""
        if self._epoch_before is not None and self._epoch_before.epoch not in (None, epoch):
            self._epoch_before = None
        return self._epoch_before or EpochPart()

    def end_epoch(self, step: int, epoch: int, extra: dict[str, Any] | None = None) -> dict[str, float]:
        """Metrics at an epoch end: the partial window since the last log, the totals,
        and ``energy/epoch_kwh`` (everything since the epoch began, validation included)."""
        end = self.meter.mark()
        start = self._epoch_start if self.fitting else None
        metrics, sums = self._close(step, end, extra, start)
        if start is not None and sums is not None:
            part = EpochPart(sums.epoch_j, sums.epoch_err, end.t - start.t) + self._keep_epoch_part_of(epoch)
            metrics |= metric_dicts.epoch(part.energy_j, part.energy_err)
            self.write_record(
                lines.EPOCH,
                step=step,
                epoch=epoch,
                seconds=part.seconds,
                elapsed_s=self.fit_seconds(end),
                metrics=metrics,
                extra=extra or {},
            )
        self._epoch_start, self._epoch_before, self._epoch_index = end, None, epoch + 1
        if sums is not None:
            self._epoch_begun = (sums.totals.total_j, sums.totals.total_err, self.fit_seconds(end))
        return metrics

    # ----------------------------------------------------------------- other stages
    def start_stage(self, stage: str) -> list[Notice]:
        """Begin a validation/test/predict run (``stage`` in `STAGES`, or a provisional name).

        Outside a fit (``trainer.validate()``, HF's ``evaluate()``), the stage is a run of its own
        in the record: its header now, its stage line and a summary when it ends.
        """
        notices = self._open()
        start = self.meter.mark()
        self._stages.start(stage, start)
        if not self.fitting and self._alone is None:
            self._alone = (stage, Charges(self.factors))
            self._accounts.follow(self._alone[1], start)
            self._new_run(notices, stage=stage)
        return notices

    def end_stage(
        self, stage: str, step: int, started_as: str | None = None, status: str = "completed", collective: bool = True
    ) -> dict[str, float]:
        """End a stage; returns ``{"energy/<stage>_kwh": cumulative kWh of that stage}``.

        During a fit, the stage's time and energy are taken out of the current training
        window so that power and J/step describe training alone. A run too short for the
        sampler to give a figure yet (before its second reading) is settled, and its key
        logged, at the next window instead.

        Args:
            stage: The stage the energy is counted as, in `STAGES`.
            step: The optimizer step, for the record.
            started_as: The name given to `start_stage`, when it was not yet known which
                stage an inference run was.
            status: How a run of its own (a stage outside a fit) ended, for its summary
                (`energy_core.output.summary.end_status` where an exception ended it).
            collective: False where the other ranks may not get here (an exception on this
                rank): from here on, nothing waits for them.
        """
        run = self._stages.end(stage, step, self.meter.mark(), started_as)
        if run is None:
            return {}
        if not collective:
            self._wait_for_no_other_rank()
        if self.fitting:
            self._window.exclude(run)
        alone = self._alone is not None and self._alone[0] == (started_as or stage)
        if alone:  # the end of a run of its own: a last reading fixes its marks, however short it was
            self._notices += self.meter.close()
        settled = self._stages.settle(self.meter)
        self._stages.sum_over(self.ranks)
        figures = self._record_stages(settled)
        if alone:
            self._end_alone(run, step, status)
            self._stages.drop(run)
        return figures

    def _wait_for_no_other_rank(self) -> None:
        """The other ranks may not get here (an exception on this one): from now on, nothing waits for them."""
        self.ranks = Ranks(self.ranks.rank, self.ranks.local_rank)

    def _end_alone(self, run: StageRun, step: int, status: str) -> None:
        """The summary of a stage run outside a fit: its energy, CO2e and cost, its seconds."""
        assert self._alone is not None and run.per_source is not None and run.per_source_err is not None  # settled
        charges, self._alone = self._alone[1], None
        by_kind = self.meter.by_kind(run.per_source)
        joules = sum(by_kind.values())
        co2e_kg, cost = charges.at(joules, self._accounts.wall(run.end.t))
        err_by_kind = self.meter.by_kind(run.per_source_err)
        co2e_err, cost_err = charges.bound(sum(err_by_kind.values()), joules, self._accounts.wall(run.end.t))
        totals = RunTotals(
            by_kind,
            {run.stage: joules},
            fit_s=run.end.t - run.start.t,
            co2e_kg=co2e_kg,
            cost=cost,
            energy_err=err_by_kind,
            stage_err={run.stage: sum(err_by_kind.values())},
            co2e_err=co2e_err,
            cost_err=cost_err,
        )
        stage_figures = metric_dicts.stage(
            run.stage, totals.stage_kwh(run.stage), totals.stage_err[run.stage] / J_PER_KWH
        )
        metrics = {**self._cumulative(totals), **stage_figures}
        stages = {s: totals.stage_kwh(s) for s in STAGES}
        fields = summary_fields(metrics, totals, stages, self.carbon_fields(), self.meter, self.factors.cost_currency)
        self.write_record(lines.SUMMARY, step=step, status=status, **fields)

    def _record_stages(self, settled: list[tuple[StageRun, float]]) -> dict[str, float]:
        """A record line per settled run; the stages' cumulative figures."""
        figures: dict[str, float] = {}
        for run, joules in settled:
            stage = metric_dicts.stage(run.stage, self._stages.kwh(run.stage), self._stages.kwh_err(run.stage))
            seconds = run.end.t - run.start.t
            kwh = joules / J_PER_KWH
            kwh_err = float(run.per_source_err.sum()) / J_PER_KWH if run.per_source_err is not None else 0.0
            self.write_record(
                lines.STAGE, stage=run.stage, step=run.step, seconds=seconds, kwh=kwh, kwh_err=kwh_err, metrics=stage
            )
            figures.update(stage)
        return figures

    # ----------------------------------------------------------------- pauses
    def pause(self) -> Mark:
        """Training pauses now (a time shift); returns where the pause starts. The sampler goes on
        charging what the devices use, at the factors in force at each reading. No collective."""
        return self.meter.mark()

    def resume(self, start: Mark, step: int) -> float:
        """The pause that began at ``start`` ends now: its energy stays in the totals, and its time
        and energy are taken out of the open window (it held no training). Returns its seconds."""
        end = self.meter.mark()
        self._window.exclude(StageRun("pause", start, end, step))
        return end.t - start.t

    def in_stage(self, stage: str) -> bool:
        return self._stages.running(stage)

    def stage_kwh(self, stage: str) -> float:
        """Energy of all runs of a stage so far (the job's, in a multi-process job), kWh."""
        return self._stages.kwh(stage)

    # ----------------------------------------------------------------- totals
    def _read(self, end: Mark, other: Mark | None = None) -> Reading:
        """A boundary's figures, with the fit's start and ``other`` (an epoch's start), in one snapshot
        (read once per boundary)."""
        start = self._accounts.fit_start
        marks = [end, *([start] if start is not None else []), *([other] if other is not None else [])]
        joules, bounds = self.meter.read(*marks)
        found = iter(zip(joules, bounds, strict=True))
        end_j, end_bound = next(found)
        return Reading(end_j, end_bound, next(found) if start is not None else None,
                       next(found) if other is not None else None)  # fmt: skip

    def _local(self, end: Mark, open_work: tuple[int, int], reading: Reading | None = None) -> RunTotals:
        """This process's totals at ``end`` (nothing charged; ``reading``: ``end``'s, if read already)."""
        reading = reading or self._read(end)
        stages = self._stages
        return self._accounts.local(
            end, reading.joules, open_work, stages.live_j, reading.bound, stages.live_err, reading.start
        )

    def _sum(
        self,
        end: Mark,
        open_work: tuple[int, int],
        reading: Reading,
        figures: WindowFigures | None = None,
        epoch_j: float = 0.0,
        epoch_err: float = 0.0,
    ) -> JobSums:
        """The job's figures at boundary ``end`` (read as ``reading``): one sum over the ranks."""
        local = self._local(end, open_work, reading)
        sums = self._accounts.sum(self.ranks, local, figures, epoch_j, self._gpus or (), epoch_err)
        distributed = self.ranks.distributed
        self._stages.set_job(
            sums.totals.stage_j if distributed else None, sums.totals.stage_err if distributed else None
        )
        for line in self.factors.new_lines():  # every value used, from when, and where it came from
            self.write_record(lines.FACTOR, **line)
        return sums

    def _totals_now(
        self, open_work: tuple[int, int] | None = None, end: Mark | None = None, reading: Reading | None = None
    ) -> RunTotals:
        """The job's totals at the last sum in a multi-process job (no collective here), else this
        process's at ``end`` (now; ``reading``: ``end``'s, if read already)."""
        if self.ranks.distributed and self._accounts.job is not None:
            return self._accounts.job
        if not self.fitting:
            return self._ended or self._accounts.resumed
        return self._local(end or self.meter.mark(), open_work or self._window.counted(), reading)

    def _cumulative(self, totals: RunTotals) -> dict[str, float]:
        g_per_kwh = self.factors.carbon.peek(self._accounts.wall_now()).value  # the sampler's charges keep it
        return metric_dicts.cumulative(totals, g_per_kwh, self.factors.price is not None, self._cap_w())

    def totals(self) -> dict[str, float]:
        """Cumulative figures now (``energy/*_kwh``, ``carbon/*``), checkpoint totals included.

        In a multi-process job: the job's totals at the last sum over ranks.
        """
        return self._cumulative(self._totals_now())

    def reduce_totals(self) -> dict[str, float]:
        """The job's totals now: a collective in a multi-process job (all ranks must call)."""
        return self._cumulative(self.snapshot()[0])

    def snapshot(self) -> tuple[RunTotals, bool]:
        """The job's totals now, typed, their ``fit_s`` the training time since the first fit
        start (checkpoints included), and whether their energy is resolved: a collective in a
        multi-process job (all ranks must call).

        Now is a mark taken here: its joules are extrapolated from the newest reading (at most
        one sampling interval old) at the last second's power, as at every logging boundary.
        Before the sampler's second reading there is no power to extrapolate with: the energy
        is then no figure (False), not a zero.
        """
        if self.fitting:
            now = self.meter.mark()
            return self._sum(now, self._window.counted(), self._read(now)).totals, self.meter.resolvable(now)
        return self._totals_now(), True

    def measured(self) -> RunTotals:
        """The job's totals up to the newest hardware reading, typed: every figure measured, none
        extrapolated, so no total told later can be smaller (the totals only grow from a reading
        on). A collective in a multi-process job (all ranks must call).

        What a budget judges and tells: at most one sampling interval behind now. Before the
        first reading of the fit: the totals at its start (a checkpoint's, or zero).
        """
        if not self.fitting:
            return self._totals_now()
        start = self._accounts.fit_start
        assert start is not None  # fitting
        newest = self.meter.newest()
        end = newest if newest is not None and start.final and newest.t >= start.t else start
        return self._sum(end, self._window.counted(), self._read(end)).totals

    @property
    def resumed_kwh(self) -> float:
        """The job's energy in the checkpoint resumed from (or earlier fits of this tracker), kWh."""
        return self.resumed_totals.total_kwh

    @property
    def resumed_totals(self) -> RunTotals:
        """The job's totals in the checkpoint resumed from (or earlier fits of this tracker)."""
        return self._accounts.resumed_job

    def fit_seconds(self, end: Mark | None = None) -> float:
        """Training wall time since the first fit start, checkpoint totals included."""
        return self._accounts.fit_seconds(end)

    def watch_limits(self, reached: Callable[[float, float, float], bool]) -> threading.Event:
        """An event the sampler thread sets once ``reached(kWh, kg CO2e, cost)`` is true of this
        process's totals (checked after every hardware reading, the energy since the last
        boundary priced at the factors in force: the training thread only reads a flag)."""
        accounts = self._accounts
        if accounts.fit_start is None:
            raise RuntimeError("watch_limits needs a started fit")
        return self.meter.watch(accounts.fit_start, lambda t, live_j: reached(*accounts.spent(t, live_j)))

    def per_kwh_now(self) -> tuple[float, float]:
        """(kg CO2e, cost) of one more kWh at the factors in force now, PUE applied."""
        return self.factors.per_kwh(self._accounts.wall_now(), kept=False)  # a forecast's price, not a charge

    def _cross_check(self) -> None:
        """A ``check`` line for every span over which a board's counter and its power disagreed
        beyond their joint bound, and a notice the first time for each board."""
        for found in self.meter.disagreements():
            self.write_record(lines.CHECK, **found.fields())
            if found.source not in self._disagreeing:
                self._disagreeing.add(found.source)
                text = (
                    f"{found.source}: its energy counter ({found.counter_j:,.0f} J) and its integrated power "
                    f"({found.power_j:,.0f} J) disagree over {found.seconds:.0f} s by more than their joint bound "
                    f"({found.bound_j:,.0f} J): one instrument is wrong. The figures follow the counter; the run "
                    "record's check lines list every such span."
                )
                self._notices.append(Notice("warn", text))

    # ----------------------------------------------------------------- notices and record
    def pop_notices(self) -> list[Notice]:
        """What measurement found since the last call (a lost device, a record that cannot be
        written, a hung read, an intensity series that ends): for the adapter to show, once."""
        found, self._notices = self._notices, []
        found += self.factors.take_notices()
        failure = self.record.take_notice() if self.record is not None else None
        return found + ([failure] if failure else [])

    def write_record(self, kind: str, **fields: Any) -> None:
        """Append a line to the run record (when this process writes one); held until the next run's
        header while a cap is in force for a fit that has not started (`show_power_cap`)."""
        if self._held is not None and kind != lines.HEADER:
            self._held.append((kind, fields))
        elif self.record is not None:
            self.record.write(kind, **fields)

    # ----------------------------------------------------------------- summary
    def summary_fields(self, metrics: dict[str, float]) -> dict[str, Any]:
        """The record's summary fields for these final metrics (in a job, with the other ranks' faults)."""
        totals, stage_kwh = self._totals_now(), {s: self.stage_kwh(s) for s in STAGES}
        parts = {name: part(totals) for name, part in self._parts.items()}
        return summary_fields(
            metrics, totals, stage_kwh, self.carbon_fields(), self.meter, self.factors.cost_currency, parts,
            elsewhere=self._others,
        )  # fmt: skip

    def _faults_elsewhere(self) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
        """The other ranks' faults and failed reads (`EnergyMeter.quality`, `failed_reads`), each source
        named ``rank<r>/<name>``: a collective at the fit's end in a job (else nothing)."""
        found = self.ranks.gather_all((self.meter.quality(), self.meter.failed_reads()))
        faults: dict[str, dict[str, Any]] = {}
        failed: dict[str, int] = {}
        for rank, (quality, reads) in enumerate(found or []):
            if rank != self.ranks.rank:
                faults.update({f"rank{rank}/{name}": fault for name, fault in quality.items()})
                failed.update({f"rank{rank}/{name}": n for name, n in reads.items()})
        return faults, failed

    def carbon_fields(self) -> dict[str, Any]:
        """The carbon factor in force now, its source and the PUE (the header's and the summary's)."""
        return self.factors.fields(self._accounts.wall_now())

    @property
    def estimated_kinds(self) -> set[str]:
        """The device kinds whose energy is estimated here, not read from a counter."""
        return {s.info.kind for s in self.meter.sources if s.info.estimated}

    def summary_text(self, metrics: dict[str, float]) -> str:
        """A few lines for the console at the end of a run."""
        return summary_text(self.summary_fields(metrics), self.estimated_kinds)

    # ----------------------------------------------------------------- checkpoints
    def _kept(self, totals: RunTotals, at: Mark) -> RunTotals:
        """``totals`` as a checkpoint keeps them: every stage's energy (the job's) and the fit's seconds."""
        stages = {s: self._stages.kwh(s) * J_PER_KWH for s in STAGES}
        errors = {s: self._stages.kwh_err(s) * J_PER_KWH for s in STAGES}
        return dataclasses.replace(totals, stage_j=stages, stage_err=errors, fit_s=self.fit_seconds(at))

    def state_dict(self, at: Mark | None = None) -> dict[str, Any]:
        """Totals so far (or at mark ``at``), to store in a checkpoint; a resumed run continues.

        In a multi-process job these are the job's totals at the last logging boundary
        (a checkpoint can be written by rank 0 alone, so no collective runs here).
        """
        at = at or self.meter.mark()
        if not self.fitting:  # as the fit ended, or as it was loaded (the job's totals, on every rank)
            totals = self._kept(self._ended, at) if self._ended is not None else self._accounts.resumed_job
            state = totals.to_state()
            if self._epoch_resumed is not None:  # loaded, the next fit not started: as it was loaded
                state["epoch"] = self._epoch_resumed.within(totals).to_state()
            return state
        # ``at`` and the epoch's start are read together, and once: a moment past the newest reading gets its
        # figure at the next one, and a second read could give the totals and the epoch two figures for it.
        start = None if self.ranks.distributed else self._epoch_start
        reading = self._read(at, start)
        totals = self._kept(self._totals_now(self._window.work(), at, reading), at)
        state = totals.to_state()
        span = reading.since_other()
        if start is not None and span is not None:  # the epoch under way so far: a resume counts it
            so_far = EpochPart(*span, at.t - start.t, self._epoch_index)
        else:  # in a job, where a checkpoint is written by one rank and nothing is summed here: the job's totals
            total_j, total_err, fit_s = self._epoch_begun  # since the epoch began, within both totals' bounds
            so_far = EpochPart(totals.total_j - total_j, totals.total_err + total_err, totals.fit_s - fit_s,
                               self._epoch_index)  # fmt: skip
        state["epoch"] = (so_far + (self._epoch_before or EpochPart())).within(totals).to_state()
        return state

    def load_state_dict(self, state: dict[str, Any] | None, own_share: bool = True) -> None:
        """Continue the totals of a checkpointed run (replaces earlier ones).

        Args:
            state: From `state_dict` (the job's totals); None: none to continue.
            own_share: False on every rank but 0 of a multi-process job, so that the sum
                over ranks counts the checkpoint's totals once.

        Raises:
            ValueError: naming the field of the stored state that is missing or wrong.
        """
        if state is not None:  # {} is a state with every field missing, not "no state"
            totals = RunTotals.from_state(state)
            epoch = EpochPart.from_state(state, totals)
            self._continue(totals, own_share)
            self._epoch_resumed = epoch  # the job's, on every rank: added after the sum over the ranks

    def _continue(self, totals: RunTotals, own_share: bool) -> None:
        """Carry ``totals`` (the job's) on: this process's share of them, the stages' too."""
        self._ended = None
        carried = self._accounts.load(totals, own_share, self.factors.per_kwh(time.time(), kept=False)[0])
        self._stages.fold(carried.stage_j, carried.stage_err)
