"""The power-cap search's decisions, free of hardware and clocks: which cap to measure next, which to keep.

The candidates are a ladder of caps, highest first: rung 0 is the limit in force at the
start (the reference for the slowdown), the last rung is the floor (the board's minimum
limit unless a higher floor was asked for). A *phase* measures one rung for some steps
(`Phase`); `Estimate` pools a rung's phases into time and energy per step with spreads.

The rule, in order (`CapSearch.next`):

1. **sweep** the ladder from the top down, every ``stride``-th rung (every rung unless
   short steps need long phases to resolve the energy counter: `sweep_plan`), rung 0 for
   twice as many steps (it is the reference of every verdict); a slow cap does not end
   it, because real profiles are not monotone, but two caps in a row that are slower
   than the limit by more than the slowdown allowed again, the second slower than the
   first, do: below them the GPU is starved of power;
2. **follow up**, most useful first: rung 0 again when a lower cap ran faster than it
   beyond `DISAGREE` and one spread (a busy spell in the reference's phase makes every
   cap look faster: of its two phases the slower is set aside); a cap whose verdict is
   ambiguous (its time interval, ``z`` spreads wide, contains the limit
   ``(1 + max_slowdown) x T0``), that
   is at least `WORTH_RECHECKING` likely to be within it (or whose phase was disturbed:
   `DISTURBED`) and that would use less energy than the cap chosen so far, with as many
   steps as the noise measured says it needs (rung 0 first when its own spread is what
   blurs the verdict); an unmeasured cap
   halfway to the measured cap below the lowest one within the limit, or to the measured
   neighbours of the cap chosen so far (bisection); a second phase of the cap chosen so
   far, when it has one only (a phase three spreads fast happens, now and then: the
   second rarely is); a cap within the limit whose saving is not yet sure. A verdict
   the budget cannot settle is not measured again;
3. for following the grid (``partner``), measure the rung just slower than the one the
   search would keep, if unmeasured, even past the budget: the plan mixes the cap kept
   with the one beyond the limit. Its figures go to the curve only; the choice is made
   among the rungs measured before it, as without it (`CapSearch.next`);
4. **choose**, with a confidence statement: a cap is kept only if it is within the limit
   with one-sided confidence `CONFIDENCE` (its time's upper bound is within the limit)
   and saves energy against rung 0 with the same confidence; of those, the one with
   least energy per step. Rung 0 always qualifies.

A busy machine jitters the steps and slows some of them: `Estimate` takes time over whole
spans of steps (a late wake-up's long step and the short one after it cancel), leaves
out the sub-windows and phases that really waited, and pools the noise of step times
over every phase; the number of steps each verdict needs comes from that noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from energy_core.power.finder.estimate import DISAGREE, Estimate, Noise, Phase

ZEUS_STEPS_PER_LIMIT = 50  # Zeus GlobalPowerLimitOptimizer defaults: 10 warm-up + 40 profiled steps
ZEUS_STRIDE_MW = 25_000  # ... for every 25 W from the maximum limit down to the minimum
CONFIDENCE = 0.95  # one-sided: a cap kept is within the limit, and saves energy, with this confidence
MAX_RECHECKS = 2  # phases of one rung beyond its first
REFERENCE_SHARE = 0.5  # rung 0's spread may take this share of what a verdict can bear before it is measured again
WORTH_RECHECKING = 0.2  # a straddling cap less likely than this to be within the limit is not measured again...
DISTURBED = 3.0  # ... unless its own steps are this many times as noisy as all phases' pooled (a busy spell)


def sweep_plan(rungs: int, room: float, steps: int, wanted: int, settle_steps: int) -> tuple[int, int]:
    """(steps per phase, stride) of a sweep that fits in ``room`` steps.

    Phases of ``wanted`` steps (long enough for the energy counter) over every rung if they
    fit; else over every second, fourth, ... rung; else phases of the ``steps`` that fit,
    at least.

    Examples:
        >>> sweep_plan(9, room=100, steps=8, wanted=8, settle_steps=2)   # 10 x 8 + 8 x 2 = 96
        (8, 1)
        >>> sweep_plan(9, room=150, steps=8, wanted=22, settle_steps=2)  # 0, 2, 4, 6, 8: 6 x 22 + 4 x 2
        (22, 2)
    """

    def cost(n: int, stride: int) -> int:
        count = len(set(range(0, rungs, stride)) | {rungs - 1})
        return (count + 1) * n + (count - 1) * settle_steps  # rung 0 twice as long

    stride = 1
    while wanted > steps and cost(wanted, stride) > room and stride < rungs - 1:
        stride *= 2
    if wanted > steps and cost(wanted, stride) <= room:
        return wanted, stride
    return steps, 1


def zeus_steps(max_mw: int, min_mw: int) -> int:
    """Steps Zeus's ``GlobalPowerLimitOptimizer`` profiles with its defaults on a board.

    Examples:
        >>> zeus_steps(300_000, 100_000)  # 300, 275, ..., 100 W: 9 limits
        450
    """
    return ZEUS_STEPS_PER_LIMIT * len(range(max_mw, min_mw - ZEUS_STRIDE_MW, -ZEUS_STRIDE_MW))


@dataclass(frozen=True)
class Request:
    """Measure ``rung`` for ``steps`` steps (after the settling steps of a change)."""

    rung: int
    steps: int


WAIT = Request(-1, 0)  # the next decision needs the energy of a phase the meter has not fixed yet


@dataclass(frozen=True)
class Verdict:
    """A rung's slowdown and saving against rung 0, with their spreads and the confidence."""

    slowdown: float
    slowdown_spread: float
    saving: float | None
    saving_spread: float | None
    within: float  # probability that the rung is within the limit

    def text(self, max_slowdown: float) -> str:
        saving = "" if self.saving is None else f"{self.saving:.1%} +- {self.saving_spread:.1%} less energy per step, "
        return (
            f"{saving}{self.slowdown:+.1%} +- {self.slowdown_spread:.1%} time per step "
            f"(within +{max_slowdown:.0%} with {self.within:.0%} confidence)"
        )


class CapSearch:
    """Decides which rung of a cap ladder to measure next, and which to keep.

    Args:
        rungs: Number of candidate caps, highest first (rung 0 is the reference).
        max_slowdown: Largest accepted rise in time per step over rung 0 (0.1 is 10%).
        sweep_steps: Measured steps per rung in the sweep (rung 0: twice as many).
        stride: The sweep measures every ``stride``-th rung (and the last).
        settle_steps: Steps let pass after each change (the cost of a phase, for the budget).
        resolution_s: Seconds of power by which an energy reading may be stale (the meter's
            sample interval): the energy spread of a span is at least that at its ends.
        confidence: One-sided confidence of a verdict (`CONFIDENCE`).
        partner: Before choosing, measure the unmeasured rung just slower than the best with
            one sweep phase, even past the budget, for the curve only (following the grid
            mixes the two); the choice is the best before it.

    Examples:
        >>> search = CapSearch(3, max_slowdown=0.1, sweep_steps=8)
        >>> cost = {0: (1.0, 10.0), 1: (1.05, 9.0), 2: (1.3, 9.5)}   # rung: (s, J) per step
        >>> while (ask := search.next(steps_left=100)) is not None:
        ...     s, j = cost[ask.rung]
        ...     search.add(Phase(ask.rung, [s * (1 + 0.001 * (i % 3)) for i in range(ask.steps)], 2,
        ...                      [2 * j] * (ask.steps // 2)))
        >>> search.chosen, search.history   # the sweep, the choice confirmed: 1 is within 10% and saves 10%
        (1, [0, 1, 2, 1])
    """

    def __init__(
        self,
        rungs: int,
        max_slowdown: float,
        sweep_steps: int,
        stride: int = 1,
        settle_steps: int = 2,
        resolution_s: float = 0.0,
        confidence: float = CONFIDENCE,
        partner: bool = False,
    ) -> None:
        if rungs < 1:
            raise ValueError(f"rungs must be >= 1, got {rungs}")
        self.rungs = rungs
        self.max_slowdown = max_slowdown
        self.sweep_steps = max(2, sweep_steps)
        self.settle_steps = settle_steps
        self.resolution_s = resolution_s
        self.z = NormalDist().inv_cdf(confidence)
        self.estimates: dict[int, Estimate] = {}
        self.noise = Noise(0.0, 0.0)  # of step times, pooled over every kept phase
        self.history: list[int] = []
        self.chosen: int | None = None
        self.why = ""
        self.stride = max(1, stride)
        self.sweep = sorted(set(range(0, rungs, self.stride)) | {rungs - 1})
        self._sweep_over = rungs == 1
        self.partner = partner
        self._kept: int | None = None  # the best before the partner phase: the choice

    # ------------------------------------------------------------------ figures
    def add(self, phase: Phase) -> None:
        """Record one measured phase (its energy may follow: `Phase.joules` filled in later)."""
        if len(phase.times) < 2 or phase.window_steps < 1:
            raise ValueError("a phase needs at least two steps and sub-windows of at least one step")
        estimate = self.estimates.setdefault(phase.rung, Estimate(phase.rung, self.z, self.resolution_s))
        estimate.noise = self.noise  # two phases disagree beyond the calm phases' noise, not a busy one's
        estimate.add(phase)
        self.history.append(phase.rung)
        self._pool_noise()

    def _pool_noise(self) -> None:
        """Pool the noise of step times over the kept phases but those `DISTURBED` times as
        noisy as the others (a busy spell); a rung whose own phases are that noisy keeps its
        own noise (and is measured again if that leaves its verdict open)."""
        phases = [p for e in self.estimates.values() for p in e.kept]
        calm = [
            p for p in phases if Noise.of([p]).single <= DISTURBED * Noise.of([q for q in phases if q is not p]).single
        ]
        self.noise = Noise.of(calm or phases)
        for estimate in self.estimates.values():
            own = estimate.own_noise
            estimate.noise = own if self._noisier(own) else self.noise

    def _noisier(self, noise: Noise) -> bool:
        return noise.single > DISTURBED * self.noise.single

    def verdict(self, rung: int) -> Verdict:
        """``rung``'s slowdown (and saving, once energy is known) against rung 0, with spreads."""
        (t0, s0), (t, s) = self.estimates[0].time, self.estimates[rung].time
        ratio = t / t0
        spread = 0.0 if rung == 0 else ratio * math.hypot(s / t, s0 / t0)
        slowdown = ratio - 1
        within = 1.0 if rung == 0 else _probability_below(self.max_slowdown - slowdown, spread)
        e0, e = self.estimates[0].energy, self.estimates[rung].energy
        if e0 is None or e is None or e0[0] <= 0:
            return Verdict(slowdown, spread, None, None, within)
        energy_ratio = e[0] / e0[0]
        saving_spread = 0.0 if rung == 0 else energy_ratio * math.hypot(e[1] / e[0], e0[1] / e0[0])
        return Verdict(slowdown, spread, 1 - energy_ratio, saving_spread, within)

    def within(self, rung: int) -> bool:
        """Whether ``rung`` is within the limit with the search's confidence."""
        v = self.verdict(rung)
        return rung == 0 or v.slowdown + self.z * v.slowdown_spread <= self.max_slowdown

    def over(self, rung: int, by: float = 0.0) -> bool:
        """Whether ``rung`` is slower than the limit (plus ``by``) with the search's confidence."""
        v = self.verdict(rung)
        return rung != 0 and v.slowdown - self.z * v.slowdown_spread > self.max_slowdown + by

    def saves(self, rung: int) -> bool:
        """Whether ``rung`` uses less energy per step than rung 0 with the search's confidence."""
        v = self.verdict(rung)
        return v.saving is not None and v.saving_spread is not None and v.saving - self.z * v.saving_spread > 0

    def best(self) -> int:
        """The cap kept were the search to end now: least energy among those within the limit
        that save energy, each with the search's confidence; rung 0 if none."""
        candidates = [r for r in self.estimates if r != 0 and self.within(r) and self.saves(r)]
        return min(candidates, key=lambda r: self._energy(r), default=0)

    def _energy(self, rung: int) -> float:
        energy = self.estimates[rung].energy
        return math.inf if energy is None else energy[0]

    # ------------------------------------------------------------------ decisions
    def next(self, steps_left: int) -> Request | None:
        """The next phase to measure, `WAIT` while a needed energy figure is pending, or None
        when the search is over (then see `chosen`).

        Args:
            steps_left: Steps the budget still allows (settling included).
        """
        if self.chosen is not None:
            return None
        if not self._sweep_over:
            ask = self._sweep()
            if ask is not None and ask.steps + self.settle_steps <= steps_left:
                return ask
            self._sweep_over = True
        if not all(e.complete for e in self.estimates.values()):
            return WAIT
        if 0 not in self.estimates:  # the budget left no room for the reference: nothing to compare
            self._choose(steps_left)
            return None
        if self._kept is None:  # after the partner phase: nothing more to measure
            ask = self._recheck(steps_left)
            if ask is not None:
                return ask
            if self.partner:
                self._kept = self.best()
                if self._kept + 1 < self.rungs and self._kept + 1 not in self.estimates:
                    return Request(self._kept + 1, self.sweep_steps)
        self._choose(steps_left)
        return None

    def _sweep(self) -> Request | None:
        """The next rung of the sweep, or None when it is over."""
        if not self.estimates:
            return Request(0, 2 * self.sweep_steps)
        done = [r for r in self.sweep if r in self.estimates]
        if len(done) >= 3 and self._starved(done[-2], done[-1]):
            return None
        rung = next((r for r in self.sweep if r not in self.estimates), None)
        return None if rung is None else Request(rung, self.sweep_steps)

    def _starved(self, above: int, rung: int) -> bool:
        """Whether ``rung`` and the measured rung ``above`` it are slower than the limit by more
        than the slowdown allowed again, ``rung`` the slower: caps below it starve the GPU."""
        by = self.max_slowdown
        slower = self.estimates[rung].time[0] > self.estimates[above].time[0]
        return slower and self.over(rung, by) and self.over(above, by)

    def _recheck(self, steps_left: int) -> Request | None:
        """The phase most worth measuring next, with the steps it needs; None when none.

        In order: a cap using less energy than the one chosen so far whose time straddles
        the limit; an unmeasured cap halfway to the measured neighbours of the one chosen
        so far (below first); a second phase of the cap chosen so far (a phase's noise
        rarely repeats, and the two are pooled); a cap using less energy whose saving is
        not yet sure. Rung 0
        comes first when its own spread is what blurs a verdict; a verdict the budget
        cannot settle is not measured again.
        """
        room = steps_left - self.settle_steps
        if self._reference_slowed() and 2 * self.sweep_steps <= room:
            return Request(0, 2 * self.sweep_steps)
        best = self.best()
        best_energy = self._energy(best)
        straddling, unsure = [], []
        for rung, estimate in self.estimates.items():
            if rung == 0 or rung == best or estimate.phases > MAX_RECHECKS or self._energy(rung) >= best_energy:
                continue
            if not self.within(rung) and not self.over(rung):
                straddling.append((self._energy(rung), rung))
            elif self.within(rung) and not self.saves(rung) and (self.verdict(rung).saving or 0.0) > 0:
                unsure.append((self._energy(rung), rung))
        for _, rung in sorted(straddling):
            if self.verdict(rung).within < WORTH_RECHECKING and not self._disturbed(rung):
                continue
            ask = self._settle_time(rung, room)
            if ask is not None:
                return ask
        gap = self._gap(best)
        if gap is not None and self.sweep_steps <= room:
            return Request(gap, self.sweep_steps)
        if best != 0 and self.estimates[best].phases == 1 and self.sweep_steps <= room:
            return Request(best, self.sweep_steps)  # confirm: one phase's luck does not choose a cap
        for _, rung in sorted(unsure):
            ask = self._settle_saving(rung, room)
            if ask is not None:
                return ask
        return None

    def _reference_slowed(self) -> bool:
        """Whether rung 0, measured once, looks slowed: a lower cap ran faster than it by
        more than `DISAGREE` and one spread. A busy spell in rung 0's phase would make
        every cap look faster than it is; a second phase of rung 0 shows it (of two phases
        that disagree, the slower is set aside). One spread, not the search's confidence:
        a phase of rung 0 costs steps, a cap kept beyond the limit costs the run."""
        if self.estimates[0].phases > 1:
            return False
        return any(
            v.slowdown + v.slowdown_spread < -DISAGREE for v in (self.verdict(r) for r in self.estimates if r != 0)
        )

    def _disturbed(self, rung: int) -> bool:
        """Whether ``rung``'s own phases are `DISTURBED` times as noisy as the search's phases
        pooled: a busy spell in its phase, which a phase of its own may show."""
        return self._noisier(self.estimates[rung].own_noise)

    def _gap(self, best: int) -> int | None:
        """An unmeasured rung where a better cap may lie: halfway between the lowest cap within
        the limit and the measured one below it (the crossing), else halfway between ``best``
        and its measured neighbour below, then above; None when all those are adjacent."""
        measured = sorted(self.estimates)
        lowest_within = max(r for r in measured if self.within(r))
        crossing = min((r for r in measured if r > lowest_within), default=None)
        below = min((r for r in measured if r > best), default=None)
        above = max((r for r in measured if r < best), default=None)
        for low, high in ((lowest_within, crossing), (best, below), (above, best)):
            if low is not None and high is not None and high - low >= 2:
                return (low + high) // 2
        return None

    def _settle_time(self, rung: int, room: int) -> Request | None:
        """The phase that would settle whether ``rung`` is within the limit, if the budget allows."""
        verdict = self.verdict(rung)
        allowed = abs(self.max_slowdown - verdict.slowdown) / self.z / (1 + verdict.slowdown)
        (t0, s0), (t, s) = self.estimates[0].time, self.estimates[rung].time
        return self._more(rung, s / t, s0 / t0, allowed, room)

    def _settle_saving(self, rung: int, room: int) -> Request | None:
        """The phase that would settle whether ``rung`` saves energy, if the budget allows."""
        verdict = self.verdict(rung)
        assert verdict.saving is not None
        allowed = verdict.saving / self.z / (1 - verdict.saving)
        (e0, s0), (e, s) = self.estimates[0].energy or (1, 0), self.estimates[rung].energy or (1, 0)
        return self._more(rung, s / e, s0 / e0, allowed, room)

    def _more(self, rung: int, own: float, reference: float, allowed: float, room: int) -> Request | None:
        """More steps of ``rung`` or of rung 0 (whichever narrows the verdict more per step:
        relative spreads ``own`` and ``reference``) towards a combined relative spread of
        ``allowed``; spreads fall as the square root of the steps. As many as the budget
        allows when it cannot settle the verdict outright; None when not even a sweep's phase fits."""
        n_rung, n_0 = self.estimates[rung].steps, self.estimates[0].steps
        reference_first = reference**2 / n_0 > own**2 / n_rung and self.estimates[0].phases <= MAX_RECHECKS
        target, have, spread, other = (0, n_0, reference, own) if reference_first else (rung, n_rung, own, reference)
        if allowed > other:
            steps = math.ceil(have * (spread**2 / (allowed**2 - other**2) - 1))
        else:
            steps = have  # the other rung needs more too: double this one first
        steps = min(max(self.sweep_steps, steps), room)
        return Request(target, steps) if steps >= self.sweep_steps else None

    def _choose(self, steps_left: int) -> None:
        if 0 not in self.estimates:
            self.chosen, self.why = 0, "nothing was measured"
            return
        self.chosen = self.best() if self._kept is None else self._kept
        within = [r for r in self.estimates if self.within(r)]
        over = [r for r in self.estimates if self.over(r)]
        unsure = len(self.estimates) - len(within) - len(over)
        self.why = (
            f"least energy per step of the {len(within)} measured caps within the limit with "
            f"{CONFIDENCE:.0%} confidence"
            + (f"; {len(over)} too slow" if over else "")
            + (f"; {unsure} not settled in the step budget" if unsure else "")
            + (f"; {self.rungs - len(self.estimates)} below a cap that starves the GPU not measured"
               if len(self.estimates) < self.rungs else "")
        )  # fmt: skip


def _probability_below(margin: float, spread: float) -> float:
    """P(a normal variable with this spread stays below ``margin`` from its mean)."""
    if spread <= 0:
        return 1.0 if margin >= 0 else 0.0
    return NormalDist().cdf(margin / spread)
