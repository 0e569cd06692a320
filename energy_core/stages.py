"""Validation, test and predict runs: their energy, kept apart from training's.

A stage may start under a provisional name: the HF Trainer says whether an inference run
was an evaluation or a prediction only when it ends.
"""

from __future__ import annotations

from energy_core.meter import Mark
from energy_core.ranks import Ranks
from energy_core.totals import J_PER_KWH, STAGES


class Stages:
    """The stages of one process.

    Attributes:
        live_j: Joules of each stage since the last fit ended (this process).
        resumed_j: This process's share of a checkpoint's stage energy.
    """

    def __init__(self) -> None:
        self._started: dict[str, Mark] = {}
        self.live_j = dict.fromkeys(STAGES, 0.0)
        self.resumed_j: dict[str, float] = {}
        self._job_j: dict[str, float] | None = None  # the job's, at the last stage end

    def start(self, name: str, mark: Mark) -> None:
        self._started[name] = mark

    def running(self, name: str) -> bool:
        return name in self._started

    def finish(self, stage: str, started_as: str | None = None) -> Mark | None:
        """The start of the run ending now, charged to ``stage`` (None if it never started)."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        return self._started.pop(started_as or stage, None)

    def add(self, stage: str, joules: float, ranks: Ranks) -> None:
        """Charge a run's energy; every rank ends the stage together, so the job's sums follow."""
        self.live_j[stage] += joules
        self._job_j = ranks.sum_by_name(self.local_j())[0] if ranks.distributed else None

    def local_j(self) -> dict[str, float]:
        """This process's joules of each stage, checkpoint share included."""
        return {s: self.live_j[s] + self.resumed_j.get(s, 0.0) for s in STAGES}

    def kwh(self, stage: str) -> float:
        """Energy of all runs of a stage so far (the job's, in a multi-process job), kWh."""
        return (self._job_j or self.local_j())[stage] / J_PER_KWH

    def fold(self, resumed_j: dict[str, float]) -> None:
        """A fit ended and its totals were folded into ``resumed_j``: live counts restart."""
        self.resumed_j = dict(resumed_j)
        self.live_j = dict.fromkeys(STAGES, 0.0)
