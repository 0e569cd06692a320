"""What is known of one rung of the power-cap search: its sub-windows, pooled into time and energy per step.

Each sub-window of a phase gives (steps, seconds, joules); a rung's time and energy per
step come with a spread (the standard error of the mean over its sub-windows). Which rung
to measure next and which to keep is `CapSearch`'s decision (energy_core/power/finder/search.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

OUTLIER = 0.10  # a sub-window this much slower per step than its phase's fastest is left out
DISAGREE = 0.03  # two phases of a rung whose times differ by more (and by z spreads) disagree


@dataclass(frozen=True)
class Span:
    """One sub-window of a phase: a span of whole optimizer steps, their seconds and joules."""

    steps: int
    seconds: float
    joules: float


def _mean_and_spread(windows: Sequence[Span], value: str) -> tuple[float, float]:
    """Per-step mean over all windows, and the standard error of the per-window rates."""
    steps = sum(w.steps for w in windows)
    mean = sum(getattr(w, value) for w in windows) / steps
    if len(windows) < 2:
        return mean, 0.0
    rates = [getattr(w, value) / w.steps for w in windows]
    average = sum(rates) / len(rates)
    variance = sum((r - average) ** 2 for r in rates) / (len(rates) - 1)
    return mean, math.sqrt(variance / len(rates))


@dataclass
class Estimate:
    """What is known of one rung: the sub-windows of its kept phases, and what was left out.

    A sub-window more than `OUTLIER` slower per step than its phase's fastest is left out
    (``dropped``); of two phases that disagree by more than ``z`` spreads and `DISAGREE`,
    the slower is set aside (a noisy neighbour only ever slows a phase down).
    """

    rung: int
    kept: list[list[Span]] = field(default_factory=list)
    set_aside: list[list[Span]] = field(default_factory=list)
    dropped: list[Span] = field(default_factory=list)

    @property
    def windows(self) -> list[Span]:
        return [w for phase in self.kept for w in phase]

    @property
    def phases(self) -> int:
        return len(self.kept) + len(self.set_aside)

    @property
    def time(self) -> tuple[float, float]:
        """Seconds per step and its spread."""
        return _mean_and_spread(self.windows, "seconds")

    @property
    def energy(self) -> tuple[float, float]:
        """Joules per step and its spread."""
        return _mean_and_spread(self.windows, "joules")

    def add(self, phase: list[Span], z: float) -> None:
        """Pool a new phase, or set the slower of two disagreeing phases aside."""
        fastest = min(w.seconds / w.steps for w in phase)
        slow = [w.seconds / w.steps > (1 + OUTLIER) * fastest for w in phase]
        self.dropped += [w for w, out in zip(phase, slow) if out]
        phase = [w for w, out in zip(phase, slow) if not out]
        if not self.kept:
            self.kept.append(phase)
            return
        old_t, old_s = self.time
        new_t, new_s = _mean_and_spread(phase, "seconds")
        if abs(new_t - old_t) <= max(z * math.hypot(old_s, new_s), DISAGREE * old_t):
            self.kept.append(phase)
        elif new_t < old_t:
            self.set_aside += self.kept
            self.kept = [phase]
        else:
            self.set_aside.append(phase)
