"""The logging window: work counted on the hot path, closed into typed figures at a boundary.

A window runs from one logging boundary to the next. `Window.add_batch` is the only call
on the per-step path (two integer additions, or one queued lazy device sum for a token
mask). At the boundary `Window.close` turns the window into `WindowFigures`: training
energy and time with the stages that ran inside it (validation) taken out, steps,
samples and tokens.

A window starts from the joules its predecessor ended at (``start_j``), and takes out a
stage at the joules the stage was counted at: the windows and stages of a run add up to
its total exactly, even where a boundary's joules were extrapolated past the newest reading.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from energy_core.accounting.figures import WindowFigures
from energy_core.accounting.stages import StageRun
from energy_core.accounting.work import count_batch
from energy_core.sampling.bounds import MarkBound, between
from energy_core.sampling.meter import EnergyMeter, Mark


class Window:
    """The window now open.

    Args:
        start: Where it began (None before a fit starts).
        step: The optimizer step at its start.
        start_j: The cumulative joules per source it starts from: those the previous window
            ended at (None: read at ``start`` when the window closes).
        start_bound: Their bound, as read with them (an extrapolated end's bound goes on
            with its joules into the next window, restated when it closes: `EnergyMeter.restate`).
    """

    def __init__(
        self,
        start: Mark | None = None,
        step: int = 0,
        start_j: np.ndarray | None = None,
        start_bound: MarkBound | None = None,
    ) -> None:
        self.start = start
        self.step = step
        self.start_j = start_j
        self.start_bound = start_bound
        self.samples = 0
        self.tokens = 0
        self._lazy_tokens: Any = None
        self._tokens_unknown = False  # a queued count could not be read: the window's tokens are not known
        self._excluded: list[StageRun] = []

    def add_batch(self, batch: Any) -> int:
        """Count one (micro-)batch; its samples. No device sync, no I/O."""
        samples, tokens = count_batch(batch)
        self.samples += samples
        if isinstance(tokens, int):
            self.tokens += tokens
        else:  # a lazy device sum: queue the addition, read it at the window's end
            self._lazy_tokens = tokens if self._lazy_tokens is None else self._lazy_tokens + tokens
        return samples

    def counted(self) -> tuple[int, int]:
        """(samples, tokens) counted so far, without waiting for a queued device sum."""
        return self.samples, self.tokens

    def work(self) -> tuple[int, int]:
        """(samples, tokens) counted so far; reads a queued device sum once (a device sync)."""
        if self._lazy_tokens is not None:
            lazy, self._lazy_tokens = self._lazy_tokens, None
            try:
                self.tokens += int(lazy)
            except Exception:  # noqa: BLE001 - a sum no device can give (a meta tensor): no token figure, not a wrong one
                self._tokens_unknown = True
        return self.samples, 0 if self._tokens_unknown else self.tokens

    def exclude(self, run: StageRun) -> None:
        """Take a stretch that ran inside this window but did not train (a stage run; a time
        shift's pause) out of it, at the joules it is settled at (a short stage may be settled
        only when the window closes)."""
        if self.start is not None and run.start.t >= self.start.t:
            self._excluded.append(run)

    def idle(self, step: int) -> bool:
        """Nothing trained since the window opened: it stays open."""
        return step <= self.step and self.samples == 0 and self._lazy_tokens is None

    def close(
        self, meter: EnergyMeter, end: Mark, end_j: np.ndarray, step: int, end_bound: MarkBound | None = None
    ) -> tuple[WindowFigures, np.ndarray]:
        """This process's figures of the window, from its start to ``end`` (whose cumulative
        joules per source are ``end_j``, read with ``end_bound``; None: read now) at optimizer step ``step``; and
        the joules per source the next window starts from (``end_j``, unless a source's energy
        came out below zero: see `measure`)."""
        per_source, seconds, carried_j, per_source_err = self.measure(meter, end, end_j, end_bound)
        samples, tokens = self.work()
        gpu_j = {s.info.name: float(v) for s, v in zip(meter.sources, per_source) if s.info.kind == "gpu"}
        joules_err = float(per_source_err.sum())
        figures = WindowFigures(step - self.step, seconds, float(per_source.sum()), gpu_j, samples, tokens, joules_err)
        return figures, carried_j

    def measure(
        self, meter: EnergyMeter, end: Mark, end_j: np.ndarray, end_bound: MarkBound | None = None
    ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
        """This window's training joules per source, its training seconds, the joules it accounts
        for, and the bound of each source's training joules.

        A source's training energy below zero cannot be true (a stage inside the window was counted
        at an extrapolated end that came out high): it is 0 here, and the next window starts from
        what this one accounted for, above ``end_j``, so that it pays the excess back. The bound is
        the window's, from its start to its end, plus each stage's taken out of it.
        """
        assert self.start is not None
        start_j, start_bound = self.start_j, self.start_bound
        if start_j is None or start_bound is None:
            [read_j], [start_bound] = meter.read(self.start)
            start_j = read_j if start_j is None else start_j
        else:  # carried from the previous window's end: bounded now by the readings that came since
            start_bound = meter.restate(self.start, start_j, start_bound)
        stages_j = np.zeros_like(start_j)
        errors = between(start_bound, end_bound if end_bound is not None else meter.read(end)[1][0])
        seconds = end.t - self.start.t
        for run in self._excluded:
            if run.per_source is None:  # not settled yet (cannot be, once the window can be closed)
                (run_start, run_end), (start_b, end_b) = meter.read(run.start, run.end)
                run.per_source = run_end - run_start
                run.per_source_err = between(start_b, end_b)
            stages_j = stages_j + run.per_source
            if run.per_source_err is not None:
                errors = errors + run.per_source_err
            seconds -= run.end.t - run.start.t
        joules = np.maximum(end_j - start_j - stages_j, 0.0)
        return joules, seconds, start_j + stages_j + joules, errors
