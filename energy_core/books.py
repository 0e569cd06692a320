"""RunBooks: the state of one process's tracker, and every figure read from it between hooks.

The state: the meter, the run's factors (`RunFactors`), the totals (`Accounts`), the
stages, the open window, this process's part in the job, the run record and the notices
found while measuring. The reads: cumulative totals (summed over the job on demand), a
budget's limit watch and the price of one more kWh, the stages' energy, the summary, the
checkpoint state. `EnergyTracker` (tracker.py) is this class plus the hooks that change
the state; budgets, caps and checkpoints mostly read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from typing_extensions import Unpack

from energy_core.accounting.accounts import Accounts
from energy_core.accounting.figures import STAGES, RunTotals
from energy_core.accounting.job import JobSums
from energy_core.accounting.ranks import Ranks
from energy_core.accounting.stages import Stages
from energy_core.accounting.window import Window, WindowFigures
from energy_core.carbon.charges import Charges
from energy_core.carbon.run_factors import RunFactors
from energy_core.notices import Notice
from energy_core.options import MeasureArgs, MeasureOptions
from energy_core.output import metrics as metric_dicts
from energy_core.output import record as lines
from energy_core.output.record import RunRecord
from energy_core.output.summary import summary_fields, summary_text
from energy_core.sampling.meter import EnergyMeter, Mark


class RunBooks:
    """The state an `EnergyTracker`'s hooks change, and the figures read from it (built as an `EnergyTracker`)."""

    def __init__(self, options: MeasureOptions | None = None, **measure: Unpack[MeasureArgs]) -> None:
        if options is not None and measure:
            raise TypeError("EnergyTracker takes a MeasureOptions or its fields as keyword arguments, not both")
        self.options = options if options is not None else MeasureOptions.of("EnergyTracker", dict(measure))
        self.meter = EnergyMeter(self.options.devices, self.options.sample_interval_s, cpu_tdp_w=self.options.cpu_tdp_w)
        self.intensity, notices = self.options.intensity()  # the fixed or location figure
        self.factors = RunFactors.of(self.options)  # the intensity over time (that figure, a series, live), price
        self.carbon, self.price, self.pue = self.factors.carbon, self.factors.price, self.factors.pue  # for callers
        self.record = RunRecord(self.options.record_path) if self.options.record_path else None
        self.ranks = Ranks()
        self._pending_notices: list[Notice] | None = notices
        self._notices: list[Notice] = []  # found while measuring, for the adapters to show
        self._said_unresolved = False
        self._run_info: dict[str, Any] = {}
        self._cap_w: float | None = None
        self._caps: list[dict[str, Any]] = []
        self._epoch_start: Mark | None = None
        self._stages = Stages()
        self._window = Window()
        self._accounts = Accounts(self.meter, self._stages, Charges(self.factors))

    # ----------------------------------------------------------------- state, notices, record
    @property
    def fitting(self) -> bool:
        return self._accounts.fit_start is not None

    def pop_notices(self) -> list[Notice]:
        """What measurement found since the last call (a lost device, a record that cannot be
        written, a hung read, an intensity series that ends): for the adapter to show, once."""
        found, self._notices = self._notices, []
        found += self.factors.take_notices()
        failure = self.record.take_notice() if self.record is not None else None
        return found + ([failure] if failure else [])

    def write_record(self, kind: str, **fields: Any) -> None:
        """Append a line to the run record (when this process writes one)."""
        if self.record is not None:
            self.record.write(kind, **fields)

    # ----------------------------------------------------------------- totals
    def _sum(self, end: Mark, figures: WindowFigures | None = None, epoch_j: float = 0.0) -> JobSums:
        sums = self._accounts.sum(self.ranks, end, self._window, figures, epoch_j)
        for line in self.factors.new_lines():  # every value used, from when, and where it came from
            self.write_record(lines.FACTOR, **line)
        return sums

    def _totals_now(self, end: Mark | None = None) -> RunTotals:
        return self._accounts.now(self.ranks, self._window, end)

    def _cumulative(self, totals: RunTotals) -> dict[str, float]:
        g_per_kwh = self.factors.carbon.at(self._accounts.wall_now()).value
        return metric_dicts.cumulative(totals, g_per_kwh, self.factors.price is not None, self._cap_w)

    def totals(self) -> dict[str, float]:
        """Cumulative figures now (``energy/*_kwh``, ``carbon/*``), checkpoint totals included.

        In a multi-process job: the job's totals at the last sum over ranks.
        """
        return self._cumulative(self._totals_now())

    def reduce_totals(self) -> dict[str, float]:
        """The job's totals now: a collective in a multi-process job (all ranks must call)."""
        if self.fitting:
            self._sum(self.meter.mark())
        return self.totals()

    @property
    def resumed_kwh(self) -> float:
        """The job's energy in the checkpoint resumed from (or earlier fits of this tracker), kWh."""
        return self._accounts.resumed_job.total_kwh

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
        return self.factors.per_kwh(self._accounts.wall_now())

    # ----------------------------------------------------------------- stages
    def in_stage(self, stage: str) -> bool:
        return self._stages.running(stage)

    def stage_kwh(self, stage: str) -> float:
        """Energy of all runs of a stage so far (the job's, in a multi-process job), kWh."""
        return self._stages.kwh(stage)

    # ----------------------------------------------------------------- summary and state
    def summary_fields(self, metrics: dict[str, float]) -> dict[str, Any]:
        """The record's summary fields for these final metrics."""
        totals, stage_kwh = self._totals_now(), {s: self.stage_kwh(s) for s in STAGES}
        return summary_fields(metrics, totals, stage_kwh, self.carbon_fields(), self.meter, self.factors.cost_currency)

    def carbon_fields(self) -> dict[str, Any]:
        """The carbon factor in force now, its source and the PUE (the header's and the summary's)."""
        return self.factors.fields(self._accounts.wall_now())

    def summary_text(self, metrics: dict[str, float]) -> str:
        """A few lines for the console at the end of a run."""
        estimated = {s.info.kind for s in self.meter.sources if s.info.estimated}
        return summary_text(self.summary_fields(metrics), estimated)

    def state_dict(self, at: Mark | None = None) -> dict[str, Any]:
        """Totals so far (or at mark ``at``), to store in a checkpoint; a resumed run continues.

        In a multi-process job these are the job's totals at the last logging boundary
        (a checkpoint can be written by rank 0 alone, so no collective runs here).
        """
        return self._accounts.state(self.ranks, self._window, self.meter.mark() if at is None else at)

    def load_state_dict(self, state: dict[str, Any] | None, own_share: bool = True) -> None:
        """Continue the totals of a checkpointed run (replaces earlier ones).

        Args:
            state: From `state_dict` (the job's totals).
            own_share: False on every rank but 0 of a multi-process job, so that the sum
                over ranks counts the checkpoint's totals once.

        Raises:
            ValueError: naming the field of the stored state that is missing or wrong.
        """
        self._accounts.load(state, own_share, self.factors.per_kwh(time.time())[0])
