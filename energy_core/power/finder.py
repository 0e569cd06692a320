"""Automatic power-cap finder: profile a few caps on real training steps, keep the best.

After ``warmup_steps``, each candidate cap (fractions of each board's limit at start,
normally its default; highest first) is held for a phase of at least ``profile_steps`` optimizer steps and
``min_phase_s`` seconds; energy per step comes from the meter (sampler readings between
the phase's marks) and time per step from the marks themselves. A candidate slower than
the uncapped phase by more than ``max_slowdown`` ends the search (lower caps are slower
still). The cap kept is the one with the least energy per step among those within the
slowdown allowed; it stays in force for the rest of training.

Compared with Zeus's ``GlobalPowerLimitOptimizer`` (10 warm-up and 40 profiled steps per
limit by default, every limit tried, and the maximum limit put back at exit): fewer
steps (5 + 10 per candidate, with early exit), the limit in force before is what is
restored (by `PowerLimits`), and the table lands in the loggers and the run record.

On the training thread `CapFinder.on_step` costs an integer comparison, except at the
few phase boundaries (a timestamp and one NVML call to change the limit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from energy_core import keys
from energy_core.meter import EnergyMeter, Mark
from energy_core.power.limits import CappedGpu, PowerLimits

DEFAULT_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


@dataclass
class Trial:
    """One candidate's phase."""

    fraction: float
    cap_w: float
    start: Mark
    start_step: int
    end: Mark | None = None
    end_step: int = 0
    joules_per_step: float | None = None
    seconds_per_step: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


class CapFinder:
    """Finds the power cap that minimises energy per step within a slowdown limit.

    Args:
        limits: The node's `PowerLimits`, holding the boards to cap (already journalled).
        meter: A running meter that measures those GPUs.
        max_slowdown: Largest accepted rise in time per step, e.g. 0.1 for 10%.
        warmup_steps: Steps before profiling starts.
        profile_steps: Minimum steps per candidate.
        min_phase_s: Minimum seconds per candidate (the energy counter updates every
            20-100 ms, so shorter phases are not resolved).
        fractions: Candidate caps as fractions of each board's limit at start (so the
            search never raises a limit an administrator had lowered).

    Metrics logged by the adapters: ``power/cap_w`` at each change; the record gets the
    table (cap, J/step, s/step per candidate) and the choice.
    """

    def __init__(
        self,
        limits: PowerLimits,
        meter: EnergyMeter,
        max_slowdown: float = 0.1,
        warmup_steps: int = 5,
        profile_steps: int = 10,
        min_phase_s: float = 2.0,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
    ) -> None:
        self.limits = limits
        self.meter = meter
        self.max_slowdown = max_slowdown
        self.warmup_steps = warmup_steps
        self.profile_steps = profile_steps
        self.min_phase_s = min_phase_s
        boards: list[CappedGpu] = list(limits.capped)
        low = max(b.limits.min_mw / b.previous_mw for b in boards) if boards else 1.0
        self.fractions = [f for f in fractions if f >= low - 1e-9]
        self.trials: list[Trial] = []
        self.chosen: Trial | None = None
        self.done = not boards
        self._first_step: int | None = None
        self._next_boundary: int | None = None
        self._waiting_for_samples = False

    def _set(self, fraction: float) -> float:
        """Cap every board at ``fraction`` of its limit at start; returns the total cap in W."""
        total_mw = 0
        for board in self.limits.capped:
            target = min(board.limits.max_mw, max(board.limits.min_mw, int(round(fraction * board.previous_mw))))
            total_mw += self.limits.set(board, target)
        return total_mw / 1000.0

    def on_step(self, step: int) -> dict[str, float] | None:
        """Call after every optimizer step; returns ``{"power/cap_w": W}`` when the cap changed."""
        if self.done:
            return None
        if self._first_step is None:
            self._first_step = step
            self._next_boundary = step + self.warmup_steps
        if step < self._next_boundary:
            return None
        if self._waiting_for_samples:
            return self._decide(step)
        now = self.meter.mark()
        if self.trials:
            trial = self.trials[-1]
            if step - trial.start_step < self.profile_steps or now.t - trial.start.t < self.min_phase_s:
                self._next_boundary = step + 1
                return None
            trial.end, trial.end_step = now, step
            trial.seconds_per_step = (now.t - trial.start.t) / (step - trial.start_step)
            baseline = self.trials[0].seconds_per_step
            too_slow = trial.seconds_per_step > baseline * (1 + self.max_slowdown)
            if too_slow or len(self.trials) == len(self.fractions):
                self._waiting_for_samples = True  # energies need a reading past the last mark
                self._next_boundary = step + 1
                return None
        fraction = self.fractions[len(self.trials)]
        cap_w = self._set(fraction)
        self.trials.append(Trial(fraction, cap_w, self.meter.mark(), step))
        self._next_boundary = step + self.profile_steps
        return {keys.CAP_W: cap_w}

    def _decide(self, step: int) -> dict[str, float] | None:
        last = self.trials[-1].end
        assert last is not None
        values = self.meter.joules(*[m for t in self.trials for m in (t.start, t.end)])
        if last.joules is None:  # no reading after the last phase yet: try at the next step
            self._next_boundary = step + 1
            return None
        for i, trial in enumerate(self.trials):
            trial.joules_per_step = float((values[2 * i + 1] - values[2 * i]).sum()) / (
                trial.end_step - trial.start_step
            )
        baseline = self.trials[0].seconds_per_step
        allowed = [t for t in self.trials if t.seconds_per_step <= baseline * (1 + self.max_slowdown)]
        self.chosen = min(allowed, key=lambda t: t.joules_per_step)
        self.done = True
        cap_w = self._set(self.chosen.fraction)
        return {keys.CAP_W: cap_w}

    def table(self) -> list[dict[str, float | None]]:
        """The profiled candidates, for the record and the messages."""
        return [
            {
                "fraction": t.fraction,
                "cap_w": t.cap_w,
                "j_per_step": t.joules_per_step,
                "s_per_step": t.seconds_per_step,
                "steps": t.end_step - t.start_step,
            }
            for t in self.trials
        ]

    def summary(self) -> str:
        if self.chosen is None:
            return "Power-cap search did not finish (training ended first); the last candidate's cap stayed in force."
        base = self.trials[0]
        saving = 1 - self.chosen.joules_per_step / base.joules_per_step if base.joules_per_step else 0.0
        slowdown = self.chosen.seconds_per_step / base.seconds_per_step - 1
        rows = ", ".join(
            f"{t.cap_w:g} W: {t.joules_per_step:.3g} J/step, {1000 * t.seconds_per_step:.3g} ms/step"
            for t in self.trials
        )
        return (
            f"Power-cap search chose {self.chosen.cap_w:g} W ({self.chosen.fraction:.0%} of the limit at start): "
            f"{saving:.1%} less energy per step for {slowdown:+.1%} time per step. Profiled: {rows}."
        )
