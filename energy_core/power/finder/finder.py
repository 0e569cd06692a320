"""Automatic power-cap finder: measure caps on real training steps, keep the one with least energy per step.

The candidates are a ladder of caps 25 W apart (Zeus's grid), from each board's limit at
start down to its minimum limit (or a higher floor, ``min_watts``). After ``warmup_steps``,
each phase holds one cap: ``settle_steps`` are let pass after the change, then
``windows`` sub-windows of whole steps are timed by marks, and their energy is read from
the meter's sampled readings once a reading past the last mark exists. Which cap to
measure next and which to keep is decided by `CapSearch` (energy_core/power/finder/search.py):
a coarse sweep over the whole ladder, a second measurement of the figures that straddle
the slowdown limit or look disturbed, a bisection around the best cap; the cap kept has
the least energy per step among those within ``max_slowdown`` of the limit at start.

Cost: the whole search (warm-up included) stays under a third of the steps Zeus's
``GlobalPowerLimitOptimizer`` profiles with its defaults (10 warm-up + 40 profiled steps
per 25 W limit): 149 steps where Zeus takes 450 on a 100-300 W board. On the training
thread `CapFinder.on_step` is an integer comparison except at sub-window boundaries (one
clock read) and phase boundaries (a limit change, and a look into the meter's buffer);
nothing here calls NVML except through `PowerLimits.set`.
"""

from __future__ import annotations

import math
from typing import Any

from energy_core.devices import DeviceError
from energy_core.output import keys
from energy_core.power.finder.estimate import Span
from energy_core.power.finder.search import ZEUS_STEPS_PER_LIMIT, CapSearch
from energy_core.power.limits import CappedGpu, PowerLimits
from energy_core.power.plan import cap_ladder
from energy_core.sampling.meter import EnergyMeter, Mark

WARMUP, SETTLE, MEASURE, WAIT, DONE = range(5)
MAX_WAIT_STEPS = 50  # a meter with no reading past a phase's end after this many steps ends the search


class CapFinder:
    """Finds the power cap that minimises energy per step within a slowdown limit.

    Args:
        limits: The node's `PowerLimits`, holding the boards to cap (already journalled).
        meter: A running meter that measures those GPUs (all its sources are summed).
        max_slowdown: Largest accepted rise in time per step, e.g. 0.1 for 10%.
        min_watts: Lowest cap tried per GPU (default: each board's minimum limit).
        warmup_steps: Steps before the first phase (at the limit in force).
        profile_steps: Measured steps per phase, at least.
        windows: Sub-windows per phase (the spread of a phase's figures).
        settle_steps: Steps let pass after each limit change before measuring.
        min_phase_s: Measured seconds per phase wanted (the energy counter advances every
            20-100 ms), as far as the step budget allows.
        step_w: Spacing of the candidate caps, in W.
        max_steps: Step budget of the whole search; default: under a third of Zeus's.

    Logged by the adapters: ``power/cap_w`` at each change; the run record gets the table
    (cap, time and energy per step with spreads, phases, verdict) and the choice.

    Examples:
        >>> finder = CapFinder(limits, meter, max_slowdown=0.1)   # doctest: +SKIP
        >>> for step in range(1, 1000):                          # doctest: +SKIP
        ...     train_one_step(); finder.on_step(step)
        >>> print(finder.summary())                              # doctest: +SKIP
    """

    def __init__(
        self,
        limits: PowerLimits,
        meter: EnergyMeter,
        max_slowdown: float = 0.1,
        min_watts: float | None = None,
        warmup_steps: int = 5,
        profile_steps: int = 12,
        windows: int = 4,
        settle_steps: int = 2,
        min_phase_s: float = 1.0,
        step_w: float = 25.0,
        max_steps: int | None = None,
    ) -> None:
        self.limits, self.meter, self.max_slowdown = limits, meter, max_slowdown
        self.warmup_steps, self.profile_steps, self.windows = warmup_steps, profile_steps, windows
        self.settle_steps, self.min_phase_s = settle_steps, min_phase_s
        self.boards: list[CappedGpu] = list(limits.capped)
        self.fractions = cap_ladder(self.boards, min_watts, step_w)
        self.caps_mw = [
            [min(b.limits.max_mw, max(b.limits.min_mw, int(round(f * b.previous_mw)))) for b in self.boards]
            for f in self.fractions
        ]
        self.zeus_steps = ZEUS_STEPS_PER_LIMIT * len(self.fractions)
        self.budget = max_steps if max_steps is not None else (self.zeus_steps - 1) // 3
        self.search: CapSearch | None = None
        self.chosen: int | None = None
        self.failure = ""
        self.steps_used = 0
        self.done = not self.boards or len(self.fractions) == 1
        self._state = WARMUP
        self._next = -(2**62)  # the first call starts the warm-up
        self._first: tuple[int, Mark] | None = None
        self._rung = 0  # the rung in force
        self._marks: list[Mark] = []
        self._window_steps = 1
        self._phase_cost = 1
        self._phase_start = 0
        self._wait_until = 0

    def cap_w(self, rung: int) -> float:
        """Sum of the boards' caps at ``rung``, in W."""
        return sum(self.caps_mw[rung]) / 1000.0

    def _set(self, rung: int) -> dict[str, float]:
        """Put ``rung``'s caps in force (one `PowerLimits.set` per board that changes)."""
        for board, target in zip(self.boards, self.caps_mw[rung]):
            if board.applied_mw != target:
                self.limits.set(board, target)
        self._rung = rung
        return {keys.CAP_W: self.cap_w(rung)}

    def on_step(self, step: int) -> dict[str, float] | None:
        """Call after every optimizer step; returns ``{"power/cap_w": W}`` when the cap changed
        and when the search ends (with the cap kept)."""
        if self.done or step < self._next:
            return None
        try:
            return self._boundary(step)
        except (DeviceError, PermissionError) as err:
            return self._abandon(f"setting a limit failed ({err})")

    def _abandon(self, why: str) -> dict[str, float] | None:
        """End the search without a choice, with the limits at start back in force if possible."""
        self.failure, self.done, self._state = why, True, DONE
        try:
            return self._set(0)
        except (DeviceError, PermissionError):  # `PowerLimits.restore` tries again at the end
            return None

    def _boundary(self, step: int) -> dict[str, float] | None:
        if self._first is None:
            self._first = (step, self.meter.mark())
            self._next = step + self.warmup_steps
            return None
        self.steps_used = step - self._first[0]
        if self._state == WARMUP:
            self._plan(step)
            return self._begin(step, self._ask())
        if self._state == SETTLE:
            self._marks = [self.meter.mark()]
            self._state, self._next = MEASURE, step + self._window_steps
            return None
        if self._state == MEASURE:
            self._marks.append(self.meter.mark())
            if len(self._marks) <= self.windows:
                self._next = step + self._window_steps
                return None
            self._state, self._wait_until = WAIT, step + MAX_WAIT_STEPS
        values = [float(v.sum()) for v in self.meter.joules(*self._marks)]  # a buffer lookup, no NVML
        if self._marks[-1].joules is None:  # no reading past the phase's end yet
            if step >= self._wait_until:
                return self._abandon(f"the meter gave no reading in {MAX_WAIT_STEPS} steps")
            self._next = step + 1
            return None
        phase = [
            Span(self._window_steps, b.t - a.t, values[i + 1] - values[i])
            for i, (a, b) in enumerate(zip(self._marks, self._marks[1:]))
        ]
        assert self.search is not None
        self.search.add(self._rung, phase)
        self._phase_cost = max(self._phase_cost, step - self._phase_start)  # a slow meter makes phases dearer
        return self._begin(step, self._ask())

    def _plan(self, step: int) -> None:
        """Phase length from the warm-up's step time; the search sized to the step budget."""
        assert self._first is not None
        step_s = max((self.meter.mark().t - self._first[1].t) / max(step - self._first[0], 1), 1e-9)
        wanted = max(self.profile_steps, math.ceil(self.min_phase_s / step_s))
        room = (self.budget - self.steps_used) // min(len(self.fractions), 3) - self.settle_steps - 1
        self._window_steps = max(1, min(math.ceil(wanted / self.windows), room // self.windows))
        self._phase_cost = self.settle_steps + self.windows * self._window_steps + 1
        first = self._phase_cost - self.settle_steps  # the first phase needs no settling
        phases = 1 + max(0, self.budget - self.steps_used - first) // self._phase_cost
        self.search = CapSearch(len(self.fractions), self.max_slowdown, phases)

    def _ask(self) -> int | None:
        assert self.search is not None
        return self.search.next((self.budget - self.steps_used) // self._phase_cost)

    def _begin(self, step: int, rung: int | None) -> dict[str, float] | None:
        """Start a phase at ``rung``, or end the search (``rung`` None) with the chosen cap in force."""
        if rung is None:
            assert self.search is not None
            self.chosen, self.done, self._state = self.search.chosen, True, DONE
            return self._set(self.chosen if self.chosen is not None else 0)
        self._phase_start = step
        if [b.applied_mw for b in self.boards] == self.caps_mw[rung]:  # in force already: no settling
            self._rung, self._marks = rung, [self.meter.mark()]
            self._state, self._next = MEASURE, step + self._window_steps
            return None
        self._state, self._next = SETTLE, step + self.settle_steps
        return self._set(rung)

    # ------------------------------------------------------------------ reporting
    def table(self) -> list[dict[str, Any]]:
        """The measured candidates, highest cap first, for the record and the messages."""
        search = self.search
        if search is None or 0 not in search.estimates:
            return []
        t0, j0 = search.estimates[0].time[0], search.estimates[0].energy[0]
        rows = []
        for rung in sorted(search.estimates):
            estimate = search.estimates[rung]
            (s, s_spread), (j, j_spread) = estimate.time, estimate.energy
            rows.append(
                {
                    "fraction": round(self.fractions[rung], 4),
                    "cap_w": self.cap_w(rung),
                    "s_per_step": s,
                    "s_spread": s_spread,
                    "j_per_step": j,
                    "j_spread": j_spread,
                    "slowdown": s / t0 - 1,
                    "saving": 1 - j / j0 if j0 else 0.0,
                    "steps": sum(w.steps for w in estimate.windows),
                    "phases": estimate.phases,
                    "set_aside": len(estimate.set_aside),
                    "left_out": len(estimate.dropped),
                    "within": search.within(rung),
                    "chosen": rung == self.chosen,
                }
            )
        return rows

    def choice(self) -> dict[str, Any]:
        """The choice and why, for the run record."""
        chosen = self.chosen
        return {
            "cap_w": None if chosen is None else self.cap_w(chosen),
            "caps_w": None if chosen is None else [mw / 1000 for mw in self.caps_mw[chosen]],
            "fraction": None if chosen is None else round(self.fractions[chosen], 4),
            "why": self.search.why if self.search is not None and chosen is not None else self._unfinished(),
            "max_slowdown": self.max_slowdown,
            "steps": self.steps_used,
            "budget_steps": self.budget,
            "zeus_steps": self.zeus_steps,
            "candidates_w": [self.cap_w(r) for r in range(len(self.fractions))],
        }

    def _unfinished(self) -> str:
        return self.failure or "training ended first"

    def _caps_text(self, rung: int) -> str:
        caps = [mw / 1000 for mw in self.caps_mw[rung]]
        if len(caps) == 1:
            return f"{caps[0]:g} W"
        if len(set(caps)) == 1:
            return f"{caps[0]:g} W on each of {len(caps)} GPUs"
        return ", ".join(f"GPU {b.board.index} {c:g} W" for b, c in zip(self.boards, caps))

    def summary(self) -> str:
        """The choice and why, then the table of candidates with their spreads (console)."""
        rows = self.table()
        if self.chosen is None:
            lines = [
                f"Power-cap search did not finish ({self._unfinished()}) after {self.steps_used} steps; "
                f"{len(rows)} caps measured."
            ]
        else:
            row = next(r for r in rows if r["chosen"])
            assert self.search is not None
            lines = [
                f"Power-cap search chose {self._caps_text(self.chosen)} ({row['fraction']:.0%} of the limit at "
                f"start): {row['saving']:.1%} less energy per step for {row['slowdown']:+.1%} time per step "
                f"(allowed: +{self.max_slowdown:.0%}). Why: {self.search.why}. "
                f"{len(self.search.history)} phases, {self.steps_used} steps (Zeus's defaults: {self.zeus_steps})."
            ]
        if rows:
            lines.append("      cap W     ms/step +-        J/step +-    time  energy  phases")
        for r in rows:
            mark = "*" if r["chosen"] else (" " if r["within"] else "x")
            aside = [f"{r['set_aside']} set aside", f"{r['left_out']} sub-window{'s' * (r['left_out'] > 1)} left out"]
            lines.append(
                f"  {mark} {r['cap_w']:7g}  {1000 * r['s_per_step']:8.4g} {1000 * r['s_spread']:<6.2g}"
                f" {r['j_per_step']:8.4g} {r['j_spread']:<6.2g} {r['slowdown']:+6.1%} {0.0 - r['saving']:+6.1%}"
                f"  {r['phases']}" + "".join(f" ({a})" for a in aside if not a.startswith("0 "))
            )
        if rows:
            lines.append("  (* chosen, x too slow; +- is the spread of the mean over sub-windows; cap W of all GPUs)")
        return "\n".join(lines)
