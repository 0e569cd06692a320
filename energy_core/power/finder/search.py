"""The power-cap search's decisions, free of hardware and clocks: which cap to measure next, which to keep.

The candidates are a ladder of caps, highest first: rung 0 is the limit in force at the
start (the reference for the slowdown), the last rung is the floor (the board's minimum
limit unless a higher floor was asked for). A *phase* measures one rung for a few
sub-windows; each sub-window gives (steps, seconds, joules), so a rung's time and
energy per step come with a spread (the standard error of the mean over its sub-windows).

The rule, in order (`CapSearch.next`):

1. measure rung 0, then a coarse sweep over the whole ladder down to the floor (every
   ``spacing``-th rung and the floor, the spacing set by the phase budget; no early exit:
   real profiles are not monotone);
2. measure again, once, most useful first: rung 0 when its spread is large against the
   slowdown allowed or a lower cap ran faster beyond the noise; a rung that could be the
   choice (no more energy than the best so far) whose time straddles the limit
   ``(1 + max_slowdown) x T0`` (its interval, ``z`` spreads wide, contains the limit), and
   rung 0 as well if it still straddles after two phases; a rung (within 20% of the best's
   energy) with a sub-window left out, or too slow while a lower cap was within the limit
   or ran faster (a disturbed phase, or a non-monotone profile);
3. refine: bisect the unmeasured gap where the limit is crossed towards less energy, then
   the gaps below and above the best rung, then other crossings;
4. measure again, once, the first rung below the lowest within the limit if it used less
   energy than the best (it would be the choice, were its phase disturbed), then rung 0;
5. stop when nothing is left to do or the phase budget is spent.

A sub-window more than `OUTLIER` slower per step than its phase's fastest is left out; two
phases of one rung are pooled unless their times disagree beyond ``z`` spreads and
`DISAGREE`: then the slower is set aside (a noisy neighbour only ever slows a phase down).
Both are `Estimate`'s rules (energy_core/power/finder/estimate.py).
The rung kept is the one with the least energy per step among those whose time per step
is within the limit; rung 0 always is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from energy_core.power.finder.estimate import DISAGREE, Estimate, Span

ZEUS_STEPS_PER_LIMIT = 50  # Zeus GlobalPowerLimitOptimizer defaults: 10 warm-up + 40 profiled steps
ZEUS_STRIDE_MW = 25_000  # ... for every 25 W from the maximum limit down to the minimum


def zeus_steps(max_mw: int, min_mw: int) -> int:
    """Steps Zeus's ``GlobalPowerLimitOptimizer`` profiles with its defaults on a board.

    Examples:
        >>> zeus_steps(300_000, 100_000)  # 300, 275, ..., 100 W: 9 limits
        450
    """
    return ZEUS_STEPS_PER_LIMIT * len(range(max_mw, min_mw - ZEUS_STRIDE_MW, -ZEUS_STRIDE_MW))


class CapSearch:
    """Decides which rung of a cap ladder to measure next, and which to keep.

    Args:
        rungs: Number of candidate caps, highest first (rung 0 is the reference).
        max_slowdown: Largest accepted rise in time per step over rung 0 (0.1 is 10%).
        phases: The phases expected to fit the step budget (sets the coarse spacing).
        z: Width of an interval in spreads: times closer to the limit than this are
            measured again, and two phases further apart than this disagree.

    Examples:
        >>> search = CapSearch(3, max_slowdown=0.1, phases=3)
        >>> cost = {0: (1.0, 10.0), 1: (1.05, 9.0), 2: (1.3, 9.5)}   # rung: (s, J) per step
        >>> while (rung := search.next(phases_left=5 - len(search.history))) is not None:
        ...     s, j = cost[rung]
        ...     search.add(rung, [Span(3, 3 * s, 3 * j)] * 4)
        >>> search.chosen, search.history   # rung 0, the coarse sweep, the gap, rung 0 again
        (1, [0, 2, 1, 0])
    """

    def __init__(self, rungs: int, max_slowdown: float, phases: int, z: float = 2.0) -> None:
        if rungs < 1:
            raise ValueError(f"rungs must be >= 1, got {rungs}")
        self.rungs = rungs
        self.max_slowdown = max_slowdown
        self.z = z
        self.spacing = 1
        while len(self._coarse(self.spacing)) > max(2, math.ceil(0.55 * phases)) and self.spacing < rungs:
            self.spacing *= 2
        self.coarse = self._coarse(self.spacing)
        self.estimates: dict[int, Estimate] = {}
        self.history: list[int] = []
        self.chosen: int | None = None
        self.why = ""

    def _coarse(self, spacing: int) -> list[int]:
        return sorted(set(range(0, self.rungs, spacing)) | {self.rungs - 1})

    # ------------------------------------------------------------------ figures
    def add(self, rung: int, windows: Sequence[Span]) -> None:
        """Record one measured phase of ``rung`` (its sub-windows, each of >= 1 step)."""
        if not windows or any(w.steps < 1 for w in windows):
            raise ValueError("a phase needs sub-windows of at least one step")
        self.estimates.setdefault(rung, Estimate(rung)).add(list(windows), self.z)
        self.history.append(rung)

    @property
    def limit_s(self) -> float:
        """The slowest accepted time per step: ``(1 + max_slowdown) x`` rung 0's."""
        return (1 + self.max_slowdown) * self.estimates[0].time[0]

    def _limit_spread(self, rung: int) -> float:
        """Spread of (time of ``rung`` - limit): both figures are measured."""
        spread_0 = (1 + self.max_slowdown) * self.estimates[0].time[1]
        return math.hypot(self.estimates[rung].time[1], spread_0)

    def within(self, rung: int) -> bool:
        """Whether ``rung``'s measured time per step is within the limit."""
        return rung == 0 or self.estimates[rung].time[0] <= self.limit_s

    def straddles(self, rung: int) -> bool:
        """Whether ``rung``'s time interval (``z`` spreads) contains the limit."""
        return rung != 0 and abs(self.estimates[rung].time[0] - self.limit_s) <= self.z * self._limit_spread(rung)

    def best(self) -> int:
        """The measured rung with the least energy per step among those within the limit."""
        return min((r for r in self.estimates if self.within(r)), key=lambda r: self.estimates[r].energy[0])

    # ------------------------------------------------------------------ decisions
    def _inverted(self, rung: int) -> bool:
        """Whether a lower cap ran faster than ``rung`` beyond the noise (a disturbed phase,
        or a profile that is not monotone)."""
        t, s = self.estimates[rung].time
        return any(
            e.time[0] < t - max(self.z * math.hypot(e.time[1], s), DISAGREE * t)
            for r, e in self.estimates.items()
            if r > rung
        )

    def _doubtful(self) -> list[int]:
        """Rungs to measure again, most useful first. Rung 0 when its spread is large against
        the slowdown allowed, when a lower cap ran faster, or when a rung that could be the
        choice still straddles the limit after two phases; other rungs (once) when they could
        be the choice and straddle the limit, or were too slow while a lower cap was within
        the limit or ran faster."""
        t0, s0 = self.estimates[0].time
        best_j = self.estimates[self.best()].energy[0]
        lowest_within = max(r for r in self.estimates if self.within(r))
        doubtful = []
        if self.z * s0 > self.max_slowdown * t0 / 4 or self._inverted(0) or self.estimates[0].dropped:
            doubtful.append((0, 0.0, 0))
        for rung, estimate in self.estimates.items():
            j = estimate.energy[0]
            if rung == 0 or j > 1.2 * best_j:
                continue
            if self.straddles(rung) and j <= best_j:
                doubtful.append((1, j, rung) if estimate.phases == 1 else (3, j, 0))
            elif (estimate.dropped and j <= best_j) or (
                not self.within(rung) and (rung < lowest_within or self._inverted(rung))
            ):
                doubtful.append((2, j, rung))
        return [rung for *_, rung in sorted(doubtful) if self.estimates[rung].phases == 1]

    def _gap(self) -> int | None:
        """The middle of the most promising unmeasured gap between measured rungs: first one
        that crosses the limit towards less energy, then the one below the best, then above."""
        best = self.best()
        best_j = self.estimates[best].energy[0]
        measured = sorted(self.estimates)
        gaps = []
        for high, low in zip(measured, measured[1:]):  # high cap, low cap
            if low - high < 2:
                continue
            crossing = self.within(high) and not self.within(low)
            if crossing and self.estimates[low].energy[0] < 1.02 * best_j:
                gaps.append((0, high))
            elif high == best:
                gaps.append((1, high))
            elif low == best:
                gaps.append((2, high))
            elif crossing and self.estimates[low].energy[0] < 1.2 * best_j:
                gaps.append((3, high))
        if not gaps:
            return None
        high = min(gaps)[1]
        return (high + min(r for r in measured if r > high)) // 2

    def _boundary(self) -> int | None:
        """The first rung measured below the lowest within the limit, measured once, if it used
        less energy than the best: it would be the choice, were its phase disturbed."""
        lowest_within = max(r for r in self.estimates if self.within(r))
        rung = min((r for r in self.estimates if r > lowest_within), default=None)
        if rung is None or self.estimates[rung].phases > 1:
            return None
        return rung if self.estimates[rung].energy[0] < self.estimates[self.best()].energy[0] else None

    def next(self, phases_left: int) -> int | None:
        """The rung to measure next, or None when the search is over (then see `chosen`).

        Args:
            phases_left: Phases the step budget still allows (0 ends the search).
        """
        if self.chosen is not None:
            return None
        if phases_left > 0:
            for rung in self.coarse:
                if rung not in self.estimates:
                    return rung
            doubtful = self._doubtful()
            if doubtful:
                return doubtful[0]
            gap = self._gap()
            if gap is not None:
                return gap
            boundary = self._boundary()
            if boundary is not None:
                return boundary
            if self.estimates[0].phases == 1:  # budget left: the reference of every verdict, once more
                return 0
        self._choose(phases_left)
        return None

    def _choose(self, phases_left: int) -> None:
        if 0 not in self.estimates:
            self.chosen, self.why = 0, "nothing was measured"
            return
        self.chosen = self.best()
        within = [r for r in self.estimates if self.within(r)]
        slow = sorted(r for r in self.estimates if not self.within(r))
        self.why = (
            f"least energy per step of the {len(within)} measured caps within the limit"
            + (f"; {len(slow)} too slow" if slow else "")
            + ("; step budget spent" if phases_left <= 0 else "")
        )
