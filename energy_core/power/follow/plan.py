"""The grid-following plan: which cap to run at each moment so that the run emits least, within its slowdown.

Free of hardware and clocks. The finder has measured, for a few caps, the seconds and
joules of one training step (`Curve`); the grid's intensity (or the price) is known over
time. The run has ``steps`` steps left and ``seconds`` in which to take them (the whole
run may take ``1 + max_slowdown`` times as long as at the limit at start).

At each moment the run emits ``intensity x joules / seconds`` (per second of wall time)
and progresses ``1 / seconds`` steps per second, depending on the cap in force. With a
value ``mu`` on a step of progress, the Lagrangian of "least emission for ``steps``
steps by the deadline" is minimised moment by moment by the cap that minimises

    (intensity x joules per step - mu) / seconds per step,

so that where the grid is dirty the run goes slower and leaner (even at the same energy
per step: fewer steps fall in the dirty hours), and where it is clean, faster. With a
constant intensity it keeps one cap, the leanest that keeps the deadline. `Plan.solve`
finds the least ``mu`` that keeps the deadline, then the ``mu`` above it whose run emits
least (finishing earlier can pay when the grid gets dirtier later), over the intensity
cut into `SLICES` slices of the time allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SLICES = 2000  # the time allowed is cut into this many slices, each at the intensity of its middle
BISECTIONS = 50
SCAN = 40  # values of mu tried above the least that keeps the deadline, spaced geometrically


@dataclass(frozen=True)
class Curve:
    """Seconds and joules per step at each measured rung of the cap ladder (rung 0: the limit at start)."""

    rungs: tuple[int, ...]
    seconds: tuple[float, ...]
    joules: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.rungs or not len(self.rungs) == len(self.seconds) == len(self.joules):
            raise ValueError("a curve needs one (seconds, joules) per rung, and at least one rung")
        if any(not s > 0 or not j >= 0 for s, j in zip(self.seconds, self.joules)):
            raise ValueError("a curve's seconds per step must be > 0 and its joules >= 0")

    def rung(self, intensity: float, mu: float) -> int:
        """The rung that minimises ``(intensity x joules - mu) / seconds`` (the fastest when ``mu`` is infinite)."""
        if mu == float("inf"):
            return self.rungs[int(np.argmin(self.seconds))]
        costs = [(intensity * j - mu) / s for s, j in zip(self.seconds, self.joules)]
        return self.rungs[int(np.argmin(costs))]


@dataclass(frozen=True)
class Plan:
    """The value of a step that brings the run in on time with least emission, and what it implies.

    Attributes:
        mu: The value of a step of progress (intensity units x joules); infinite when not
            even the fastest cap keeps the deadline (the plan then runs the fastest).
        seconds: The seconds the plan takes for the steps left.
        emission: Sum over the steps left of intensity x joules (for a carbon intensity in
            g/kWh: g x J / kWh).
    """

    mu: float
    seconds: float
    emission: float

    @staticmethod
    def solve(curve: Curve, intensity: Callable[[float], float], now: float, steps: float, seconds: float) -> Plan:
        """The plan for ``steps`` steps from ``now`` within ``seconds``.

        Args:
            curve: The rungs to choose from.
            intensity: The intensity (or price) in force at a unix time.
            now: Unix time of the next step.
            steps: Steps left.
            seconds: Seconds they may take in all.
        """
        t, j = np.array(curve.seconds), np.array(curve.joules)
        fastest = float(t.min())
        if steps <= 0:
            return Plan(0.0, 0.0, 0.0)
        horizon = max(seconds, steps * fastest)
        width = horizon / SLICES
        values = np.array([intensity(now + (i + 0.5) * width) for i in range(SLICES)])

        def run(mu: float) -> tuple[float, float]:
            """(seconds, emission) of the steps left under ``mu`` (seconds past the horizon if unfinished)."""
            choice = np.argmin((values[:, None] * j[None, :] - mu) / t[None, :], axis=1)
            progress = np.cumsum(width / t[choice])
            rate = values * j[choice] / t[choice] * width
            end = int(np.searchsorted(progress, steps))
            if end >= SLICES:
                return horizon + (steps - progress[-1]) * fastest, float(rate.sum())
            done = progress[end - 1] if end else 0.0
            emitted = rate[:end].sum() + values[end] * j[choice[end]] * (steps - done)
            return end * width + (steps - done) * t[choice[end]], float(emitted)

        power, pace = j / t, 1 / t
        spans = [(power[a] - power[b]) / (pace[a] - pace[b]) for a in range(len(t)) for b in range(len(t))
                 if pace[a] > pace[b]]  # fmt: skip
        # every slice runs the fastest from here (a cap both faster and leaner than all others: any mu > 0)
        high = float(values.max()) * max([0.0, *spans]) + 1.0
        if run(high)[0] > seconds:  # not even the fastest cap keeps the deadline
            return Plan(float("inf"), *run(high))
        low, feasible = 0.0, high
        if run(low)[0] > seconds:
            for _ in range(BISECTIONS):
                middle = (low + feasible) / 2
                if run(middle)[0] <= seconds:
                    feasible = middle
                else:
                    low = middle
            low = feasible
        # from the least mu that keeps the deadline up to the one where all run the fastest
        scan = np.geomspace(low, high, SCAN) if low > 0 else np.linspace(low, high, SCAN)
        best = min((run(mu)[1], mu) for mu in scan)
        return Plan(float(best[1]), *run(best[1]))

    def rung(self, curve: Curve, intensity: float) -> int:
        """The rung to run at this intensity (or price)."""
        return curve.rung(intensity, self.mu)
