"""Validation, test and predict runs: their energy, kept apart from training's.

A stage may start under a provisional name: the HF Trainer says whether an inference run
was an evaluation or a prediction only when it ends. A run that ends before the sampler
could give it a figure (a sanity check shorter than a sampling interval) is held (`Stages.end`)
until its marks are resolved, and is settled then (`Stages.settle`), never as a false zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from energy_core.accounting.figures import STAGES
from energy_core.accounting.ranks import Ranks
from energy_core.sampling.bounds import between
from energy_core.sampling.meter import EnergyMeter, Mark
from energy_core.units import J_PER_KWH


@dataclass(eq=False)
class StageRun:
    """One run of a stage, from its start to its end mark; once settled, the joules per source
    it was counted at (a window it ran inside takes out exactly these)."""

    stage: str
    start: Mark
    end: Mark
    step: int
    per_source: np.ndarray | None = field(default=None, repr=False)
    per_source_err: np.ndarray | None = field(default=None, repr=False)  # the bound of each, once settled


class Stages:
    """The stages of one process.

    Attributes:
        live_j: Joules of each stage in the fit under way, or since the last one ended (this
            process, runs settled; a run of its own outside a fit is dropped once it has its summary).
        live_err: Their bounds (runs add linearly).
        resumed_j: This process's share of a checkpoint's stage energy (``resumed_err``: its bounds).
    """

    def __init__(self) -> None:
        self._started: dict[str, Mark] = {}
        self._held: list[StageRun] = []
        self.live_j = dict.fromkeys(STAGES, 0.0)
        self.live_err = dict.fromkeys(STAGES, 0.0)
        self.resumed_j: dict[str, float] = {}
        self.resumed_err: dict[str, float] = {}
        self._job_j: dict[str, float] | None = None  # the job's, at the last sum over ranks
        self._job_err: dict[str, float] | None = None

    def start(self, name: str, mark: Mark) -> None:
        self._started[name] = mark

    def running(self, name: str) -> bool:
        return name in self._started

    def end(self, stage: str, step: int, end: Mark, started_as: str | None = None) -> StageRun | None:
        """The run ending at ``end``, counted as ``stage`` (None if it never started).

        It is held until the meter can give its marks a figure: `settle` adds it up then.
        """
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        start = self._started.pop(started_as or stage, None)
        if start is None:
            return None
        run = StageRun(stage, start, end, step)
        self._held.append(run)
        return run

    def settle(self, meter: EnergyMeter) -> list[tuple[StageRun, float]]:
        """Add up the held runs the meter can now give figures; returns them with their joules."""
        ready = [r for r in self._held if meter.resolvable(r.start) and meter.resolvable(r.end)]
        self._held = [r for r in self._held if r not in ready]
        settled = []
        for run in ready:
            (start_j, end_j), (start_bound, end_bound) = meter.read(run.start, run.end)
            run.per_source = end_j - start_j
            run.per_source_err = between(start_bound, end_bound)
            joules = float(run.per_source.sum())
            self.live_j[run.stage] += joules
            self.live_err[run.stage] += float(run.per_source_err.sum())
            settled.append((run, joules))
        return settled

    def abandon(self) -> None:
        """Forget the runs still open: the fit they ran in has ended (an exception, or a close from
        another thread, cut them short), and their time is in its training. Ending one later gives nothing."""
        self._started.clear()

    def drop(self, run: StageRun) -> None:
        """Take a settled run out of the counts: a run of its own (outside a fit) has its own summary,
        and is no part of the next fit's stages (whose totals never held it)."""
        assert run.per_source is not None and run.per_source_err is not None  # settled
        self.live_j[run.stage] = max(0.0, self.live_j[run.stage] - float(run.per_source.sum()))
        self.live_err[run.stage] = max(0.0, self.live_err[run.stage] - float(run.per_source_err.sum()))

    def local_j(self) -> dict[str, float]:
        """This process's joules of each stage, checkpoint share included."""
        return {s: self.live_j[s] + self.resumed_j.get(s, 0.0) for s in STAGES}

    def local_err(self) -> dict[str, float]:
        """The bounds of `local_j`."""
        return {s: self.live_err[s] + self.resumed_err.get(s, 0.0) for s in STAGES}

    def sum_over(self, ranks: Ranks) -> None:
        """Sum the stages' energy over the job (a collective: every rank ends a stage together)."""
        local = {**self.local_j(), **{f"{s}_err": v for s, v in self.local_err().items()}}
        job = ranks.sum_by_name(local)[0]
        if ranks.distributed:
            self.set_job({s: job[s] for s in STAGES}, {s: job[f"{s}_err"] for s in STAGES})
        else:
            self.set_job(None)

    def set_job(self, job_j: Mapping[str, float] | None, job_err: Mapping[str, float] | None = None) -> None:
        """The job's stage energy (and bounds) from a sum over ranks (None in one process)."""
        self._job_j = dict(job_j) if job_j is not None else None
        self._job_err = dict(job_err) if job_j is not None and job_err is not None else None

    def kwh(self, stage: str) -> float:
        """Energy of all runs of a stage so far (the job's, in a multi-process job), kWh."""
        return (self._job_j or self.local_j())[stage] / J_PER_KWH

    def kwh_err(self, stage: str) -> float:
        """The bound of `kwh`, in kWh."""
        return (self._job_err or self.local_err())[stage] / J_PER_KWH

    def fold(self, resumed_j: Mapping[str, float], resumed_err: Mapping[str, float] | None = None) -> None:
        """A fit ended and its totals were folded into ``resumed_j`` (bounds ``resumed_err``): live counts restart."""
        self.resumed_j = dict(resumed_j)
        self.resumed_err = dict(resumed_err or {})
        self.live_j = dict.fromkeys(STAGES, 0.0)
        self.live_err = dict.fromkeys(STAGES, 0.0)
