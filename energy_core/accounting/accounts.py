"""Accounts: what a run has spent and done, for one process and for the job.

Four parts make the totals: the share of a checkpoint this process carries (`resumed`),
the live fit (energy between the fit's start mark and now, the work of the closed and
the open windows, the stages), the CO2e and cost charged slice by slice (`Charges`), and
the job's totals at the last sum over ranks (`job`). The tracker asks for totals; this
class knows how they add up and how they are stored in a checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from energy_core.accounting.figures import J_PER_KWH, STAGES, RunTotals
from energy_core.accounting.job import JobSums, sum_over_ranks
from energy_core.accounting.ranks import Ranks
from energy_core.accounting.stages import Stages
from energy_core.accounting.window import Window, WindowFigures
from energy_core.carbon.charges import Charges
from energy_core.sampling.meter import EnergyMeter, Mark


class Accounts:
    """The run's totals for one process.

    Args:
        meter: The devices' energy.
        stages: The validation/test/predict runs.
        charges: CO2e and cost of the live fit's energy.
    """

    def __init__(self, meter: EnergyMeter, stages: Stages, charges: Charges) -> None:
        self.meter, self.stages, self.charges = meter, stages, charges
        self.resumed = RunTotals()  # this process's share of the checkpoint resumed from
        self.resumed_job = RunTotals()  # the whole job's totals in that checkpoint
        self.job: RunTotals | None = None  # the job's totals at the last sum over ranks
        self.fit_start: Mark | None = None
        self.loaded = False  # a checkpoint's state was loaded
        self.samples = self.tokens = 0  # work of the closed windows of this fit
        self._wall_offset = time.time() - meter.clock()

    def begin(self, start: Mark) -> None:
        """A fit starts at ``start``."""
        self.fit_start = start
        self._wall_offset = time.time() - start.t
        self.charges.restart(self.wall(start.t))

    def wall(self, t: float) -> float:
        """Unix time of a moment on the meter's clock."""
        return t + self._wall_offset

    def wall_now(self) -> float:
        """Unix time now, on the meter's clock."""
        return self.wall(self.meter.clock())

    def close_window(self, samples: int, tokens: int) -> None:
        self.samples += samples
        self.tokens += tokens

    def local(self, end: Mark, window: Window, charge: bool = False) -> RunTotals:
        """This process's totals at ``end`` since the first fit start (its checkpoint share included).

        CO2e and cost: the energy not yet charged is priced at the factors in force at
        ``end``; with ``charge`` that slice is charged for good (at boundaries).
        """
        if self.fit_start is None:
            return self.resumed
        start_j, end_j = self.meter.joules(self.fit_start, end)
        by_kind = self.meter.by_kind(end_j - start_j)
        live_j, when = sum(by_kind.values()), self.wall(end.t)
        if charge:
            self.charges.charge(live_j, when)
        co2e_kg, cost = self.charges.preview(live_j, when)
        live = RunTotals(
            by_kind,
            dict(self.stages.live_j),
            self.samples + window.samples,
            self.tokens + window.tokens,
            end.t - self.fit_start.t,
            co2e_kg,
            cost,
        )
        return self.resumed + live

    def spent(self, t: float, live_j: float) -> tuple[float, float, float]:
        """(kWh, kg CO2e, cost) of this process's totals with ``live_j`` joules used since the fit
        started, up to ``t`` on the meter's clock, priced at the factors in force (nothing charged)."""
        co2, cost = self.charges.preview(live_j, self.wall(t))
        resumed = self.resumed
        return (resumed.total_j + live_j) / J_PER_KWH, resumed.co2e_kg + co2, resumed.cost + cost

    def sum(
        self, ranks: Ranks, end: Mark, window: Window, figures: WindowFigures | None = None, epoch_j: float = 0.0
    ) -> JobSums:
        """The job's figures at ``end`` (one sum over ranks; the identity alone), kept as its totals."""
        sums = sum_over_ranks(ranks, self.local(end, window, charge=True), figures, epoch_j)
        self.job = sums.totals
        self.stages.set_job(sums.totals.stage_j if ranks.distributed else None)
        return sums

    def now(self, ranks: Ranks, window: Window, end: Mark | None = None) -> RunTotals:
        """The job's totals at the last sum in a multi-process job (no collective here), else this
        process's at ``end`` (now)."""
        if ranks.distributed and self.job is not None:
            return self.job
        return self.local(end or self.meter.mark(), window)

    def fit_seconds(self, end: Mark | None = None) -> float:
        """Training wall time since the first fit start, checkpoint totals included."""
        live = 0.0 if self.fit_start is None else (end or self.meter.mark()).t - self.fit_start.t
        return self.resumed.fit_s + live

    def end(self) -> None:
        """The fit ended (its totals folded into `resumed` by the caller)."""
        self.job, self.fit_start = None, None
        self.samples = self.tokens = 0

    def state(self, ranks: Ranks, window: Window, now: Mark) -> dict[str, Any]:
        """Totals at ``now``, to store in a checkpoint (the job's at the last sum, in a job)."""
        window.work()
        totals = self.now(ranks, window, now)
        stages = {s: self.stages.kwh(s) * J_PER_KWH for s in STAGES}
        kept = dataclasses.replace(totals, stage_j=stages, fit_s=self.fit_seconds(now))
        return kept.to_state()

    def load(self, state: dict[str, Any] | None, own_share: bool, co2_per_kwh: float) -> None:
        """Continue a checkpoint's totals (replacing earlier ones).

        Args:
            state: From `state` (the job's totals).
            own_share: False on every rank but 0 of a job, so that a sum counts them once.
            co2_per_kwh: kg CO2e per kWh (PUE applied) for a state from before CO2e was
                charged slice by slice.
        """
        if not state:
            return
        totals = RunTotals.from_state(state)
        if math.isnan(totals.co2e_kg):
            totals = dataclasses.replace(totals, co2e_kg=totals.total_kwh * co2_per_kwh)
        self.loaded = True
        self.resumed_job = totals
        self.resumed = totals if own_share else RunTotals(fit_s=totals.fit_s)
        self.stages.fold(self.resumed.stage_j)
