"""BudgetGuard: a `BudgetRule` watching a running `EnergyTracker`; stop when spent, forecast the whole run.

* crossing a limit is noticed by the sampler thread (a listener on every reading), so
  the per-step check on the training thread is one flag read (`BudgetGuard.crossed`);
* at every logging step and epoch end, `BudgetGuard.review` judges the totals it is given
  (the job's, measured up to the newest reading: `EnergyTracker.measured`) and projects the
  total for the whole run, ``spent + rate x steps left``, where the rate (kWh per optimizer
  step, validation, epoch boundaries and start-up included) is measured from the fit's
  start and so improves as the run goes; once enough of the run has been seen by this fit
  (an epoch, after a resume an epoch's worth of steps since it; or, when the run has fewer
  than two epochs, 10% of its steps and at least 10) it acts on the projection per
  ``forecast``: ``"warn"``, ``"stop"`` or ``"off"``. A limit already reached at a review is a
  stop, never a forecast's warning.

Every message and decision rests on one figure, the totals judged, and says what it is:
*measured* (up to the newest reading, never extrapolated, so the totals the summary
reports later are never smaller) or *projected* (the forecast). Figures are shown in the
units that fit (`energy_core.output.units_text`), rounded as the summary rounds them.

Adapters turn the returned `BudgetAction` into the framework's stop and message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from energy_core.accounting.figures import RunTotals
from energy_core.budget.rule import BudgetRule
from energy_core.output import keys
from energy_core.output import units_text as show
from energy_core.output.record import BUDGET
from energy_core.tracker import EnergyTracker
from energy_core.units import J_PER_KWH

MIN_FORECAST_STEPS = 10
FORECAST_FRACTION = 0.1  # of the run's steps, before a forecast in a run of one long epoch
LONG_EPOCH_FRACTION = 0.5  # an epoch at least this share of the run counts as long


def needs_price(rule: BudgetRule, priced: bool) -> None:
    """Refuse a cost limit without a price (``priced``: the run has ``price_per_kwh``).

    Raises:
        ValueError: ``max_cost`` is set and nothing prices the run.
    """
    if rule.max_cost is not None and not priced:
        raise ValueError(
            "max_cost needs a price: give price_per_kwh (to the monitor, the loop, or the budget measuring alone)"
        )


BUDGET_STOP = "budget-stop"  # the summary's status of a fit the budget ended (`TrackerLink.stop_by`)


@dataclass(frozen=True)
class BudgetAction:
    """What an adapter must do: ``kind`` is ``"stop"`` or ``"warn"``; ``reason`` says why, with figures."""

    kind: str
    reason: str


class BudgetGuard:
    """A `BudgetRule` applied to a running tracker.

    Args:
        rule: The limits.
        tracker: The running tracker (shared with a monitor, or the budget's own).
        total_steps: Optimizer steps the run will take (None or inf: no forecast).
        epoch_steps: Optimizer steps per epoch, if known: the forecast waits for the first
            epoch unless an epoch is half the run or more.

    Metrics (from `review`): ``budget/remaining_kwh`` (binding limit minus the total; absent while
    no limit binds in kWh: a CO2e or cost limit alone at a factor of 0), ``budget/forecast_kwh``
    (projected total at the end of the run, once enough is seen).
    """

    def __init__(
        self, rule: BudgetRule, tracker: EnergyTracker, total_steps: float | None, epoch_steps: float | None = None
    ) -> None:
        self.rule = rule
        self.tracker = tracker
        self.total_steps = total_steps if total_steps and math.isfinite(total_steps) else None
        self.epoch_steps = epoch_steps
        needs_price(rule, tracker.factors.price is not None)
        self.limit_kwh = self._limit_now(RunTotals())
        self.stopped: BudgetAction | None = None
        self.forecast_warned = False
        self._event = tracker.watch_limits(rule.reached)
        self._reference: tuple[int, float] | None = None  # (first step, kWh spent before this fit)
        self._paused_kwh = 0.0  # a time shift's paused energy at the reference (`TrackerLink.paused_kwh`)
        self._first_step: int | None = None
        self._first_epochs = 0  # epochs finished when this fit started
        self.forecast_kwh: float | None = None

    def crossed(self) -> bool:
        """True once the sampler has seen the total reach the limit (one flag read)."""
        return self._event.is_set()

    @staticmethod
    def _spent(totals: RunTotals) -> tuple[float, float, float]:
        return totals.total_kwh, totals.co2e_kg, totals.cost

    def _limit_now(self, totals: RunTotals) -> float:
        return self.rule.limit_kwh(self._spent(totals), self.tracker.per_kwh_now())

    def _figures(self, totals: RunTotals) -> str:
        cost = f", cost {totals.cost:.4g}" if self.tracker.factors.price is not None else ""
        return f"{show.energy(totals.total_j)}, {show.mass(totals.co2e_kg)} CO2e{cost}"

    def begin(
        self, step: int, totals: RunTotals, agree: Callable[[bool], bool] = bool, epochs_done: int = 0
    ) -> BudgetAction | None:
        """At fit start: a run resumed after its budget was spent stops at once.

        Args:
            step: The optimizer step training starts at.
            totals: The job's totals in the checkpoint resumed from (`EnergyTracker.resumed_totals`;
                zero in a fresh run): what "already spent before this run started" judges.
            agree: In a multi-process job, True on every rank if the flag is True on any
                (a collective all ranks reach); the identity in a single process.
            epochs_done: Epochs finished when training starts (a resumed run's): the forecast
                waits for an epoch of this fit, not of the checkpoint's.
        """
        self._first_epochs = epochs_done
        action = self._begin(step, totals)
        if agree(action is not None) and action is None:  # another rank's total is spent
            action = self.stop_now(step, totals)
        return action

    def _begin(self, step: int, totals: RunTotals) -> BudgetAction | None:
        self._first_step = step
        # The rate is measured from the fit's start (start-up included: a slight, safe
        # over-estimate), leaving out only what a resumed checkpoint had already spent.
        self._reference = (step, self.tracker.resumed_kwh)
        # From the fit's start too: a time shift that began before the budget may have paused already.
        self._paused_kwh = self.tracker.link.fit_start_paused_kwh
        self.limit_kwh = self._limit_now(totals)
        # Only the checkpoint's totals: energy this fit spent before its first step (a slow start) is
        # no checkpoint's, and the next check or review stops on it, saying so.
        if not self.rule.reached(*self._spent(totals)):
            return None
        self.stopped = BudgetAction(
            "stop",
            f"Energy budget ({self.rule.describe()}) was already spent before this run started "
            f"({self._figures(totals)} measured in the checkpoint): stopping at once.",
        )
        self.tracker.link.stop_by(BUDGET_STOP)
        return self.stopped

    def stop_now(self, step: int, totals: RunTotals) -> BudgetAction:
        """The action for a crossed limit (when `crossed` turns True, or the totals judged reach it)."""
        self.stopped = BudgetAction(
            "stop",
            f"Energy budget spent at step {step}: {self._figures(totals)} measured (up to the newest reading) "
            f"reached the limit, {self.rule.describe()}. Stopping at the end of this step; the summary's total "
            "adds what the rest of the run uses.",
        )
        self._record("stop", step, totals)
        self.tracker.link.stop_by(BUDGET_STOP)
        return self.stopped

    def review(
        self,
        step: int,
        epochs_done: int,
        totals: RunTotals,
        agree: Callable[[bool], bool] = bool,
        crossed: bool | None = None,
    ) -> tuple[dict[str, float], BudgetAction | None]:
        """Remaining budget and forecast at a logging step or epoch end, and what to do.

        Args:
            step: The optimizer step.
            epochs_done: Epochs finished.
            totals: The job's totals, measured up to the newest reading (`EnergyTracker.measured`): what
                is judged, and what the messages tell.
            agree: See `begin`: a limit reached, or a forecast stop, on any rank stops every rank at
                this step.
            crossed: `crossed` as read *before* ``totals`` were (None: read now). The sampler raises the
                flag after the reading that crossed, so totals read after the flag include that reading;
                a flag read after the totals may rest on a reading they lack, and a stop on it would tell
                (and log) a total short of the limit. `BudgetRun.review` reads the flag first.
        """
        crossed = self.crossed() if crossed is None else crossed
        spent = crossed or self.rule.reached(*self._spent(totals))
        # A limit already reached is a stop, never a forecast's warning in its place.
        metrics, action = self._review(step, epochs_done, totals, act=not spent)
        if crossed and metrics.get(keys.BUDGET_REMAINING, 0.0) > 0.0:
            # The watch sums the same reading's joules in another order (per source, not per kind and
            # rank): the two may differ in the last bits. The limit the watch saw reached is reached.
            metrics[keys.BUDGET_REMAINING] = 0.0
        forecast_stop = action is not None and action.kind == "stop"
        if agree(spent or forecast_stop) and not forecast_stop and self.stopped is None:
            action = self.stop_now(step, totals)
        return metrics, action

    def _enough(self, step: int, epochs_done: int) -> bool:
        """Whether this fit has seen enough of the run to project it: an epoch of its own (after a
        resume, an epoch's worth of steps since it, not the checkpoint's epochs), or, in a run whose
        epochs are each at least half of it (two epochs or fewer), 10% of its steps (at least 10)."""
        seen = step - (self._first_step or 0)
        whole_epoch = epochs_done - self._first_epochs >= 1 and (self.epoch_steps is None or seen >= self.epoch_steps)
        long_epochs = self.epoch_steps is None or (
            self.total_steps is not None and self.epoch_steps >= LONG_EPOCH_FRACTION * self.total_steps
        )
        return whole_epoch or (
            long_epochs
            and self.total_steps is not None
            and seen >= max(MIN_FORECAST_STEPS, FORECAST_FRACTION * self.total_steps)
        )

    def _review(
        self, step: int, epochs_done: int, totals: RunTotals, act: bool = True
    ) -> tuple[dict[str, float], BudgetAction | None]:
        spent = totals.total_kwh
        self.limit_kwh = self._limit_now(totals)  # CO2e and cost limits follow the factors in force
        # A CO2e or cost limit at an intensity or price of 0 is no limit in kWh: nothing to log (not inf).
        metrics = {keys.BUDGET_REMAINING: self.limit_kwh - spent} if math.isfinite(self.limit_kwh) else {}
        if self._reference is None:
            self._reference, self._paused_kwh = (step, spent), self.tracker.link.paused_kwh
        ref_step, ref_kwh = self._reference
        if self.total_steps is None or step <= ref_step or not self._enough(step, epochs_done):
            return metrics, None
        # A time shift's pauses are spent (in ``spent``) but are no part of a step: kept out of the rate.
        paused = max(0.0, self.tracker.link.paused_kwh - self._paused_kwh)
        rate = max(0.0, spent - ref_kwh - paused) / (step - ref_step)
        self.forecast_kwh = spent + rate * max(0.0, self.total_steps - step)
        metrics[keys.BUDGET_FORECAST] = self.forecast_kwh
        if not act or self.rule.forecast == "off" or self.forecast_kwh <= self.limit_kwh or self.stopped:
            return metrics, None
        in_kwh = "" if self.rule.only_energy else f" (= {show.energy_kwh(self.limit_kwh)} at the factors in force)"
        reason = (
            f"Energy forecast at step {step}: the whole run ({self.total_steps:g} steps) is projected to use "
            f"{show.energy_kwh(self.forecast_kwh)}, over the budget of {self.rule.describe()}{in_kwh}; "
            f"measured so far: {self._figures(totals)}."
        )
        if self.rule.forecast == "stop":
            self.stopped = BudgetAction("stop", reason + " Stopping now (forecast='stop').")
            self._record("forecast-stop", step, totals)
            self.tracker.link.stop_by(BUDGET_STOP)
            return metrics, self.stopped
        if self.forecast_warned:
            return metrics, None
        self.forecast_warned = True
        self._record("forecast-warn", step, totals)
        return metrics, BudgetAction("warn", reason)

    def _record(self, event: str, step: int, totals: RunTotals) -> None:
        measured = {
            keys.TOTAL_KWH: totals.total_kwh,
            keys.err(keys.TOTAL_KWH): totals.total_err / J_PER_KWH,
            keys.CO2E_KG: totals.co2e_kg,
            keys.err(keys.CO2E_KG): totals.co2e_err,
        }
        if self.tracker.factors.price is not None:
            measured[keys.COST] = totals.cost
            measured[keys.err(keys.COST)] = totals.cost_err
        self.tracker.write_record(
            BUDGET, event=event, step=step, limit_kwh=self.limit_kwh, forecast_kwh=self.forecast_kwh, metrics=measured
        )

    def state_dict(self) -> dict[str, Any]:
        return {"forecast_warned": self.forecast_warned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a checkpoint's state (checked by `check_state` when it was loaded)."""
        self.forecast_warned = bool(check_state(state).get("forecast_warned", False))


def check_state(state: Any) -> dict[str, Any]:
    """A stored guard state (a checkpoint's, or ``trainer_state.json``'s: untrusted), checked.

    Raises:
        TypeError: naming the stored field that has the wrong type (its type only, never its
            content).
        ValueError: naming the keys it does not know (a foreign or newer state).
    """
    if state is None:
        return {}
    if not isinstance(state, dict):
        raise TypeError(f"stored budget state: guard must be a mapping, got {type(state).__name__}")
    unknown = sorted(str(k) for k in state if k != "forecast_warned")
    if unknown:
        raise ValueError(f"stored budget state: guard has unknown keys {unknown}; known: forecast_warned")
    warned = state.get("forecast_warned", False)
    if not isinstance(warned, bool):
        raise TypeError(f"stored budget state: forecast_warned must be True or False, got {type(warned).__name__}")
    return state
