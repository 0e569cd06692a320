"""TargetRule: the quality a run aims at and when its gains are too small, validated once."""

from __future__ import annotations

import math
from typing import Any

from energy_core import checks

MODES = ("max", "min")


def metric_name(argument: str, value: Any) -> str:
    """A metric's name, a non-empty string; ``argument`` is what the caller calls it
    (``metric``, Lightning's ``monitor``), for the error."""
    return checks.text(argument, value, optional=False, what="the name of a logged metric")


class TargetRule:
    """A metric, the value it should reach, and the least gain per kWh worth paying for.

    Args:
        metric: The name of the monitored metric (for messages and the run record).
        target: The value to reach: ``metric >= target`` with ``mode="max"``, ``<=`` with
            ``"min"``. None: no target, only ``min_gain_per_kwh``.
        mode: ``"max"`` (higher is better: accuracy) or ``"min"`` (lower is better: loss).
        stop: Stop training at the evaluation that first reaches the target.
        min_gain_per_kwh: Stop when the metric's improvement per kWh over the last
            ``patience`` evaluations falls below this (metric units per kWh, >= 0;
            None: never).
        patience: How many evaluations back the gain is measured from (an integer >= 1).

    Raises:
        TypeError: naming the argument, for a value of the wrong type (a bool is not a number).
        ValueError: naming the argument, for an empty metric name, a non-finite target, an
            unknown mode, a negative or non-finite ``min_gain_per_kwh``, ``patience < 1``, or
            neither a target nor a ``min_gain_per_kwh``.

    Examples:
        >>> rule = TargetRule("val_acc", 0.9)
        >>> rule.reached(0.93), rule.describe()
        (True, 'val_acc >= 0.9')
        >>> TargetRule("val_loss", 0.2, mode="min").gain(now=(0.3, 2.0), then=(0.5, 1.0))
        0.2
    """

    def __init__(
        self,
        metric: str,
        target: float | None,
        mode: str = "max",
        stop: bool = True,
        min_gain_per_kwh: float | None = None,
        patience: int = 1,
    ) -> None:
        self.metric = metric_name("metric", metric)
        self.target = checks.number("target", target, optional=True)
        self.mode = checks.choice("mode", mode, MODES)
        self.stop = checks.boolean("stop", stop)
        self.min_gain_per_kwh = checks.number(
            "min_gain_per_kwh", min_gain_per_kwh, low=0, optional=True, unit=" (metric units per kWh)"
        )
        self.patience = checks.integer("patience", patience, low=1)
        if self.target is None and self.min_gain_per_kwh is None:
            raise ValueError(f"a target for {self.metric!r} needs a target value, a min_gain_per_kwh, or both")

    def reached(self, value: float) -> bool:
        """Whether ``value`` reaches the target (never, without one)."""
        if self.target is None:
            return False
        return value >= self.target if self.mode == "max" else value <= self.target

    def gain(self, now: tuple[float, float], then: tuple[float, float]) -> float | None:
        """The improvement per kWh from ``then`` to ``now``, each ``(metric value, kWh so far)``.

        Positive when the metric got better (higher with ``"max"``, lower with ``"min"``).
        None where no energy was measured between the two: no figure rather than an infinite one.
        """
        (value, kwh), (earlier, earlier_kwh) = now, then
        spent = kwh - earlier_kwh
        if not spent > 0:
            return None
        better = value - earlier if self.mode == "max" else earlier - value
        gain = better / spent
        return gain if math.isfinite(gain) else None

    def too_small(self, gain: float) -> bool:
        """Whether a gain per kWh is below ``min_gain_per_kwh`` (never, without one)."""
        return self.min_gain_per_kwh is not None and gain < self.min_gain_per_kwh

    def describe(self) -> str:
        """``val_acc >= 0.9``; without a target, the metric's name and its direction."""
        if self.target is None:
            return f"{self.metric} ({'higher' if self.mode == 'max' else 'lower'} is better)"
        return f"{self.metric} {'>=' if self.mode == 'max' else '<='} {self.target:g}"
