"""The logging window: work counted on the hot path, closed into typed figures at a boundary.

A window runs from one logging boundary to the next. `Window.add_batch` is the only call
on the per-step path (two integer additions, or one queued lazy device sum for a token
mask). At the boundary `Window.close` turns the window into `WindowFigures`: training
energy and time with the stages that ran inside it (validation) taken out, steps,
samples and tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from energy_core.accounting.figures import WindowFigures
from energy_core.accounting.work import count_batch
from energy_core.sampling.meter import EnergyMeter, Mark


class Window:
    """The window now open.

    Args:
        start: Where it began (None before a fit starts).
        step: The optimizer step at its start.
    """

    def __init__(self, start: Mark | None = None, step: int = 0) -> None:
        self.start = start
        self.step = step
        self.samples = 0
        self.tokens = 0
        self._lazy_tokens: Any = None
        self._excluded: list[tuple[Mark, Mark]] = []

    def add_batch(self, batch: Any) -> None:
        """Count one (micro-)batch. No device sync, no I/O."""
        samples, tokens = count_batch(batch)
        self.samples += samples
        if isinstance(tokens, int):
            self.tokens += tokens
        else:  # a lazy device sum: queue the addition, read it at the window's end
            self._lazy_tokens = tokens if self._lazy_tokens is None else self._lazy_tokens + tokens

    def counted(self) -> tuple[int, int]:
        """(samples, tokens) counted so far, without waiting for a queued device sum."""
        return self.samples, self.tokens

    def work(self) -> tuple[int, int]:
        """(samples, tokens) counted so far; reads a queued device sum once (a device sync)."""
        if self._lazy_tokens is not None:
            self.tokens += int(self._lazy_tokens)
            self._lazy_tokens = None
        return self.samples, self.tokens

    def exclude(self, start: Mark, end: Mark) -> None:
        """Take a stage that ran inside this window (from ``start`` to ``end``) out of it; its
        energy is resolved when the window closes (a short stage may end before a reading)."""
        if self.start is not None and start.t >= self.start.t:
            self._excluded.append((start, end))

    def idle(self, step: int) -> bool:
        """Nothing trained since the window opened: it stays open."""
        return step <= self.step and self.samples == 0 and self._lazy_tokens is None

    def close(self, meter: EnergyMeter, end: Mark, end_j: np.ndarray, step: int) -> WindowFigures:
        """This process's figures of the window, from its start to ``end`` (whose cumulative
        joules per source are ``end_j``) at optimizer step ``step``."""
        per_source, seconds = self.measure(meter, end, end_j)
        samples, tokens = self.work()
        gpu_j = {s.info.name: float(v) for s, v in zip(meter.sources, per_source) if s.info.kind == "gpu"}
        return WindowFigures(step - self.step, seconds, float(per_source.sum()), gpu_j, samples, tokens)

    def measure(self, meter: EnergyMeter, end: Mark, end_j: np.ndarray) -> tuple[np.ndarray, float]:
        """This window's training joules per source and training seconds, up to ``end``."""
        assert self.start is not None
        start_j, *stage_j = meter.joules(self.start, *(m for pair in self._excluded for m in pair))
        joules = end_j - start_j
        seconds = end.t - self.start.t
        for i, (stage_start, stage_end) in enumerate(self._excluded):
            joules = joules - (stage_j[2 * i + 1] - stage_j[2 * i])
            seconds -= stage_end.t - stage_start.t
        return joules, seconds
