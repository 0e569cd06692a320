"""GridFollower: the cap in force follows the grid's intensity (or the price) over a run, within its slowdown.

After the cap search, the finder's measurements are a curve: seconds and joules per step
at each measured cap. Every few steps (when the adapter asks) the follower:

1. books the stretch of steps since it last decided, at the cap that was in force: its
   pace refines that cap's seconds per step (a trimmed mean over the stretches, once there
   are `MIN_STRETCHES`; before, the search's figure at the upper end of its confidence
   interval). The time booked, the steps at each cap times its seconds, is held against
   the run's allowance, ``(1 + max_slowdown)`` x the seconds per step at the limit at start;
2. plans the rest of the run (`Plan.solve`, a few ms): the value of a step with which the
   steps left fit in the time left with least emission, mixing two caps where one alone
   would leave time unused, looking ahead at the intensity the run knows (a series' coming
   values; a live source's latest value stands for the future). The time left keeps in
   hand only the doubt about the time booked (`GridFollower.reserve_s`): planned on
   the central figures (a cap not measured yet: the search's), the run does not buy, early
   and dear, time that the figures, once sharper, show it did not need. It plans again at
   every decision, on the time booked so far, so that the coarseness of a cap that holds
   for a stretch is made up at the next;
3. answers the cap that minimises (intensity x joules - value) / seconds over the stretch
   that follows (the cost is linear in the intensity: its mean over the stretch decides),
   unless that stretch, with the rest at the fastest cap, would not fit in the time left:
   then the fastest. Once, when the deadline is close enough that the search's few steps at
   the limit at start leave it in doubt and the time measuring it frees is worth more than
   its energy, it puts that limit back for `MIN_STRETCHES` stretches (`GridFollower.probing`).

It also watches the pace: when most of the last `WATCH` stretches run `CHANGE` slower or
faster than the curve says at the cap in force, the workload has changed and the curve
must be measured again (`GridFollower.changed`).
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from numbers import Integral, Real
from statistics import NormalDist
from typing import Any

import numpy as np

from energy_core.carbon.factor import Factor
from energy_core.power.finder.estimate import trimmed_mean_and_spread
from energy_core.power.finder.search import CONFIDENCE
from energy_core.power.follow.plan import Curve, Plan

MIN_HORIZON = 1000  # steps planned ahead when the run's length is unknown
MIN_STRETCHES = 8  # stretches at a cap before their pace replaces the search's figure
MAX_STRETCHES = 400  # stretches kept per cap (the most recent)
CHANGE = 0.10  # stretches this much slower or faster than the curve says: the workload has changed
WATCH = 8  # stretches watched for a change of pace
WATCH_AGREE = 6  # ... of which this many must agree
PROBE_SHARE = 0.05  # the most of a run's steps spent measuring the limit at start after the search
LOOKS = 8  # intensity readings over a coming stretch (`_mean`)
RESERVE_CONFIDENCE = 0.99  # one-sided: the run's time stays within its slowdown, as the doubt booked allows


class GridFollower:
    """Chooses the cap in force, step after step, to minimise the run's CO2e (or cost) within its slowdown.

    Args:
        curve: Seconds (central figures, with their standard errors) and joules per step at
            each measured rung.
        reference_s: Seconds per step at the limit at start (rung 0).
        max_slowdown: Largest accepted rise of the whole run's time, e.g. 0.1 for 10%.
        factor: The intensity (or price) over time.
        total_steps: Optimizer steps in the whole run, if known (else the slowdown is kept
            over a horizon as long as the run so far, at least `MIN_HORIZON` steps).
        wall: Unix time, for the factor (a test may compress the day).
        every: Steps between decisions (a cap holds this long).

    Examples:
        >>> from energy_core.carbon.factor import Fixed
        >>> curve = Curve((0, 1, 2), (1.0, 1.05, 1.3), (10.0, 8.0, 7.5))
        >>> follower = GridFollower(curve, 1.0, 0.2, Fixed(300.0, "given"), total_steps=1000, wall=lambda: 0.0)
        >>> follower.decide(step=0, rung=0, now=0.0)   # a constant intensity: 1.05 and 1.3 s per step fill 20%
        2
    """

    def __init__(
        self,
        curve: Curve,
        reference_s: float,
        max_slowdown: float,
        factor: Factor,
        total_steps: float | None,
        wall: Callable[[], float] = time.time,
        every: int = 25,
    ) -> None:
        self.curve, self.reference_s, self.max_slowdown = curve, reference_s, max_slowdown
        self.factor, self.wall, self.every = factor, wall, every
        self.total_steps = total_steps if total_steps is not None and math.isfinite(total_steps) else None
        self.booked = (0.0, 0)  # (seconds, steps) before following: the search's, a checkpoint's
        self.plan: Plan | None = None
        self.intensity = math.nan
        self.z = NormalDist().inv_cdf(CONFIDENCE)
        self.z_reserve = NormalDist().inv_cdf(RESERVE_CONFIDENCE)
        # The search's figures to book by: the upper ends of their (95%) intervals; the reference's mean.
        first = curve.rungs[0]
        self._searched = {r: s + self.z * curve.spread(r) * (r != first) for r, s in zip(curve.rungs, curve.seconds)}
        self._steps = dict.fromkeys(curve.rungs, 0)  # steps followed at each rung
        self._stretches: dict[int, deque[float]] = {r: deque(maxlen=MAX_STRETCHES) for r in curve.rungs}
        self._last: tuple[int, float] | None = None  # (step, clock) of the last decision
        self._paces: deque[float] = deque(maxlen=WATCH)

    def seconds(self, rung: int) -> float:
        """Seconds per step at ``rung``, to book its steps by: its stretches' trimmed mean once
        it has `MIN_STRETCHES` of them, else the search's figure at the upper end of its
        interval (the reference's: its mean)."""
        stretches = self._stretches[rung]
        if len(stretches) < MIN_STRETCHES:
            return self._searched[rung]
        return trimmed_mean_and_spread(list(stretches))[0]

    def spread(self, rung: int) -> float:
        """The standard error of `seconds` at ``rung`` (the search's figure of another rung holds its margin: 0).

        The steps' noise is the workload's, whatever the cap: the stretches' relative spread
        is pooled over every rung measured (a few stretches alone may understate it)."""
        stretches = self._stretches[rung]
        if len(stretches) >= MIN_STRETCHES:
            return self.seconds(rung) * self._relative_sd() / math.sqrt(len(stretches))
        return self.curve.spread(rung) if rung == self.curve.rungs[0] else 0.0

    def _relative_sd(self) -> float:
        """The standard deviation of a stretch's pace relative to its rung's mean, pooled over the rungs measured."""
        squares, freedom = 0.0, 0
        for stretches in self._stretches.values():
            if len(stretches) >= MIN_STRETCHES:
                mean = statistics.fmean(stretches)
                squares += sum((pace / mean - 1) ** 2 for pace in stretches)
                freedom += len(stretches) - 1
        return math.sqrt(squares / freedom) if freedom else 0.0

    @property
    def reference(self) -> float:
        """Seconds per step at the limit at start: the search's, or its stretches' once they are many."""
        first = self.curve.rungs[0]
        return self.seconds(first) if len(self._stretches[first]) >= MIN_STRETCHES else self.reference_s

    @property
    def reserve_s(self) -> float:
        """Seconds kept in hand: ``z`` standard errors of the excess booked. Each rung's mean
        pace errs alike on all its steps so far, so that part grows as the square root of the
        steps while the paces sharpen: small at the start, where planning on the central
        figures keeps the run from buying time it will not need. The reference errs alike on
        the whole run's allowance, known from the start when the run's length is: that part
        is kept in hand from the start, so that the run does not spend early, at a slow cap,
        the time its end will have to keep (and then make it up at the fastest)."""
        first = self.curve.rungs[0]
        parts = [n * self.spread(r) for r, n in self._steps.items() if r != first]
        parts.append((self._steps[first] - (1 + self.max_slowdown) * self._run_steps()) * self.spread(first))
        return self.z_reserve * math.hypot(*parts)

    def _run_steps(self) -> float:
        """The steps whose allowance the reference's doubt weighs on: the whole run's when its
        length is known, else the run's so far."""
        return max(self.total_steps or 0.0, self.booked[1] + sum(self._steps.values()))

    def probing(self, step: int) -> bool:
        """Whether the follower puts the limit at start back for a while, to measure it again.

        The run's time is allowed against the reference, known from the search's few steps;
        its doubt, in the reserve at the end of the run, is time the run cannot use. Only when
        the plan ends within that doubt over the steps left of the time left (a wide first
        filter, two plans cheaper than `_probe_pays`: where the plan ends well inside its time,
        the reference decides nothing), after the rung the plan runs is measured (its pace
        decides the plan first), when the run's length is known and the stretches fit in
        `PROBE_SHARE` of it, and when it pays (`_probe_pays`).
        """
        first = self.curve.rungs[0]
        if self.total_steps is None or MIN_STRETCHES * self.every > PROBE_SHARE * self.total_steps:
            return False
        if len(self._stretches[first]) >= MIN_STRETCHES or self.plan is None:
            return False
        if not any(len(stretches) >= MIN_STRETCHES for stretches in self._stretches.values()):
            return False
        doubt = self.z_reserve * (1 + self.max_slowdown) * self._left(step) * self.spread(first)
        return self.plan.seconds + doubt >= self._time_left(step) and self._probe_pays(step)

    def _probe_pays(self, step: int) -> bool:
        """Whether the stretches at the limit at start still needed for `MIN_STRETCHES`, then the
        plan for the rest with the time their measurement frees, emit less than the plan
        without them (a probe begun is priced at what is left of it, so it is finished).

        Either way the steps left must leave in hand, at the run's end, the reference's share
        of the reserve: ``z x (1 + max_slowdown)`` x the run's steps x its standard error,
        the search's without the stretches, what their pooled spread leaves with them. Where
        time buys little (a slowdown the leanest cap does not fill, two caps of nearly the
        same energy), the stretches' extra energy outweighs it and the doubt stays in hand.
        """
        first, curve = self.curve.rungs[0], self._curve(planning=True)
        left, free = self._left(step), self._time_left(step) + self.reserve_s
        probe = min((MIN_STRETCHES - len(self._stretches[first])) * self.every, left)
        pace = self.seconds(first)
        whole = self.z_reserve * (1 + self.max_slowdown) * self._run_steps()
        now = self.wall()
        end = now + probe * pace
        ahead = self._ahead(now, end + max(free, left * max(curve.seconds)))
        during = _mean(ahead, now, probe * pace)
        after = min(self.reference * self._relative_sd() / math.sqrt(MIN_STRETCHES), self.spread(first))
        stay = Plan.solve(curve, ahead, now, left, free - whole * self.spread(first))
        rest = Plan.solve(curve, ahead, end, left - probe, free - probe * pace - whole * after)
        return probe * during * curve.joules[0] + rest.emission < stay.emission

    def spent(self) -> tuple[float, int]:
        """(seconds, steps) of the run so far, as booked."""
        seconds = self.booked[0] + sum(n * self.seconds(r) for r, n in self._steps.items())
        return seconds, self.booked[1] + sum(self._steps.values())

    @property
    def excess_s(self) -> float:
        """Seconds booked beyond the allowance so far (negative: time in hand)."""
        seconds, steps = self.spent()
        return seconds - (1 + self.max_slowdown) * self.reference * steps

    def book(self, seconds: float, steps: int, since: tuple[int, float]) -> None:
        """Add steps taken before following and the seconds they took (the search's, or a
        checkpoint's); the first stretch runs from ``since`` (step, meter clock)."""
        self.booked = (self.booked[0] + seconds, self.booked[1] + steps)
        self._last = since

    def decide(self, step: int, rung: int, now: float) -> int:
        """The rung to put in force for the next steps.

        Args:
            step: The optimizer steps done so far in the run.
            rung: The rung in force since the last decision.
            now: The meter's clock (seconds), to time the stretch.
        """
        if self._last is not None and rung in self._steps and step > self._last[0]:
            steps = step - self._last[0]
            pace = (now - self._last[1]) / steps
            self._paces.append(pace / self.seconds(rung))
            self._stretches[rung].append(pace)
            self._steps[rung] += steps
        wall = self.wall()
        self.intensity = self.factor.peek(wall).value
        self._replan(step)
        assert self.plan is not None
        self._last = (step, now)
        ahead = self._stretch_s()
        coming = _mean(lambda when: self.factor.peek(when).value, wall, ahead)
        curve = self._curve()
        rung = curve.rungs[0] if self.probing(step) else self.plan.rung(self._curve(planning=True), coming, ahead / 2)
        fastest = curve.rungs[curve.seconds.index(min(curve.seconds))]
        return rung if self._fits(curve, rung, step) else fastest

    def _fits(self, curve: Curve, rung: int, step: int) -> bool:
        """Whether a stretch at ``rung``, and the steps after it at the fastest rung, fit in the time left."""
        left = self._left(step)
        stretch = min(self.every, left)
        seconds = stretch * curve.seconds[curve.rungs.index(rung)] + (left - stretch) * min(curve.seconds)
        return seconds <= self._time_left(step)

    def _stretch_s(self) -> float:
        """Seconds until the next decision, at the pace the run is allowed."""
        return self.every * (1 + self.max_slowdown) * self.reference

    def _curve(self, planning: bool = False) -> Curve:
        """The rungs at the seconds per step their steps are booked at; ``planning``: those the
        follower has not measured yet at the search's central figure instead of the upper end
        of its interval. On the upper end, a rung the search's few steps measured a little
        slow would never be run, and so never measured better; the time booked, and the guard
        against running late, keep the upper end."""
        first = self.curve.rungs[0]
        seconds = [
            searched if planning and r != first and len(self._stretches[r]) < MIN_STRETCHES else self.seconds(r)
            for r, searched in zip(self.curve.rungs, self.curve.seconds)
        ]
        return Curve(self.curve.rungs, tuple(seconds), self.curve.joules)

    def _left(self, step: int) -> float:
        """Steps left in the run (or in the horizon, when the run's length is unknown)."""
        left = self.total_steps - step if self.total_steps is not None else max(step, MIN_HORIZON)
        return max(left, 1.0)

    def _time_left(self, step: int) -> float:
        """Seconds the steps left may take: their allowance, less what the run has booked beyond its own."""
        return self._left(step) * (1 + self.max_slowdown) * self.reference - self.excess_s - self.reserve_s

    def _replan(self, step: int) -> None:
        left, allowance, now = self._left(step), self._time_left(step), self.wall()
        curve = self._curve(planning=True)
        ahead = self._ahead(now, now + max(allowance, left * max(curve.seconds)))
        self.plan = Plan.solve(curve, ahead, now, left, allowance)

    def _ahead(self, start: float, end: float) -> Callable[[Any], Any]:
        """The intensity (or price) from ``start`` to ``end`` at a time or an array of times, read
        once per value the factor knows in advance (a series' rows): the plan asks for it at
        every slice."""
        edges = [start, *self.factor.changes(start, end)]
        values = np.array([self.factor.peek(edge).value for edge in edges])
        starts = np.array(edges)
        return lambda when: values[np.maximum(np.searchsorted(starts, when, side="right") - 1, 0)]

    def changed(self) -> bool:
        """Whether most recent stretches ran `CHANGE` off the curve's pace (the workload changed)."""
        if len(self._paces) < WATCH:
            return False
        slow = sum(p > 1 + CHANGE for p in self._paces)
        fast = sum(p < 1 - CHANGE for p in self._paces)
        return max(slow, fast) >= WATCH_AGREE

    def slowdown(self) -> float:
        """The run's slowdown so far, as booked, against the limit at start."""
        seconds, steps = self.spent()
        return 0.0 if not steps else seconds / (steps * self.reference) - 1

    def state_dict(self, step: int | None = None, now: float | None = None) -> dict[str, Any]:
        """The steps and seconds booked, with the stretch since the last decision (to ``step`` at the
        meter clock's ``now``, where given): a resumed run would count those steps nowhere else."""
        seconds, steps = self.spent()
        if step is not None and now is not None and self._last is not None and step > self._last[0]:
            seconds, steps = seconds + max(now - self._last[1], 0.0), steps + step - self._last[0]
        return {"seconds": seconds, "steps": steps}

    def load_state_dict(self, state: Any, since: tuple[int, float]) -> bool:
        """Continue from a checkpoint: the steps and seconds booked before it (the stretches
        start afresh, the first from ``since``). False, and nothing booked, for a state that is
        malformed or cannot be true (`booking`)."""
        found = booking(state, self.total_steps)
        if found is None:
            return False
        self.booked = (0.0, 0)
        self.book(*found, since)
        return True


def booking(state: Any, total_steps: float | None) -> tuple[float, int] | None:
    """The (seconds, steps) a checkpoint's follower state books; None where it is malformed or
    cannot be true: seconds not a finite number of at least 0, steps not a whole number from 0 to
    the run's length (where known)."""
    if not isinstance(state, dict):
        return None
    seconds, steps = state.get("seconds", 0.0), state.get("steps", 0)
    if isinstance(seconds, bool) or not isinstance(seconds, Real) or not math.isfinite(seconds) or seconds < 0:
        return None
    most = total_steps if total_steps is not None and math.isfinite(total_steps) else math.inf
    if isinstance(steps, bool) or not isinstance(steps, Integral) or not 0 <= int(steps) <= most:
        return None
    return float(seconds), int(steps)


def _mean(value_at: Callable[[float], float], start: float, seconds: float) -> float:
    """The mean of ``value_at`` over ``seconds`` from ``start``, read at `LOOKS` evenly spaced times."""
    return sum(value_at(start + seconds * (i + 0.5) / LOOKS) for i in range(LOOKS)) / LOOKS
