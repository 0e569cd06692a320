"""The bound of every energy figure: how far a span's joules can be from the true energy.

A figure is the difference of two marks' cumulative joules (a window, a stage, an epoch, a
fit). Its error comes from three places, each kept apart because they add differently:

* **at each mark, both ways** (`MarkBound.spread`): where the mark falls between two
  readings, the energy is interpolated; past the newest reading, extrapolated at the last
  second's power. The interpolation is off by at most the spread of the power around the
  mark times a quarter of the interval (half for an instantaneous power, which says nothing
  of what came between), and never by more than the interval's own energy; an extrapolated
  slice by its own size, or by the jump to any power level seen in the last `HISTORY_S`,
  whichever is larger (the power may stop, or change phase, right after a reading). The
  counter's quantum and the part of the total that a later reading may take back (an open
  bridge over a gap) add to it. The two marks' errors are independent: their spreads add.
* **at each mark, one way** (`MarkBound.lag`, `MarkBound.lag_low`): a counter updated every
  ``lag_s`` shows the energy of up to ``lag_s`` ago, never more than the truth, at the highest
  power around (faster readings show when its value last changed, but the power levels are
  taken over spans of several update periods, which blur a shorter burst: a shorter lag at
  those levels does not hold, so the whole period counts); the integral
  of a power averaged over ``2 * lag_s`` trails by between the lowest and the highest power
  around times ``lag_s``. The same lag is in both marks of a span and cancels but for the
  difference: a counter's span is off by at most the larger of its two marks' lags, not
  their sum, and an averaged power's by the change of its lag between them.
* **along the span** (`MarkBound.accumulated`): what adds up reading by reading (a polled
  power's trapezoids, a gap bridged at an estimate, a model's share: `Ledger.bound_j`).
  Only the part between the two marks counts.

A span's bound is therefore ``spread_a + spread_b + lag difference + (acc_b - acc_a)`` per
source (`between`); sources, device kinds and ranks add linearly (worst cases, not
independent draws). The errors of the marks inside a span cancel: a fit's bound is made of
its two ends alone, however many windows it held. A window that starts where the last one
ended takes that end's figure with it, and its bound as the readings allow when the window ends
(`restated`): the bound covers an extrapolated start too.

What it assumes: the device's power within a few readings of a mark stays within the range
the readings around it show (an instantaneous power: within the spread of its recent
readings; an averaged one: between its lowest and highest averages), and past the newest
counter update (a counter's last update period and the slice past the newest reading) it goes
no lower than 0 and no higher than twice the recent mean or a level seen in the last
`HISTORY_S`. The property tests (`tests/energy_core/sampling/test_bounds.py`) hold it exactly
on random step traces of that kind; the benchmark (`benchmarks/accuracy.py`) measures how
often it holds on others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from energy_core.devices import EnergySource

RATE_WINDOW_S = 1.0  # power used to extrapolate past the newest row is averaged over this
ROUNDING = 1e-12  # relative: the float arithmetic of cumulative joules
AVERAGE_MARGIN = 3.0  # an average's lag after a fresh step, in spreads beyond the highest level (see _lags)
HISTORY_S = 3.0  # past the newest reading, the power may go to any level seen this long before it
LEVEL_READINGS = 3  # the spread before an extrapolated mark is taken over this many readings at least
LEVEL_SPANS = 4  # a power level is taken over at least this many counter updates: within +-25% of the truth


@dataclass(frozen=True)
class MarkBound:
    """How far a mark's cumulative joules, per source, can be from the truth.

    Args:
        spread: Either way, independent of any other mark's (joules per source).
        lag: One way: the joules the readings may trail the truth by (per source).
        accumulated: The sources' cumulative accumulated error at the mark (`Ledger.bound_j`).
    """

    spread: np.ndarray
    lag: np.ndarray
    accumulated: np.ndarray
    lag_low: np.ndarray | None = None  # the least the readings trail by (None: 0)

    @classmethod
    def zero(cls, width: int) -> MarkBound:
        """An exact mark (no reading yet, or no source)."""
        return cls(np.zeros(width), np.zeros(width), np.zeros(width))


def between(start: MarkBound, end: MarkBound) -> np.ndarray:
    """Per source, the half-width of an interval holding the true energy from ``start`` to ``end``.

    The span's lag error is the end's lag less the start's: each lies in ``[lag_low, lag]``, so
    it lies in ``[end.lag_low - start.lag, end.lag - start.lag_low]``.
    """
    start_low = start.lag_low if start.lag_low is not None else 0.0
    end_low = end.lag_low if end.lag_low is not None else 0.0
    lag = np.maximum(np.abs(end_low - start.lag), np.abs(end.lag - start_low))
    return start.spread + end.spread + lag + np.maximum(end.accumulated - start.accumulated, 0.0)


def restated(joules: np.ndarray, bound: MarkBound, now_j: np.ndarray, now: MarkBound) -> MarkBound:
    """The bound of a mark's figure ``joules``, read earlier with ``bound`` (extrapolated past the
    newest reading, as at every logging boundary), as the readings now allow: read again at the
    same moment, the mark is worth ``now_j`` within ``now``, and ``joules`` is off ``now_j`` by a
    known amount. That is a second bound of the same figure; per source, the narrower is kept.

    A window starts where the previous one ended, at a figure read at once; by the time the window
    ends, the readings after that moment are in, and its start is bounded by them, not by what
    the power might have done past a reading that has since come.
    """
    again = now.spread + np.abs(joules - now_j)
    narrower = again + now.lag < bound.spread + bound.lag
    zero = np.zeros_like(bound.lag)
    return MarkBound(
        np.where(narrower, again, bound.spread),
        np.where(narrower, now.lag, bound.lag),
        np.where(narrower, now.accumulated, bound.accumulated),
        np.where(
            narrower,
            now.lag_low if now.lag_low is not None else zero,
            bound.lag_low if bound.lag_low is not None else zero,
        ),
    )


class Accuracies:
    """The `Accuracy` of every source of a sampler, as arrays (one entry per source)."""

    def __init__(self, sources: Sequence[EnergySource]) -> None:
        self.lag_s = np.array([s.accuracy.lag_s for s in sources], dtype=float)
        self.quantum_j = np.array([s.accuracy.quantum_j for s in sources], dtype=float)
        self.relative = np.array([s.accuracy.relative for s in sources], dtype=float)
        self.share = np.where([s.accuracy.sampled for s in sources], 0.5, 0.25)  # of spread x interval
        self.averaged = np.array([s.accuracy.averaged for s in sources], dtype=bool)
        counters = [s.accuracy.lag_s for s in sources if not (s.accuracy.averaged or s.accuracy.sampled)]
        self.longest_lag_s = max(counters, default=0.0)  # a counter's: its readings step every lag_s
        self.reach_s = 2 * float(self.lag_s.max(initial=0.0))  # a reading may reflect the power this long before it
        self.max_w = np.array([s.max_power_w for s in sources], dtype=float)  # the power when nothing says


def _levels(
    times: np.ndarray, energy: np.ndarray, lo: int, hi: int, spacing: float, unknown: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(highest, lowest) power per source over rows ``lo..hi``, each taken over at least ``spacing`` s
    (a counter updated every 0.1 s read every 0.05 s shows 0 and twice the power in turn). Rows
    spanning less than ``spacing`` say nothing of the power: (``unknown``, 0)."""
    if times[hi] - times[lo] < spacing:
        return unknown.copy(), np.zeros_like(unknown)
    chosen = [lo]
    for j in range(lo + 1, hi + 1):
        if times[j] - times[chosen[-1]] >= spacing:
            chosen.append(j)
    # The newest rows close the last span rather than open a short one: a reading a moment after the last
    # chosen one may hold a whole counter update, which over that moment reads as a power no board draws.
    if len(chosen) > 1:
        chosen[-1] = hi
    if len(chosen) < 2:
        width = energy.shape[1]
        return np.zeros(width), np.zeros(width)
    index = np.array(chosen)
    seconds = np.diff(times[index])
    keep = seconds > 0
    if not keep.any():
        width = energy.shape[1]
        return np.zeros(width), np.zeros(width)
    powers = np.diff(energy[index], axis=0)[keep] / seconds[keep][:, None]
    powers = np.maximum(powers, 0.0)
    return powers.max(axis=0), powers.min(axis=0)


def mark_bound(
    times: np.ndarray,
    energy: np.ndarray,
    accumulated: np.ndarray,
    pending: np.ndarray,
    t: float,
    accuracy: Accuracies,
) -> MarkBound:
    """The bound of the cumulative joules at ``t``, from the rows ``(times, energy, accumulated,
    pending)`` the sampler holds (oldest first; ``pending``: `Ledger.open_j` at each row)."""
    n, width = len(times), energy.shape[1]
    if n == 0:
        return MarkBound.zero(width)
    spacing = LEVEL_SPANS * accuracy.longest_lag_s
    if n == 1 or t <= times[0]:  # at the first reading (or older than the buffer): the power after it
        high, low = _levels(times, energy, 0, min(n - 1, LEVEL_READINGS), spacing, accuracy.max_w)
        spread = pending[0] + accuracy.quantum_j + ROUNDING * np.abs(energy[0])
        lag, lag_low = _lags(high, low, times[min(1, n - 1)] - times[0], accuracy)
        return MarkBound(spread, lag, accumulated[0].copy(), lag_low)
    if t > times[-1]:  # extrapolated at the last second's power
        lo = min(int(times.searchsorted(times[-1] - max(RATE_WINDOW_S, 2 * spacing, accuracy.reach_s))), n - 2)
        high, low = _levels(times, energy, max(min(lo, n - 1 - LEVEL_READINGS), 0), n - 1, spacing, accuracy.max_w)
        mean = (energy[-1] - energy[lo]) / (times[-1] - times[lo]) if times[-1] > times[lo] else np.zeros(width)
        back = max(min(int(times.searchsorted(times[-1] - HISTORY_S)), n - 1 - LEVEL_READINGS), 0)
        seen_high, seen_low = _levels(times, energy, back, n - 1, spacing, accuracy.max_w)
        ahead = t - times[-1]
        jump = np.maximum(np.maximum(seen_high - mean, mean - seen_low), mean)  # to any level seen lately, or to 0
        unseen = np.where(accuracy.averaged, 2.0, 1.0)  # an average's tail holds the unseen slice too
        spread = ahead * (unseen * np.maximum(high - low, jump) + accuracy.relative * mean)
        # The counter's last update period is as unseen as the slice past its newest reading: the same
        # allowance (a step to a level no reading has shown yet may fall in it), the jump above the mean.
        top = np.maximum(np.maximum(high, mean), np.where(accuracy.averaged, 0.0, mean + jump))
        lag, lag_low = _lags(top, np.minimum(low, mean), times[-1] - times[-2], accuracy)
        spread += pending[-1] + accuracy.quantum_j + ROUNDING * np.abs(energy[-1])
        return MarkBound(spread, lag, accumulated[-1].copy(), lag_low)
    i = int(times.searchsorted(t))  # times[i-1] < t <= times[i]
    interval = times[i] - times[i - 1]
    w = (t - times[i - 1]) / interval
    reach = max(3 * interval, 2 * spacing, accuracy.reach_s)
    lo = max(int(times.searchsorted(times[i - 1] - reach)) - 1, 0)
    hi = min(int(times.searchsorted(times[i] + reach)), n - 1)
    high, low = _levels(times, energy, lo, hi, spacing, accuracy.max_w)
    step = energy[i] - energy[i - 1]
    interpolation = np.minimum((high - low) * accuracy.share * interval, np.maximum(step, 0.0) * max(w, 1.0 - w))
    inside = accumulated[i] - accumulated[i - 1]  # the interval's own accumulated error, split anyhow
    spread = interpolation + inside + np.maximum(pending[i - 1], pending[i]) + accuracy.quantum_j
    spread += ROUNDING * np.abs(energy[i])
    lag, lag_low = _lags(high, low, interval, accuracy)
    return MarkBound(spread, lag, accumulated[i - 1] + w * inside, lag_low)


def _lags(high: np.ndarray, low: np.ndarray, interval: float, accuracy: Accuracies) -> tuple[np.ndarray, np.ndarray]:
    """(most, least) a reading trails the truth by. A counter: up to ``lag_s`` of the highest
    power, at least nothing (it may have just updated). An averaged power: between the lowest
    and the highest power around, times ``lag_s``; but the tail answers a fresh step with the
    average's whole span (the lag grows by the average's rise times ``2 * lag_s``), and the
    levels are the means of two readings, which show the newest reading's rise only by half: a
    rise of up to twice the spread, times twice ``lag_s``, is one spread plus `AVERAGE_MARGIN`
    (3) more. The average, sampled every ``interval``, may also pass the extremes its readings
    show by the spread times ``interval`` over its span: the range is widened by both."""
    span = np.maximum(2 * accuracy.lag_s, 1e-9)
    widen = np.where(accuracy.averaged, (high - low) * (AVERAGE_MARGIN + interval / span), 0.0)
    lag = (high + widen) * accuracy.lag_s
    return lag, np.where(accuracy.averaged, np.maximum(low - widen, 0.0) * accuracy.lag_s, 0.0)


def settled(times: np.ndarray, t: float, accuracy: Accuracies) -> bool:
    """Whether the rows around ``t`` are all in: its bound will not change (it may be kept)."""
    if len(times) < 2 or t > times[-1]:
        return False
    i = int(times.searchsorted(t))
    interval = times[i] - times[i - 1] if i > 0 else 0.0
    reach = max(3 * interval, 2 * LEVEL_SPANS * accuracy.longest_lag_s, accuracy.reach_s)
    return times[-1] >= times[min(i, len(times) - 1)] + reach
