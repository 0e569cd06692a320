"""TargetRun: one target in one training run, for every framework adapter and `EnergyLoop`.

At the end of each evaluation the adapter hands over the monitored metric's value; the
run reads what training has cost so far (energy, CO2e, time since the fit started,
checkpoints and every evaluation included: validation is part of what reaching a quality
costs), and decides:

* the first evaluation whose value reaches the target gives ``target/energy_kwh``,
  ``target/co2e_kg``, ``target/seconds`` and ``target/step``, once, and with ``stop`` ends
  training there;
* with ``min_gain_per_kwh``, every evaluation gives ``target/gain_per_kwh``, the metric's
  improvement per kWh over the last ``patience`` evaluations, and training stops when it
  falls below the limit (diminishing returns).

Every evaluation writes a ``target`` line to the run record (the metric against the
energy: what `energy-report` plots). Every rank takes the same decision (`Ranks.agree`),
and the evaluations seen survive a checkpoint resume, so a target reached before it is not
reported twice. The tracker is a monitor's or the target's own (`TrackerShare`).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from typing_extensions import Unpack

from energy_core import checks
from energy_core.accounting.ranks import Ranks
from energy_core.notices import Notice
from energy_core.options import MeasureArgs, MeasureOptions
from energy_core.output import keys
from energy_core.output import units_text as show
from energy_core.output.record import TARGET
from energy_core.target.rule import TargetRule, metric_name
from energy_core.tracker import EnergyTracker
from energy_core.tracker_share import SharedRun
from energy_core.units import MAX_CO2E_KG, MAX_COUNT, MAX_KWH, MAX_SECONDS

TARGET_STOP = "target-stop"  # the summary's status of a fit the target ended (`TrackerLink.stop_by`)
RULE_ARGS = ("mode", "stop", "min_gain_per_kwh", "patience")
# The record line's ``event``: an evaluation, the one that first reached the target, the one
# whose gain per kWh stopped training.
EVALUATION, REACHED, DIMINISHING = "evaluation", "reached", "diminishing"
EVALUATION_KEYS = ("step", "value", "kwh", "co2e_kg", "seconds")  # what `Evaluation.to_state` stores


class TargetArgs(MeasureArgs, total=False):
    """Keyword arguments of every target after the metric and its value (see `TargetRule`),
    and the measurement arguments (see `MeasureOptions`), used when no monitor's measurements
    can be shared."""

    mode: str
    stop: bool
    min_gain_per_kwh: float | None
    patience: int


@dataclass(frozen=True)
class Evaluation:
    """One evaluation a target watched: the metric's value (None: not logged, or not a
    finite number) and what the run had cost by its end (the job's, checkpoints included;
    energy and CO2e None before the sampler could give a figure)."""

    step: int
    value: float | None
    kwh: float | None
    co2e_kg: float | None
    seconds: float

    def figures(self) -> dict[str, float]:
        """``target/energy_kwh``, ``target/co2e_kg`` (where resolved), ``target/seconds``, ``target/step``."""
        figures = {keys.TARGET_SECONDS: self.seconds, keys.TARGET_STEP: float(self.step)}
        if self.kwh is not None and self.co2e_kg is not None:
            figures |= {keys.TARGET_KWH: self.kwh, keys.TARGET_CO2E: self.co2e_kg}
        return figures

    def to_state(self) -> dict[str, Any]:
        return {"step": self.step, "value": self.value, "kwh": self.kwh, "co2e_kg": self.co2e_kg,
                "seconds": self.seconds}  # fmt: skip

    @classmethod
    def from_state(cls, state: Any) -> Evaluation:
        """An evaluation from a checkpoint.

        Raises:
            TypeError, ValueError: naming the stored field that is missing or wrong.
        """
        if not isinstance(state, dict):
            raise TypeError(f"stored target state: an evaluation must be a mapping, got {type(state).__name__}")
        if set(state) != set(EVALUATION_KEYS):  # every key to_state writes, no other: a foreign state is refused
            missing, unknown = (
                [k for k in EVALUATION_KEYS if k not in state],
                sorted(set(map(str, state)) - set(EVALUATION_KEYS)),
            )
            raise ValueError(f"stored target state: an evaluation lacks {missing} or has unknown keys {unknown}; "
                             f"its keys are {', '.join(EVALUATION_KEYS)}")  # fmt: skip
        step = checks.integer("stored target state: step", state["step"], low=0)
        if step > MAX_COUNT:  # float(step) in `figures` would raise OverflowError in training
            raise ValueError(f"stored target state: step must be an integer >= 0 and <= {MAX_COUNT}, got {step!r}")
        return cls(
            step,
            checks.number("stored target state: value", state["value"], optional=True),
            _bounded("kwh", state["kwh"], MAX_KWH, optional=True),
            _bounded("co2e_kg", state["co2e_kg"], MAX_CO2E_KG, optional=True),
            _bounded("seconds", state["seconds"], MAX_SECONDS),
        )


def _bounded(name: str, value: Any, high: float, optional: bool = False) -> Any:
    """A stored figure: a finite number >= 0 and at most ``high`` (a physical bound of `energy_core.units`)."""
    number = checks.number(f"stored target state: {name}", value, low=0, optional=optional)
    if number is not None and number > high:
        raise ValueError(f"stored target state: {name} must be a finite number >= 0 and <= {high:g}, got {value!r}")
    return number


@dataclass(frozen=True)
class TargetOutcome:
    """What one evaluation gives an adapter.

    Args:
        metrics: The figures to log.
        notices: What to show (a target reached without stopping, a metric not logged).
        stop: Why to stop training, at the one evaluation that decides it (to show as a
            warning); None otherwise.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)
    stop: str | None = None


def as_value(value: Any) -> float | None:
    """A logged value as a float (a 0-d tensor or a numpy scalar too); None if it is not a
    finite number: a value that cannot be true is a gap, not a figure."""
    if value is None or isinstance(value, (bool, str)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):  # a tensor of several values, an object
        return None
    return number if math.isfinite(number) else None


class TargetRun(SharedRun):
    """A target's part in one run.

    Args:
        rule: The metric, its target and the gain rule.
        options: How to measure when no monitor's tracker can be shared.
        owner: The public class, for messages.

    Attributes:
        reached: The evaluation that first reached the target (None before; kept across resumes).
        stopped: Why this run stopped training (``"target"``, ``"diminishing returns"``), or None.

    Examples:
        >>> run = TargetRun(TargetRule("val_acc", 0.9), MeasureOptions())
        >>> notices = run.bind(None, Ranks(), step=0)                    # doctest: +SKIP
        >>> outcome = run.evaluate(step=100, value=0.92)                  # doctest: +SKIP
        >>> outcome.metrics["target/energy_kwh"], outcome.stop is not None   # doctest: +SKIP
    """

    def __init__(self, rule: TargetRule, options: MeasureOptions, owner: str = "EnergyLoop") -> None:
        super().__init__(options)
        self.rule = rule
        self.owner = owner
        self.args: dict[str, Any] = {}
        self.reached: Evaluation | None = None
        self.stopped: str | None = None
        self.history: list[Evaluation] = []  # the last `patience` evaluations before the next one
        self._said: set[str] = set()  # the one-time notices already given

    @classmethod
    def from_args(
        cls,
        owner: str,
        metric: str,
        target: float | None,
        metric_arg: str = "metric",
        prefix: str = "",
        **args: Unpack[TargetArgs],
    ) -> TargetRun:
        """Validate a target's arguments (the rule's and the measurement options) into a run.

        Args:
            metric_arg: What the public class calls the metric's argument (Lightning: ``monitor``).
            prefix: What the framework puts before the metric's name when it logs it (HF:
                ``eval_``), added unless the name already has it.

        Raises:
            TypeError, ValueError: naming the argument, for any invalid value.
        """
        name = metric_name(metric_arg, metric)
        name = name if name.startswith(prefix) else prefix + name
        given = dict(args)
        rule = TargetRule(name, target, **{k: given.pop(k) for k in RULE_ARGS if k in given})  # type: ignore[arg-type]
        run = cls(rule, MeasureOptions.of(owner, given), owner)
        run.args = {
            "target": rule.target,
            "mode": rule.mode,
            "stop": rule.stop,
            "min_gain_per_kwh": rule.min_gain_per_kwh,
            "patience": rule.patience,
            **run.options.as_args(),
        }
        return run

    def bind(self, shared: EnergyTracker | None, ranks: Ranks, step: int, resumed: bool = False) -> list[Notice]:
        """At fit start: watch a monitor's tracker, or measure alone from now.

        Args:
            shared: A monitor's tracker, or None to measure alone.
            ranks: This process's part in the job.
            step: The optimizer step training starts at.
            resumed: The trainer resumed from a checkpoint.
        """
        self.stopped = None
        notices = super().bind(shared, ranks, step, resumed)
        if self.reached is not None:
            notices.append(Notice("info", f"{self.owner}: {self.rule.describe()} was reached before this resume, at "
                                          f"step {self.reached.step} ({self._cost(self.reached)}): it is not reported "
                                          "again, and training goes on."))  # fmt: skip
        return notices

    # ------------------------------------------------------------------ each evaluation
    def evaluate(self, step: int, value: Any, logged: Collection[str] | None = None) -> TargetOutcome:
        """At the end of an evaluation (every rank): the figures, the decision, what to show.

        Args:
            step: The optimizer step.
            value: The metric's value at this evaluation (a number or a 0-d tensor); None
                when it was not logged.
            logged: The names that were logged, for the message when the metric is not.
        """
        tracker = self.tracker
        if tracker is None or not tracker.fitting:  # an evaluation outside a fit: not this target's
            return TargetOutcome()
        number = as_value(value)
        notices = self._gap_notice(step, value, number, logged)
        totals, resolved = tracker.snapshot()  # the job's, at the end of this evaluation (a collective in a job)
        kwh, co2e_kg = (totals.total_kwh, totals.co2e_kg) if resolved else (None, None)
        now = Evaluation(step, number, kwh, co2e_kg, totals.fit_s)
        gain = self._gain(now)
        metrics: dict[str, float] = {}
        if gain is not None and self.rule.min_gain_per_kwh is not None:
            metrics[keys.TARGET_GAIN] = gain
        event, stop = EVALUATION, None
        if self.reached is None and self.rule.target is not None:  # the same on every rank
            here = number is not None and self.rule.reached(number)
            if self._ranks.agree(here):  # on any rank: every rank reports and stops alike
                self.reached, event = now, REACHED
                metrics.update(now.figures())
                text = self._reached_text(now, here)
                if not self.rule.stop:
                    notices.append(Notice("info", text + " Training goes on (stop=False)."))
                elif self.stopped is None:
                    self.stopped, stop = "target", text + " Stopping here (stop=True)."
                    tracker.link.stop_by(TARGET_STOP)
                else:  # a stop already under way (Lightning's min_epochs kept it training)
                    notices.append(Notice("info", text))
        if self.rule.min_gain_per_kwh is not None:  # the same on every rank
            small = gain is not None and self.rule.too_small(gain)
            if self._ranks.agree(small) and self.stopped is None:
                self.stopped, stop = "diminishing returns", self._diminishing_text(now, gain if small else None)
                tracker.link.stop_by(TARGET_STOP)
                event = DIMINISHING if event == EVALUATION else event
        self.history = [*self.history, now][-self.rule.patience :]
        tracker.write_record(
            TARGET, event=event, step=step, metric=self.rule.metric, value=number, target=self.rule.target,
            mode=self.rule.mode, energy_kwh=now.kwh, co2e_kg=now.co2e_kg, seconds=now.seconds, gain_per_kwh=gain,
            stop=stop is not None,
        )  # fmt: skip
        return TargetOutcome(metrics, notices, stop)

    def _gain(self, now: Evaluation) -> float | None:
        """The gain per kWh since the evaluation ``patience`` back (None without it, or with a gap
        anywhere in the span: no gain is computed across an evaluation that had no figure)."""
        if len(self.history) < self.rule.patience:
            return None
        then, between = self.history[0], self.history[1:]
        if any(e.value is None for e in between):  # a gap inside the span: not a gain over it
            return None
        if now.value is None or then.value is None or now.kwh is None or then.kwh is None:
            return None
        return self.rule.gain((now.value, now.kwh), (then.value, then.kwh))

    def _cost(self, at: Evaluation) -> str:
        if at.kwh is None or at.co2e_kg is None:
            return f"no energy figure yet (before the sampler's second reading), {at.seconds:.1f} s of training"
        return f"{show.energy_kwh(at.kwh)}, {show.mass(at.co2e_kg)} CO2e, {show.duration(at.seconds)} of training"

    def _reached_text(self, at: Evaluation, here: bool) -> str:
        value = "no figure" if at.value is None else f"{at.value:.6g}"
        where = f"{self.rule.metric} = {value}" if here else f"on another rank ({self.rule.metric} here: {value})"
        return (
            f"Target reached at step {at.step}: {where}, {self.rule.describe()}, after {self._cost(at)} since the "
            "fit started, evaluations included."
        )

    def _diminishing_text(self, at: Evaluation, gain: float | None) -> str:
        then = self.history[0] if self.history else None
        how = "by too little per kWh on another rank"  # this rank's gain, when it has one, is said instead
        if gain is not None and then is not None and then.value is not None and at.value is not None:
            if then.kwh is not None and at.kwh is not None:
                how = (
                    f"by {gain:.4g} per kWh over the last {self.rule.patience} evaluation(s) ({self.rule.metric} "
                    f"{then.value:.6g} -> {at.value:.6g} for {show.energy_kwh(at.kwh - then.kwh)})"
                )
        return (
            f"Diminishing returns at step {at.step}: {self.rule.metric} improved {how}, below "
            f"min_gain_per_kwh={self.rule.min_gain_per_kwh:g}; spent so far: {self._cost(at)}. Stopping here."
        )

    def _gap_notice(self, step: int, value: Any, number: float | None, logged: Collection[str] | None) -> list[Notice]:
        """Once per run: the metric was not logged, or is not a finite number (a gap, not a figure)."""
        if value is None:
            kind = "missing"
            names = ", ".join(sorted(logged)) if logged else "nothing"
            text = (
                f"{self.owner}: {self.rule.metric!r} was not logged at this evaluation (step {step}; logged: "
                f"{names}): no figure for it. Log it in the validation (or pass a name that is logged)."
            )
        elif number is None:
            kind = "not finite"
            text = (
                f"{self.owner}: {self.rule.metric!r} is not a finite number at step {step} ({value!r}): that "
                "evaluation counts as a gap, not a figure."
            )
        else:
            return []
        if kind in self._said:
            return []
        self._said.add(kind)
        return [Notice("warn", text)]

    # ------------------------------------------------------------------ end
    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The evaluation that reached the target, the last ``patience`` evaluations and,
        measuring alone, the totals."""
        state: dict[str, Any] = {
            "reached": self.reached.to_state() if self.reached is not None else None,
            "history": [e.to_state() for e in self.history],
        }
        return self.with_totals(state)

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue a checkpoint's target (before `bind`, or after it when restored late).

        Raises:
            TypeError, ValueError: naming the stored field that is wrong.
        """
        if state is not None and not isinstance(state, dict):
            raise TypeError(f"stored target state must be a mapping, got {type(state).__name__}")
        state = dict(state or {})
        unknown = sorted(str(k) for k in state if k not in ("reached", "history", "tracker"))
        if unknown:
            raise ValueError(f"stored target state has unknown keys {unknown}; known: reached, history, tracker")
        reached = state.get("reached")
        self.reached = Evaluation.from_state(reached) if reached is not None else None
        history = state.get("history") or []
        if not isinstance(history, list):
            raise ValueError(f"stored target state: history must be a list, got {history!r}")
        self.history = [Evaluation.from_state(e) for e in history][-self.rule.patience :]
        self.load_totals(state)


class HasTargetRun:
    """What a target callback shows of its `TargetRun` (both framework adapters derive from it)."""

    run: TargetRun

    @property
    def reached(self) -> dict[str, float] | None:
        """``target/*`` figures of the evaluation that first reached the target (None before)."""
        return self.run.reached.figures() if self.run.reached is not None else None

    @property
    def tracker(self) -> EnergyTracker | None:
        """The tracker it watches: a monitor's, or its own (None before training)."""
        return self.run.tracker
