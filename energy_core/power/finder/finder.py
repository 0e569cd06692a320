"""Automatic power-cap finder: measure caps on real training steps, keep the one with least energy per step.

The candidates are a ladder of caps 25 W apart (Zeus's grid), from each board's limit at
start down to its minimum limit (or a higher floor, ``min_watts``). The finder is a state
machine over optimizer steps, one state object at a time, each holding only its own
fields (as Zeus's ``GlobalPowerLimitOptimizer`` does):

* `Ready`: before the first step;
* `Warmup`: ``warmup_steps`` at the limit in force before the first phase;
* `Settling`: a new cap is in force; ``settle_steps`` are let pass before measuring;
* `Measuring`: one cap's phase: a timestamp per step, a mark every few steps (sub-windows
  whose energy the meter fixes from its readings once a reading past them exists);
* `Waiting`: the next decision needs a phase's energy that the meter has not fixed yet;
* `Done`: the cap kept is in force (or the search was abandoned).

Which cap to measure next, for how many steps, and which to keep is decided by
`CapSearch` (energy_core/power/finder/search.py): a sweep of the ladder, re-checks of the
verdicts the noise leaves open, and a choice made with a stated confidence.

Cost: the whole search (warm-up included) stays under a third of the steps Zeus's
``GlobalPowerLimitOptimizer`` profiles with its defaults (10 warm-up + 40 profiled steps
per 25 W limit): 149 steps where Zeus takes 450 on a 100-300 W board (for following the
grid, ``partner``: one sweep phase more, with its settling steps and the wait for its
energy). On the training
thread `CapFinder.on_step` is an integer comparison while warming up, settling or done,
and a clock read while measuring; nothing here calls NVML except through
`PowerLimits.set`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from energy_core.devices import DeviceError
from energy_core.output import keys
from energy_core.power.finder.estimate import Phase
from energy_core.power.finder.search import WAIT, ZEUS_STEPS_PER_LIMIT, CapSearch, Request, sweep_plan
from energy_core.power.follow.plan import Curve
from energy_core.power.limits import CappedGpu, PowerLimits
from energy_core.power.plan import cap_ladder
from energy_core.sampling.meter import EnergyMeter, Mark

WAIT_RESERVE = 2  # steps of the budget kept for the meter to fix the last phase's energy
MAX_WAIT_STEPS = 50  # a meter with no reading past a phase's end after this many steps ends the search
DEFAULT_MAX_SLOWDOWN = 0.1  # the search's limit unless given: at most 10% slower
SWEEP_SHARE = 0.7  # of the steps after the warm-up, for the sweep; the rest for re-checks
MIN_SWEEP_STEPS = 6
ENERGY_PRECISION = 0.035  # relative spread of a sweep phase's energy that the counter's resolution allows
WINDOWS = 4  # sub-windows per phase (energy of spans that leave out slow steps)
NEVER = 2**62


@dataclass
class Ready:
    """Before the first step: the next one starts the warm-up."""


@dataclass
class Warmup:
    """Steps at the limit in force before the first phase; their pace sizes the phases."""

    start_step: int
    start_t: float


@dataclass
class Settling:
    """A new cap is in force: the steps of a change pass before ``request`` is measured."""

    request: Request


@dataclass
class Measuring:
    """One phase: a timestamp per step, a mark at the end of each sub-window."""

    request: Request
    last_t: float
    window_steps: int
    times: list[float] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)


@dataclass
class Waiting:
    """The next decision needs energy the meter has not fixed yet; the cap in force stays."""

    until: int


@dataclass
class Done:
    """The search is over: ``chosen`` is in force (None: abandoned, the limits at start back)."""

    chosen: int | None
    failure: str = ""


State = Ready | Warmup | Settling | Measuring | Waiting | Done


@dataclass
class Pending:
    """A phase whose sub-windows' energy waits for the meter to fix their marks."""

    phase: Phase
    marks: list[Mark]


class CapFinder:
    """Finds the power cap that minimises energy per step within a slowdown limit.

    Args:
        limits: The node's `PowerLimits`, holding the boards to cap (already journalled).
        meter: A running meter that measures those GPUs (all its sources are summed).
        max_slowdown: Largest accepted rise in time per step, e.g. 0.1 for 10%.
        min_watts: Lowest cap tried per GPU (default: each board's minimum limit).
        warmup_steps: Steps before the first phase (at the limit in force).
        settle_steps: Steps let pass after each limit change before measuring.
        step_w: Spacing of the candidate caps, in W.
        max_steps: Step budget of the whole search; default: under a third of Zeus's.
        partner: For following the grid: before choosing, one sweep phase, even past the
            budget, at the rung just slower than the best, if unmeasured, for the curve only
            (`CapSearch`'s ``partner``).

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
        max_slowdown: float = DEFAULT_MAX_SLOWDOWN,
        min_watts: float | None = None,
        warmup_steps: int = 5,
        settle_steps: int = 2,
        step_w: float = 25.0,
        max_steps: int | None = None,
        partner: bool = False,
    ) -> None:
        self.limits, self.meter, self.max_slowdown = limits, meter, max_slowdown
        self.clock: Callable[[], float] = meter.clock
        self.warmup_steps, self.settle_steps = warmup_steps, settle_steps
        self.boards: list[CappedGpu] = list(limits.capped)
        # Rung 0 is the limits at start, in force already (even one outside the range a board reports); the
        # others are kept within each board's range, and a rung that range makes the same as one above is none.
        self.fractions: list[float] = []
        self.caps_mw: list[list[int]] = []
        for f in cap_ladder(self.boards, min_watts, step_w):
            caps = [int(round(f * b.previous_mw)) for b in self.boards]
            if self.caps_mw:
                caps = [min(b.limits.max_mw, max(b.limits.min_mw, mw)) for b, mw in zip(self.boards, caps)]
            if caps not in self.caps_mw:
                self.fractions.append(f)
                self.caps_mw.append(caps)
        self.zeus_steps = ZEUS_STEPS_PER_LIMIT * len(self.fractions)
        self.budget = max_steps if max_steps is not None else (self.zeus_steps - 1) // 3
        self.partner = partner
        self.search: CapSearch | None = None
        self.steps_used = 0
        self.resumed = False  # a checkpoint's search in progress goes on (`restore`)
        self.state: State = Done(None) if not self.boards or len(self.fractions) == 1 else Ready()
        self.pending: list[Pending] = []
        self.refused = ""  # why a change of cap did not take effect (the search then stops driving the boards)
        self._start = 0
        self._next = NEVER if self.done else -NEVER  # the first call starts the warm-up

    @property
    def done(self) -> bool:
        return isinstance(self.state, Done)

    @property
    def chosen(self) -> int | None:
        return self.state.chosen if isinstance(self.state, Done) else None

    @property
    def failure(self) -> str:
        return self.state.failure if isinstance(self.state, Done) else ""

    def cap_w(self, rung: int) -> float:
        """Sum of the boards' caps at ``rung``, in W."""
        return sum(self.caps_mw[rung]) / 1000.0

    def in_force(self) -> int | None:
        """The rung whose caps are in force, if any."""
        applied = [b.applied_mw for b in self.boards]
        return next((r for r, caps in enumerate(self.caps_mw) if caps == applied), None)

    def put(self, rung: int) -> dict[str, float]:
        """Put ``rung``'s caps in force (one `PowerLimits.set` per board that changes);
        returns ``{"power/cap_w": W}`` in force.

        A change that does not take effect (the journal could not record it, an
        administrator changed the board's limit since, the limit was restored) stops the
        search and every later change (`refused` says why; a search not finished ends
        without a choice): the caps stay as they are, and the figure is theirs (nothing
        where no board is capped any more).

        Raises:
            DeviceError, PermissionError: the driver refused (see `PowerLimits.set`).
        """
        if self.refused:
            return self._in_force_now()
        for board, target in zip(self.boards, self.caps_mw[rung]):
            if board.applied_mw != target and (
                self.limits.set(board, target) != target or board not in self.limits.capped
            ):
                return self._refuse(f"the limit of {board.board.label} was not changed to {target / 1000:g} W")
        return {keys.CAP_W: self.cap_w(rung)}

    def _refuse(self, why: str) -> dict[str, float]:
        self.refused = why
        if not self.done:
            self.state, self._next = Done(None, why), NEVER
        return self._in_force_now()

    def _in_force_now(self) -> dict[str, float]:
        """``{"power/cap_w": W}`` of the caps this run has in force now (read back), {} for none."""
        held = [b.applied_mw for b in self.boards if b in self.limits.capped]
        return {keys.CAP_W: sum(held) / 1000.0} if held else {}

    # ------------------------------------------------------------------ the steps
    def on_step(self, step: int) -> dict[str, float] | None:
        """Call once after every optimizer step; returns ``{"power/cap_w": W}`` when the cap
        changed and when the search ends (with the cap kept)."""
        if step < self._next:
            return None
        try:
            return self._advance(step)
        except (DeviceError, PermissionError) as err:
            return self._abandon(f"setting a limit failed ({err})")

    def _abandon(self, why: str) -> dict[str, float] | None:
        """End the search without a choice, with the limits at start back in force if possible."""
        self.state, self._next = Done(None, why), NEVER
        try:
            return self.put(0)
        except (DeviceError, PermissionError):  # `PowerLimits.restore` tries again at the end
            return None

    def _advance(self, step: int) -> dict[str, float] | None:
        state = self.state
        if isinstance(state, Measuring):
            now = self.clock()
            state.times.append(now - state.last_t)
            state.last_t = now
            self._next = step + 1
            done, left = len(state.times), state.request.steps - len(state.times)
            if left == 0 or (done % state.window_steps == 0 and left >= state.window_steps):  # `Phase.windows`
                state.marks.append(self.meter.mark())
            if left:
                return None
            self._end_phase(state)
            return self._ask(step)
        if isinstance(state, Ready):
            if not self.resumed:
                self._start = step
            else:  # a checkpoint's search: its steps so far, and this one (the first after the restart), count
                self._start = step - 1 - self.steps_used
                smallest = self.settle_steps + (self.search.sweep_steps if self.search else 2 * MIN_SWEEP_STEPS)
                if self.budget - (step - self._start) - WAIT_RESERVE < self.warmup_steps + smallest:
                    return self._ask(step)  # no room for a warm-up and a phase: it ends with what it measured
            self.state, self._next = Warmup(step, self.clock()), step + self.warmup_steps
            return None
        if isinstance(state, Warmup):
            if self.search is None:
                self._plan(step, state)
            return self._ask(step)
        if isinstance(state, Settling):
            self._measure(step, state.request)
            return None
        if isinstance(state, Waiting):
            if self._collect():
                return self._ask(step)
            if step >= state.until:
                return self._abandon(f"the meter gave no reading in {MAX_WAIT_STEPS} steps")
            self._next = step + 1
        return None

    def _plan(self, step: int, warmup: Warmup) -> None:
        """Size the sweep to the step budget: phases long enough for the energy counter to
        resolve (`ENERGY_PRECISION`) over every rung if they fit, else over fewer rungs."""
        step_s = max((self.clock() - warmup.start_t) / max(step - warmup.start_step, 1), 1e-9)
        rungs = len(self.fractions)
        room = SWEEP_SHARE * (self.budget - (step - self._start))
        fits = max(MIN_SWEEP_STEPS, int((room - (rungs - 1) * self.settle_steps) // (rungs + 1)))
        span_s = self.meter.sample_interval_s * math.sqrt(2 / 12) / ENERGY_PRECISION
        steps, stride = sweep_plan(rungs, room, fits, math.ceil(span_s / step_s), self.settle_steps)
        self.search = CapSearch(
            rungs,
            self.max_slowdown,
            steps,
            stride,
            self.settle_steps,
            resolution_s=self.meter.sample_interval_s,
            partner=self.partner,
        )

    def _measure(self, step: int, request: Request) -> None:
        window = max(1, request.steps // WINDOWS)
        self.state = Measuring(request, self.clock(), window, marks=[self.meter.mark()])
        self._next = step + 1

    def _end_phase(self, state: Measuring) -> None:
        phase = Phase(state.request.rung, state.times, state.window_steps)
        assert self.search is not None
        self.search.add(phase)
        self.pending.append(Pending(phase, state.marks))
        self._collect()

    def _collect(self) -> bool:
        """Fill in the energy of pending phases whose marks the meter has fixed; True when
        none is left pending."""
        still = []
        for pending in self.pending:
            if pending.marks[-1].joules is None:
                still.append(pending)
                continue
            values = [float(v.sum()) for v in self.meter.joules(*pending.marks)]  # a buffer lookup, no NVML
            pending.phase.joules = [b - a for a, b in zip(values, values[1:])]
        self.pending = still
        return not still

    def _ask(self, step: int) -> dict[str, float] | None:
        """Start the phase the search asks for, wait for the meter, or end the search."""
        if self.search is None:  # a checkpoint's search that had measured nothing, with no room left
            self.search = CapSearch(len(self.fractions), self.max_slowdown, MIN_SWEEP_STEPS, partner=self.partner)
        self._collect()
        self.steps_used = step - self._start
        request = self.search.next(self.budget - self.steps_used - WAIT_RESERVE)
        if request is WAIT:
            until = self.state.until if isinstance(self.state, Waiting) else step + MAX_WAIT_STEPS
            self.state, self._next = Waiting(until), step + 1
            return None
        if request is None:
            chosen = self.search.chosen if self.search.chosen is not None else 0
            figures = self.put(chosen)
            if not self.refused:  # else ended without a choice: the caps stay as they are
                self.state, self._next = Done(chosen), NEVER
            return figures
        if self.in_force() == request.rung:  # in force already: no settling
            self._measure(step, request)
            return None
        self.state, self._next = Settling(request), step + self.settle_steps
        return self.put(request.rung)

    # ------------------------------------------------------------------ the curve, and checkpoints
    def curve(self) -> tuple[Curve, float] | None:
        """The measured rungs' seconds and joules per step, for following the grid, and the
        seconds per step at the limit at start; None before the search has measured energy.

        A rung's seconds are its central figure, with its standard error beside it (rung 0's:
        the reference's own): a plan made on the upper ends would shun a rung measured a
        little slow and never run it long enough to learn better, and the follower holds the
        doubt in its reserve instead.
        """
        search = self.search
        if search is None or 0 not in search.estimates or search.estimates[0].energy is None:
            return None
        reference, reference_spread = search.estimates[0].time
        rungs, seconds, spreads, joules = [], [], [], []
        for rung in sorted(search.estimates):
            energy = search.estimates[rung].energy
            if energy is None:
                continue
            verdict = search.verdict(rung)
            rungs.append(rung)
            seconds.append(reference * (1 + verdict.slowdown))
            spreads.append(reference * verdict.slowdown_spread if rung else reference_spread)
            joules.append(energy[0])
        return Curve(tuple(rungs), tuple(seconds), tuple(joules), tuple(spreads)), reference

    def state_dict(self, step: int | None = None) -> dict[str, Any]:
        """The search's phases and choice: a finished search is not run again after a resume,
        and one in progress goes on from its measured phases (``step``: the optimizer steps done
        now, for the steps it has used; a phase whose energy is not known yet is measured again)."""
        search = self.search
        phases = [] if search is None else [
            {"rung": p.rung, "times": p.times, "window_steps": p.window_steps, "joules": p.joules}
            for e in search.estimates.values() for p in e.kept + e.set_aside
            if self.done or p.joules is not None
        ]  # fmt: skip
        begun = not isinstance(self.state, Ready)  # `_start` is set
        used = max(step - self._start, 0) if begun and not self.done and step is not None else self.steps_used
        return {
            "fractions": [round(f, 6) for f in self.fractions],
            "chosen": self.chosen,
            "steps": used,
            "sweep_steps": search.sweep_steps if search is not None else MIN_SWEEP_STEPS,
            "stride": search.stride if search is not None else 1,
            "phases": phases,
        }

    @staticmethod
    def _check_figures(search: CapSearch) -> None:
        """Work out every figure a stored search gives (its verdicts), so that one that cannot be
        worked out refuses the state here rather than at a step."""
        for rung in search.estimates:
            search.verdict(rung)

    def restore(self, state: Any) -> bool:
        """Take a checkpoint's search: a finished one's choice is put in force; one in progress
        goes on from its phases at the next step (after a warm-up), its steps so far counted
        against the budget. False (and nothing changed) when it does not fit this ladder or is
        malformed."""
        try:
            if [round(f, 6) for f in self.fractions] != list(state["fractions"]) or self.done:
                return False
            chosen = None if state["chosen"] is None else int(state["chosen"])
            steps = int(state.get("steps", 0))
            search = CapSearch(
                len(self.fractions), self.max_slowdown, int(state["sweep_steps"]), int(state.get("stride", 1)),
                self.settle_steps, resolution_s=self.meter.sample_interval_s, partner=self.partner,
            )  # fmt: skip
            for phase in state["phases"]:
                search.add(_stored_phase(phase, len(self.fractions)))
            if (chosen is not None and chosen not in search.estimates) or not 0 <= steps:
                return False
            if chosen is None and not isinstance(self.state, Ready):
                return False  # searching already
            self._check_figures(search)
        except (KeyError, TypeError, ValueError, IndexError, ArithmeticError):
            return False
        if chosen is None:  # in progress: it goes on, measured or not, its steps so far used
            self.search = search if 0 in search.estimates else None
            self.steps_used, self.resumed = steps, True
            return True
        search.chosen, search.why = chosen, "kept from the checkpoint"
        self.search, self.steps_used = search, steps
        try:
            self.put(chosen)
        except (DeviceError, PermissionError) as err:  # as in a search: said, and training goes on
            self._refuse(f"setting a limit failed ({err})")
        if not self.refused:  # else ended without a choice: the caps stay as they are
            self.state, self._next = Done(chosen), NEVER
        return True

    # ------------------------------------------------------------------ reporting
    def table(self) -> list[dict[str, Any]]:
        """The measured candidates, highest cap first, for the record and the messages."""
        search = self.search
        if search is None or 0 not in search.estimates:
            return []
        rows = []
        for rung in sorted(search.estimates):
            estimate = search.estimates[rung]
            (s, s_spread), energy = estimate.time, estimate.energy
            j, j_spread = energy if energy is not None else (math.nan, math.nan)
            verdict = search.verdict(rung)
            rows.append(
                {
                    "fraction": round(self.fractions[rung], 4),
                    "cap_w": self.cap_w(rung),
                    "s_per_step": s,
                    "s_spread": s_spread,
                    "j_per_step": j,
                    "j_spread": j_spread,
                    "slowdown": verdict.slowdown,
                    "saving": verdict.saving if verdict.saving is not None else math.nan,
                    "within_confidence": verdict.within,
                    "steps": estimate.steps,
                    "phases": estimate.phases,
                    "set_aside": len(estimate.set_aside),
                    "left_out": estimate.left_out,
                    "within": search.within(rung),
                    "chosen": rung == self.chosen,
                }
            )
        return rows

    def choice(self) -> dict[str, Any]:
        """The choice, why, and how sure, for the run record."""
        chosen = self.chosen
        search = self.search
        verdict = search.verdict(chosen) if search is not None and chosen is not None and search.estimates else None
        return {
            "cap_w": None if chosen is None else self.cap_w(chosen),
            "caps_w": None if chosen is None else [mw / 1000 for mw in self.caps_mw[chosen]],
            "fraction": None if chosen is None else round(self.fractions[chosen], 4),
            "why": search.why if search is not None and chosen is not None else self._unfinished(),
            "confidence": None if verdict is None else verdict.text(self.max_slowdown),
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
        return ", ".join(f"{b.board.label} {c:g} W" for b, c in zip(self.boards, caps))

    def summary(self) -> str:
        """The choice, why and how sure, then the table of candidates with their spreads (console)."""
        rows = self.table()
        chosen, search = self.chosen, self.search
        if chosen is None or search is None or not search.estimates:
            lines = [
                f"Power-cap search did not finish ({self._unfinished()}) after {self.steps_used} steps; "
                f"{len(rows)} caps measured."
            ]
        else:
            lines = [
                f"Power-cap search chose {self._caps_text(chosen)} ({self.fractions[chosen]:.0%} of the limit at "
                f"start): {search.verdict(chosen).text(self.max_slowdown)}. Why: {search.why}. "
                f"{len(search.history)} phases, {self.steps_used} steps (Zeus's defaults: {self.zeus_steps})."
            ]
        if rows:
            lines.append("      cap W     ms/step +-        J/step +-    time  energy  phases")
        for r in rows:
            mark = "*" if r["chosen"] else (" " if r["within"] else "x")
            aside = [f"{r['set_aside']} set aside", f"{r['left_out']} step{'s' * (r['left_out'] > 1)} left out"]
            lines.append(
                f"  {mark} {r['cap_w']:7g}  {1000 * r['s_per_step']:8.4g} {1000 * r['s_spread']:<6.2g}"
                f" {r['j_per_step']:8.4g} {r['j_spread']:<6.2g} {r['slowdown']:+6.1%} {0.0 - r['saving']:+6.1%}"
                f"  {r['phases']}" + "".join(f" ({a})" for a in aside if not a.startswith("0 "))
            )
        if rows:
            lines.append(
                "  (* chosen, x not within the limit with 95% confidence; +- is the spread of the mean; "
                "cap W of all GPUs)"
            )
        return "\n".join(lines)


def _stored_phase(phase: Any, rungs: int) -> Phase:
    """A checkpoint's phase, as measured: a rung of the ladder, steps of finite positive seconds, and
    (when known) the finite joules >= 0 of each of its sub-windows. ValueError for any other."""
    times = [float(t) for t in phase["times"]]
    joules = None if phase["joules"] is None else [float(j) for j in phase["joules"]]
    made = Phase(int(phase["rung"]), times, int(phase["window_steps"]), joules)
    if not 0 <= made.rung < rungs or made.window_steps < 1 or not times:
        raise ValueError("a phase off the ladder, or of no steps")
    if not all(math.isfinite(t) and t > 0 for t in times):
        raise ValueError("a step of seconds that no step takes")
    if joules is not None and (
        len(joules) != len(made.windows) or not all(math.isfinite(j) and j >= 0 for j in joules)
    ):
        raise ValueError("joules that are not one figure >= 0 per sub-window")
    return made
