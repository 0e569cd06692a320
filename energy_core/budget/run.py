"""BudgetRun: one budget in one training run, for every framework adapter.

It watches a tracker (a monitor's, shared, or its own, built only when there is no
monitor: `SharedRun`), builds the `BudgetGuard` once the run's length is known, keeps
the budget's checkpoint state and ends its own tracker with the right status. Adapters
only translate hooks: when the fit starts, when a step ends, when to review, how to stop.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import Unpack

from energy_core.accounting.steps import StepGate
from energy_core.budget.guard import BudgetAction, BudgetGuard, check_state
from energy_core.budget.rule import BudgetRule
from energy_core.options import MeasureArgs, MeasureOptions
from energy_core.sampling.meter import Mark
from energy_core.tracker import EnergyTracker
from energy_core.tracker_share import SharedRun

RULE_ARGS = ("max_kwh", "max_co2e_kg", "max_cost", "forecast")


class BudgetArgs(MeasureArgs, total=False):
    """Keyword arguments of every budget: the limits (see `BudgetRule`) and the measurement
    arguments (see `MeasureOptions`), used when no monitor's measurements can be shared."""

    max_kwh: float | None
    max_co2e_kg: float | None
    max_cost: float | None
    forecast: str


class BudgetRun(SharedRun):
    """A budget's part in one run.

    Args:
        rule: The limits.
        options: How to measure when no monitor's tracker can be shared.

    Examples:
        >>> run = BudgetRun(BudgetRule(max_kwh=1.0), MeasureOptions())
        >>> notices = run.bind(None, Ranks(), step=0)           # doctest: +SKIP
        >>> action = run.begin(0, total_steps=1000, epoch_steps=100)   # doctest: +SKIP
    """

    def __init__(self, rule: BudgetRule, options: MeasureOptions) -> None:
        super().__init__(options)
        self.rule = rule
        self.args: dict[str, Any] = {}
        self.guard: BudgetGuard | None = None
        self._saved: dict[str, Any] = {}
        self._fit: Mark | None = None  # the fit it began in (`EnergyTracker.fit_start`)
        self._steps = StepGate()  # a repeated step (a micro-batch's end) is none

    @classmethod
    def from_args(cls, owner: str, **args: Unpack[BudgetArgs]) -> BudgetRun:
        """Validate a budget's keyword arguments (limits and measurement options) into a run.

        Raises:
            TypeError, ValueError: naming the argument, for any invalid value.
        """
        given = dict(args)
        rule = BudgetRule(**{k: given.pop(k) for k in RULE_ARGS if k in given})  # type: ignore[arg-type]
        run = cls(rule, MeasureOptions.of(owner, given))
        run.args = {
            "max_kwh": rule.max_kwh,
            "max_co2e_kg": rule.max_co2e_kg,
            "max_cost": rule.max_cost,
            "forecast": rule.forecast,
            **run.options.as_args(),
        }
        return run

    @property
    def begun(self) -> bool:
        """Whether `begin` ran for the tracker's fit in progress (a later fit begins it again)."""
        return self.guard is not None and self.tracker is not None and self._fit is self.tracker.fit_start

    @property
    def active(self) -> bool:
        """Watching, and not yet stopped."""
        return self.guard is not None and self.guard.stopped is None

    def begin(
        self, step: int, total_steps: float | None, epoch_steps: float | None, epochs_done: int = 0
    ) -> BudgetAction | None:
        """Once every callback has started and the run's length is known: a resumed run whose
        budget is already spent stops at once (on every rank: a collective in a job).

        Args:
            step: The optimizer step training starts at.
            total_steps: Optimizer steps of the whole run (None or inf: no forecast).
            epoch_steps: Optimizer steps per epoch, if known.
            epochs_done: Epochs finished when training starts (a resumed run's; see `BudgetGuard.begin`).
        """
        assert self.tracker is not None, "bind() first"
        self.guard = BudgetGuard(self.rule, self.tracker, total_steps, epoch_steps)
        self.guard.load_state_dict(self._saved.get("guard", {}))
        self._fit = self.tracker.fit_start  # this fit's: a later fit's pause ignores it
        self._steps.begin(step)
        self.tracker.link.stops[id(self)] = self  # a pause ends on it (`TimeShiftRun`)
        return self.guard.begin(step, self.tracker.resumed_totals, self._ranks.agree, epochs_done)

    def stop_asked(self) -> bool:
        """Whether this fit's limit is spent (one flag read; a time shift's pause ends on it)."""
        return self.begun and (self.guard.stopped is not None or self.guard.crossed())  # type: ignore[union-attr]

    def check(self, step: int) -> BudgetAction | None:
        """After each step, one flag read. A multi-process job decides at its reviews instead,
        where every rank takes part. A ``step`` already checked is ignored: with gradient
        accumulation, the ends of the micro-batches after an optimizer step are no step's end (a
        stop there would throw their work away)."""
        if not self._steps.new(step):
            return None
        return self.stop_if_spent(step)

    def stop_if_spent(self, step: int) -> BudgetAction | None:
        """The stop at ``step`` once the sampler's watch has seen the limit reached (one flag read; a
        single process only): what `check` does at a step's end, and a time shift after a pause."""
        if not self.active or self._ranks.world_size > 1 or not self.guard.crossed():  # type: ignore[union-attr]
            return None
        return self.guard.stop_now(step, self.tracker.measured())  # type: ignore[union-attr]

    def review(self, step: int, epochs_done: int) -> tuple[dict[str, float], BudgetAction | None]:
        """At a logging step or epoch end (every rank): remaining budget, forecast, what to do.

        The guard judges the job's totals measured now, up to the newest reading: a sum over the
        ranks (a collective every rank reaches at this step) whatever the monitor summed last, so
        that a review never judges an older window's figures (in HF the budget reviews in
        ``on_step_end``, before the monitor's window in ``Trainer.log``).
        """
        if self.guard is None or self.tracker is None:
            return {}, None
        # The flag first, then the totals: a reading that raises the flag in between is then in the
        # totals (a stop tells a total that reached the limit), or is left to the next check or review.
        crossed = self.guard.crossed()
        return self.guard.review(step, epochs_done, self.tracker.measured(), self._ranks.agree, crossed)

    def state_dict(self) -> dict[str, Any]:
        """The guard's state and, measuring alone, the totals."""
        return self.with_totals({"guard": self.guard.state_dict() if self.guard else self._saved.get("guard", {})})

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Keep a checkpoint's state for `bind`/`begin` (or apply it, if restored after fit start).

        Raises:
            TypeError: naming the stored field of the wrong type (a tampered or foreign state),
                here, when it is loaded, rather than inside the training loop.
            ValueError: naming an unknown key, or a wrong figure of the stored totals.
        """
        if state is not None and not isinstance(state, dict):
            raise TypeError(f"stored budget state must be a mapping, got {type(state).__name__}")
        saved = dict(state or {})
        unknown = sorted(str(k) for k in saved if k not in ("guard", "tracker"))
        if unknown:
            raise ValueError(f"stored budget state has unknown keys {unknown}; known: guard, tracker")
        check_state(saved.get("guard"))
        self._saved = saved
        self.load_totals(self._saved)
        if self.guard is not None:
            self.guard.load_state_dict(saved.get("guard") or {})


class HasBudgetRun:
    """What a budget callback shows of its `BudgetRun` (both framework adapters derive from it)."""

    run: BudgetRun

    @property
    def guard(self) -> BudgetGuard | None:
        """The budget's `BudgetGuard` once training has started (None before)."""
        return self.run.guard

    @property
    def tracker(self) -> EnergyTracker | None:
        """The tracker it watches: a monitor's, or its own (None before training)."""
        return self.run.tracker
