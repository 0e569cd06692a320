"""Accounts: what one process's run has spent and done, and the job's totals at the last sum.

Three parts make the totals: the share of a checkpoint this process carries (`resumed`),
the live fit (energy between the fit's start mark and a boundary, the work of the closed
windows plus what the caller says of the open one, the stages' energy the caller gives),
and the CO2e and cost of the live fit's energy, charged at every reading on the sampler
thread (`Charges`, wired by `Accounts.follow`).
`Accounts.sum` adds them up over the ranks of a job and keeps the result (`job`).

This class reads no mark of its own but the fit's start: the caller reads a boundary's
joules once and passes them in, with the open window's work and the stages' energy,
which the caller owns.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

import numpy as np

from energy_core.accounting.figures import RunTotals, WindowFigures
from energy_core.accounting.ranks import JobSums, Ranks, sum_over_ranks
from energy_core.carbon.charges import Charges
from energy_core.sampling.bounds import MarkBound, between
from energy_core.sampling.meter import EnergyMeter, Mark
from energy_core.units import J_PER_KWH


class Accounts:
    """The run's totals for one process.

    Args:
        meter: The devices' energy (its clock, its sources' kinds, the fit start's joules).
        charges: CO2e and cost of the live fit's energy.
    """

    def __init__(self, meter: EnergyMeter, charges: Charges) -> None:
        self.meter, self.charges = meter, charges
        self.resumed = RunTotals()  # this process's share of the checkpoint resumed from
        self.resumed_job = RunTotals()  # the whole job's totals in that checkpoint
        self.job: RunTotals | None = None  # the job's totals at the last sum over ranks
        self.fit_start: Mark | None = None
        self.loaded = False  # a checkpoint's state was loaded
        self.samples = self.tokens = 0  # work of the closed windows of this fit
        self._wall_offset = time.time() - meter.clock()

    def begin(self, start: Mark) -> None:
        """A fit starts at ``start``: its energy is charged at every reading from then on."""
        self.fit_start = start
        self._wall_offset = time.time() - start.t
        self.follow(self.charges, start)

    def follow(self, charges: Charges, since: Mark) -> None:
        """Have ``charges`` charge the energy used from ``since`` at every reading (on the sampler
        thread, until the meter closes): no work on the training thread."""
        charges.restart(self.wall(since.t), max((2 * s.accuracy.lag_s for s in self.meter.sources), default=0.0))

        def charge(t: float, live_j: float) -> bool:
            charges.take(live_j, self.wall(t))
            return False  # a watch that never fires: it charges

        self.meter.watch(since, charge)

    def wall(self, t: float) -> float:
        """Unix time of a moment on the meter's clock."""
        return t + self._wall_offset

    def wall_now(self) -> float:
        """Unix time now, on the meter's clock."""
        return self.wall(self.meter.clock())

    def close_window(self, samples: int, tokens: int) -> None:
        self.samples += samples
        self.tokens += tokens

    def local(
        self,
        end: Mark,
        end_j: np.ndarray,
        open_work: tuple[int, int],
        stage_j: dict[str, float],
        end_bound: MarkBound | None = None,
        stage_err: dict[str, float] | None = None,
        start: tuple[np.ndarray, MarkBound] | None = None,
    ) -> RunTotals:
        """This process's totals at ``end`` since the first fit start (its checkpoint share included).

        Args:
            end: The boundary.
            end_j: The cumulative joules of every source at ``end``.
            open_work: (samples, tokens) of the window still open.
            stage_j: This fit's energy of each stage, in joules.
            end_bound: The bound of ``end_j``, read with it (None: read now).
            stage_err: The bounds of ``stage_j``.
            start: The fit start's joules and bound, read with ``end_j`` in one snapshot (None: read now).
        """
        if self.fit_start is None:
            return self.resumed
        if start is None:
            [start_j], [start_bound] = self.meter.read(self.fit_start)
        else:
            start_j, start_bound = start
        if end_bound is None:
            end_bound = self.meter.read(end)[1][0]
        by_kind = self.meter.by_kind(end_j - start_j)
        err_by_kind = self.meter.by_kind(between(start_bound, end_bound))
        live_j = sum(by_kind.values())
        co2e_kg, cost = self.charges.at(live_j, self.wall(end.t))
        co2e_err, cost_err = self.charges.bound(sum(err_by_kind.values()), live_j, self.wall(end.t))
        samples, tokens = open_work
        seconds = end.t - self.fit_start.t
        live = RunTotals(
            by_kind,
            dict(stage_j),
            self.samples + samples,
            self.tokens + tokens,
            seconds,
            co2e_kg,
            cost,
            err_by_kind,
            dict(stage_err or {}),
            co2e_err,
            cost_err,
        )
        return self.resumed + live

    def spent(self, t: float, live_j: float) -> tuple[float, float, float]:
        """(kWh, kg CO2e, cost) of this process's totals with ``live_j`` joules used since the fit
        started, up to ``t`` on the meter's clock (a reading's: what a budget watches)."""
        co2, cost = self.charges.at(live_j, self.wall(t))
        resumed = self.resumed
        return (resumed.total_j + live_j) / J_PER_KWH, resumed.co2e_kg + co2, resumed.cost + cost

    def sum(
        self,
        ranks: Ranks,
        local: RunTotals,
        figures: WindowFigures | None = None,
        epoch_j: float = 0.0,
        gpus: Sequence[str] = (),
        epoch_err: float = 0.0,
    ) -> JobSums:
        """The job's figures from this process's ``local`` totals (one sum over ranks; the
        identity alone), kept as the job's totals; ``gpus`` names all the job's GPUs."""
        sums = sum_over_ranks(ranks, local, figures, epoch_j, gpus, epoch_err)
        self.job = sums.totals
        return sums

    def fit_seconds(self, end: Mark | None = None) -> float:
        """Training wall time since the first fit start, checkpoint totals included."""
        live = 0.0 if self.fit_start is None else (end or self.meter.mark()).t - self.fit_start.t
        return self.resumed.fit_s + live

    def end(self) -> None:
        """The fit ended (its totals folded into `resumed` by `load`)."""
        self.job, self.fit_start = None, None
        self.samples = self.tokens = 0

    def load(self, totals: RunTotals, own_share: bool, co2_per_kwh: float) -> RunTotals:
        """Continue a checkpoint's totals (replacing earlier ones); returns this process's share.

        Args:
            totals: The job's totals.
            own_share: False on every rank but 0 of a job, so that a sum counts them once.
            co2_per_kwh: kg CO2e per kWh (PUE applied) for totals from before CO2e was
                charged slice by slice (their ``co2e_kg`` is NaN).
        """
        if math.isnan(totals.co2e_kg):
            share = totals.total_err / totals.total_j if totals.total_j > 0 else 0.0
            co2e_kg = totals.total_kwh * co2_per_kwh
            totals = dataclasses.replace(totals, co2e_kg=co2e_kg, co2e_err=co2e_kg * share)
        self.loaded = True
        self.resumed_job = totals
        self.resumed = totals if own_share else RunTotals(fit_s=totals.fit_s)
        return self.resumed
