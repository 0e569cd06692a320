"""What is known of one rung of the power-cap search: its phases, pooled into time and energy per step.

A *phase* holds one cap for a number of whole optimizer steps: the time of each step
(a timestamp per step) and the joules of a few sub-windows of steps (the energy counter
cannot resolve a single step). A rung's time per step is the seconds of its kept
sub-windows over their steps, its energy per step their joules over their steps; both
come with a spread, the standard error of the estimate.

A busy machine disturbs the timestamps in two ways. The training thread wakes late: one
step looks long and, the GPU having gone on with the work queued, the next one short.
That jitter cancels in a sum of consecutive steps (only a span's two ends keep it), so
the time is the seconds of whole spans of steps over their steps, never a statistic of
single steps, and its spread counts the jitter at the ends of spans only (`Noise`): on
a busy machine single steps scatter several times as much as the GPU's own work does.
The noise is pooled over every phase of the search: it is a property of the job and
the machine, and one phase's steps say little about it. Or the GPU really waits (a
stall, a validation run between two steps, a busy spell): a sub-window slower than its
phase's median by more than `OUTLIER_SPREADS` robust spreads (and `OUTLIER_FLOOR` of the
median) is left out of time and energy, and of two phases of a rung whose times
disagree beyond the noise the slower is set aside.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

TRIM = 0.2  # share of the values left out at each end of a trimmed mean
OUTLIER_SPREADS = 4.0  # a sub-window this many robust spreads slower than its phase's median is left out
OUTLIER_FLOOR = 0.05  # ... and at least this share of the median slower
DISAGREE = 0.03  # two phases of a rung whose times differ by more (and by z spreads) disagree
MAD_TO_SD = 1.4826  # the median absolute deviation of a normal variable, in standard deviations


@dataclass
class Phase:
    """One measured phase: the cap held, each step's seconds, and each sub-window's joules.

    Args:
        rung: The rung measured.
        times: Seconds of each measured step, in order.
        window_steps: Steps per sub-window (the last holds the rest).
        joules: Joules of each sub-window; None until the meter has fixed the marks.
    """

    rung: int
    times: list[float]
    window_steps: int
    joules: list[float] | None = None

    @property
    def windows(self) -> list[range]:
        """The steps of each sub-window (indices into `times`)."""
        count = max(1, len(self.times) // self.window_steps)
        starts = [i * self.window_steps for i in range(count)] + [len(self.times)]
        return [range(a, b) for a, b in zip(starts, starts[1:])]

    @cached_property
    def rates(self) -> list[float]:
        """Seconds per step of each sub-window."""
        return [sum(self.times[i] for i in window) / len(window) for window in self.windows]

    @cached_property
    def slow(self) -> frozenset[int]:
        """Sub-windows left out: slower than the median by more than the noise allows, and
        not made up by the next one. A late timestamp at a sub-window's end makes it slow
        and the next one fast by as much: that is no wait of the GPU's, and leaving the slow
        one out alone would make the cap look faster than it is."""
        median = statistics.median(self.rates)
        excess = max(OUTLIER_SPREADS * robust_sd(self.rates), OUTLIER_FLOOR * median)
        over = [sum(self.times[i] for i in w) - median * len(w) for w in self.windows]
        return frozenset(
            n
            for n, window in enumerate(self.windows)
            if over[n] > excess * len(window) and sum(over[n : n + 2]) > excess * len(window)
        )

    @cached_property
    def spans(self) -> list[range]:
        """The runs of consecutive kept sub-windows (those not `slow`), as ranges of steps."""
        spans: list[range] = []
        for n, window in enumerate(self.windows):
            if n in self.slow:
                continue
            if spans and spans[-1].stop == window.start:
                spans[-1] = range(spans[-1].start, window.stop)
            else:
                spans.append(window)
        return spans

    @cached_property
    def kept(self) -> tuple[float, int]:
        """Seconds and steps of the kept sub-windows."""
        return sum(self.times[i] for s in self.spans for i in s), sum(len(s) for s in self.spans)

    @cached_property
    def scatter(self) -> Scatter:
        """The kept steps' relative deviations from the phase's time per step: their squares
        and the products of neighbours (within a span), summed, with their counts."""
        seconds, steps = self.kept
        mean = seconds / steps if steps else 1.0
        dev = [[self.times[i] / mean - 1 for i in s] for s in self.spans]
        return Scatter(
            sum(e * e for d in dev for e in d),
            max(steps - 1, 0),
            sum(a * b for d in dev for a, b in zip(d, d[1:])),
            sum(max(len(d) - 1, 0) for d in dev),
        )


@dataclass(frozen=True)
class Scatter:
    """Sums of squared relative deviations of steps (``squares``, ``dof`` degrees of freedom)
    and of products of neighbouring ones (``products`` over ``pairs``)."""

    squares: float
    dof: int
    products: float
    pairs: int


@dataclass(frozen=True)
class Noise:
    """The noise of step times, relative to the time per step, as variances.

    A step's time is the GPU's own time (``step``: its variation, and busy spells that slow
    neighbouring steps alike) plus the lateness of the training thread's timestamp at its
    end less that at its start (``wake``: a late wake-up makes one step long and the next
    short). In a span of n consecutive steps the wake-ups cancel but at its two ends, so
    the variance of the span's time per step is (n x step + 2 x wake) / n^2. Estimated
    from single steps: their variance is step + 2 wake and neighbours' covariance -wake
    (positive when spells slow neighbours alike: then counted in ``step``); ``step`` is
    taken one standard error above that estimate.
    """

    step: float
    wake: float

    @classmethod
    def of(cls, phases: Sequence[Phase]) -> Noise:
        """The noise that the kept steps of these phases show, pooled."""
        scatters = [p.scatter for p in phases]
        dof = sum(s.dof for s in scatters)
        if dof == 0:
            return cls(0.0, 0.0)
        variance = sum(s.squares for s in scatters) / dof
        pairs = sum(s.pairs for s in scatters)
        covariance = sum(s.products for s in scatters) / pairs if pairs else 0.0
        # The GPU's own share, variance + 2 covariance, is the difference of two figures that
        # late readings inflate alike; where they dominate it is uncertain, and taken at zero
        # it made a phase's spread too small (a cap 0.6 points beyond the limit was kept):
        # it is taken one standard error higher.
        uncertainty = variance * math.sqrt(2 / dof + (4 / pairs if pairs else 0.0))
        return cls(max(variance + 2 * covariance, 0.0) + uncertainty, max(-covariance, 0.0))

    @property
    def single(self) -> float:
        """Relative standard deviation of one step's time."""
        return math.sqrt(self.step + 2 * self.wake)

    def spread(self, steps: int, ends: int) -> float:
        """Relative standard error of the time per step over ``steps`` kept steps in spans
        with ``ends`` ends in all."""
        return math.sqrt(steps * self.step + ends * self.wake) / steps


def robust_sd(values: Sequence[float]) -> float:
    """The standard deviation a normal variable with these values' median absolute deviation has."""
    median = statistics.median(values)
    return MAD_TO_SD * statistics.median(abs(v - median) for v in values)


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """The mean and its standard error (0 for fewer than two values)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, statistics.stdev(values) / math.sqrt(len(values))


def trimmed_mean_and_spread(values: Sequence[float], trim: float = TRIM) -> tuple[float, float]:
    """The mean of the values left when `TRIM` of them is cut at each end, and its standard
    error (Tukey and McLaughlin: the winsorized standard deviation over (1 - 2 x trim) x sqrt(n))."""
    ordered = sorted(values)
    n = len(ordered)
    cut = int(trim * n)
    if n < 3 or cut == 0:
        return mean_and_spread(ordered)
    kept = ordered[cut : n - cut]
    winsorized = [ordered[cut]] * cut + kept + [ordered[n - cut - 1]] * cut
    spread = statistics.stdev(winsorized) / ((1 - 2 * cut / n) * math.sqrt(n))
    return sum(kept) / len(kept), spread


@dataclass
class Estimate:
    """What is known of one rung: its kept phases, the phases set aside, the steps left out.

    Args:
        rung: The rung.
        z: Width of an interval in spreads (two phases further apart disagree).
        resolution_s: Seconds of power by which a reading of the energy counter may be stale
            (the meter's sample interval).
        noise: The noise of step times, pooled over the search's phases; None: from this
            rung's own phases.
    """

    rung: int
    z: float = 2.0
    resolution_s: float = 0.0
    noise: Noise | None = None
    kept: list[Phase] = field(default_factory=list)
    set_aside: list[Phase] = field(default_factory=list)

    @property
    def phases(self) -> int:
        return len(self.kept) + len(self.set_aside)

    @property
    def left_out(self) -> int:
        """Sub-windows of the kept phases left out as too slow."""
        return sum(len(p.slow) for p in self.kept)

    @property
    def steps(self) -> int:
        """Steps measured in the kept phases (those left out included)."""
        return sum(len(p.times) for p in self.kept)

    @property
    def complete(self) -> bool:
        """Whether every phase's energy is known."""
        return all(p.joules is not None for p in self.kept + self.set_aside)

    def _time_of(self, phases: Sequence[Phase]) -> tuple[float, float]:
        seconds = sum(p.kept[0] for p in phases)
        steps = sum(p.kept[1] for p in phases)
        ends = 2 * sum(len(p.spans) for p in phases)
        mean = seconds / steps
        noise = self.noise if self.noise is not None else Noise.of(phases)
        return mean, mean * noise.spread(steps, ends)

    @property
    def own_noise(self) -> Noise:
        """The noise of this rung's kept phases alone."""
        return Noise.of(self.kept)

    @property
    def time(self) -> tuple[float, float]:
        """Seconds per step and its spread."""
        return self._time_of(self.kept)

    @property
    def energy(self) -> tuple[float, float] | None:
        """Joules per step and its spread; None until a sub-window's energy is known.

        The joules of consecutive sub-windows add up to the span's (the counter's readings
        in between cancel), so the spread has two parts: the step-to-step variation (that
        of the time per step, which the energy follows) and the counter's resolution at
        each end of a span of kept sub-windows (a reading up to ``resolution_s`` old, uniformly:
        a spread of ``resolution_s / sqrt(12)`` of power at each end); with several phases,
        their scatter if larger.
        """
        joules = steps = seconds = 0.0
        ends = 0
        means = []
        for phase in self.kept:
            if phase.joules is None:
                continue
            inside = False
            phase_j = phase_n = 0.0
            for n, window in enumerate(phase.windows):
                keep = n not in phase.slow
                if keep:
                    phase_j += phase.joules[n]
                    phase_n += len(window)
                    seconds += sum(phase.times[i] for i in window)
                    ends += 0 if inside else 2
                inside = keep
            if phase_n:
                joules, steps = joules + phase_j, steps + phase_n
                means.append(phase_j / phase_n)
        if not steps or seconds <= 0:
            return None
        mean = joules / steps
        t, t_spread = self.time
        counter = self.resolution_s * math.sqrt(ends / 12) / seconds  # staleness uniform in [0, resolution]
        spread = mean * math.hypot(t_spread / t, counter)
        if len(means) >= 2:
            spread = max(spread, mean_and_spread(means)[1])
        return mean, spread

    def add(self, phase: Phase) -> None:
        """Pool a new phase, or set the slower of two disagreeing phases aside."""
        if not self.kept:
            self.kept.append(phase)
            return
        old_t, old_s = self.time
        new_t, new_s = self._time_of([phase])
        if abs(new_t - old_t) <= max(self.z * math.hypot(old_s, new_s), DISAGREE * old_t):
            self.kept.append(phase)
        elif new_t < old_t:
            self.set_aside += self.kept
            self.kept = [phase]
        else:
            self.set_aside.append(phase)
