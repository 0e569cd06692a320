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

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SLICES = 2000  # the time allowed is cut into this many slices, each at the intensity of its middle
BISECTIONS = 50
SCAN = 40  # values of mu tried above the least that keeps the deadline, spaced geometrically


@dataclass(frozen=True)
class Curve:
    """Seconds and joules per step at each measured rung of the cap ladder (rung 0: the limit at start).

    ``spreads``: the standard error of each rung's seconds (none given: exact).
    """

    rungs: tuple[int, ...]
    seconds: tuple[float, ...]
    joules: tuple[float, ...]
    spreads: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.rungs or not len(self.rungs) == len(self.seconds) == len(self.joules):
            raise ValueError("a curve needs one (seconds, joules) per rung, and at least one rung")
        if any(not s > 0 or not j >= 0 for s, j in zip(self.seconds, self.joules)):
            raise ValueError("a curve's seconds per step must be > 0 and its joules >= 0")
        if self.spreads and (
            len(self.spreads) != len(self.rungs) or any(not (math.isfinite(e) and e >= 0) for e in self.spreads)
        ):
            raise ValueError(
                f"a curve's spreads must be one per rung ({len(self.rungs)}), each finite and >= 0, "
                f"got {self.spreads!r}"
            )

    def spread(self, rung: int) -> float:
        """The standard error of ``rung``'s seconds per step."""
        return self.spreads[self.rungs.index(rung)] if self.spreads else 0.0

    def rung(self, intensity: float, mu: float) -> int:
        """The rung that minimises ``(intensity x joules - mu) / seconds`` (the fastest when ``mu`` is infinite)."""
        if mu == float("inf"):
            return self.rungs[int(np.argmin(self.seconds))]
        costs = [(intensity * j - mu) / s for s, j in zip(self.seconds, self.joules)]
        return self.rungs[int(np.argmin(costs))]


@dataclass(frozen=True)
class Plan:
    """The value of a step that brings the run in on time with least emission, and what it implies.

    Over discrete caps, the least value of a step that keeps the deadline usually finishes
    well inside it: every slice at the intensity where two caps tie switches to the faster
    at once. The plan then mixes the two: the tied slices from ``since`` on run at
    ``fast_mu``'s choice, the earlier ones at ``mu``'s, so that the steps left take the time
    allowed. The faster steps come last: by then the caps' paces are measured better, and
    the plan made again on them may need fewer.

    Attributes:
        mu: The value of a step of progress (intensity units x joules); infinite when not
            even the fastest cap keeps the deadline (the plan then runs the fastest).
        seconds: The seconds the plan takes for the steps left.
        emission: Sum over the steps left of intensity x joules (for a carbon intensity in
            g/kWh: g x J / kWh).
        fast_mu: The value of a step in force from ``since`` on.
        since: Seconds from the plan's start after which ``fast_mu`` is in force (infinite
            when nothing is mixed).
    """

    mu: float
    seconds: float
    emission: float
    fast_mu: float = 0.0
    since: float = float("inf")

    @staticmethod
    def solve(
        curve: Curve, intensity: Callable[[np.ndarray], np.ndarray], now: float, steps: float, seconds: float
    ) -> Plan:
        """The plan for ``steps`` steps from ``now`` within ``seconds``.

        Args:
            curve: The rungs to choose from.
            intensity: The intensity (or price) in force at each of an array of unix times.
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
        values = np.asarray(intensity(now + (np.arange(SLICES) + 0.5) * width), dtype=float)
        emits = values[:, None] * j[None, :]  # per slice and rung: intensity x joules per step
        per_slice = width / t  # steps a slice takes at each rung
        rates = emits / t[None, :] * width  # emission of a slice at each rung
        slices = np.arange(SLICES)
        levels, level_of = np.unique(values, return_inverse=True)  # a series has few: each is chosen for once
        level_emits = levels[:, None] * j[None, :]

        def choose(mu: float | np.ndarray) -> np.ndarray:
            """The rung (its index in the curve) of every slice under ``mu``; under an array of values,
            one column per value."""
            mus = np.asarray(mu, dtype=float)
            costs = (level_emits[:, :, None] - mus.reshape(1, 1, -1)) / t[None, :, None]
            chosen = np.argmin(costs, axis=1)[level_of]
            return chosen if mus.ndim else chosen[:, 0]

        def run(choice: np.ndarray) -> tuple[float, float]:
            """(seconds, emission) of the steps left, each slice at its choice (past the horizon: unfinished)."""
            progress = np.cumsum(per_slice[choice])
            rate = rates[slices, choice]
            end = int(np.searchsorted(progress, steps))
            if end >= SLICES:
                return horizon + (steps - progress[-1]) * fastest, float(rate.sum())
            done = progress[end - 1] if end else 0.0
            emitted = rate[:end].sum() + emits[end, choice[end]] * (steps - done)
            return end * width + (steps - done) * t[choice[end]], float(emitted)

        power, pace = j / t, 1 / t
        spans = [(power[a] - power[b]) / (pace[a] - pace[b]) for a in range(len(t)) for b in range(len(t))
                 if pace[a] > pace[b]]  # fmt: skip
        # every slice runs the fastest from here (a cap both faster and leaner than all others: any mu > 0)
        high = float(values.max()) * max([0.0, *spans]) + 1.0
        if run(choose(high))[0] > seconds:  # not even the fastest cap keeps the deadline
            return Plan(float("inf"), *run(choose(high)))
        low, feasible = 0.0, high
        candidates = []
        if run(choose(low))[0] > seconds:
            for _ in range(BISECTIONS):
                middle = (low + feasible) / 2
                if run(choose(middle))[0] <= seconds:
                    feasible = middle
                else:
                    low = middle
            candidates.append(Plan._mixed(choose(low), choose(feasible), run, seconds, width, low, feasible))
            low = feasible
        # from the least mu that keeps the deadline up to the one where all run the fastest, chosen at once
        scan = np.geomspace(low, high, SCAN) if low > 0 else np.linspace(low, high, SCAN)
        choices = choose(scan)
        candidates += [Plan(float(mu), *run(choices[:, k])) for k, mu in enumerate(scan)]
        return min(candidates, key=lambda plan: plan.emission)

    @staticmethod
    def _mixed(
        slow: np.ndarray,
        fast: np.ndarray,
        run: Callable[[np.ndarray], tuple[float, float]],
        seconds: float,
        width: float,
        slow_mu: float,
        fast_mu: float,
    ) -> Plan:
        """The plan that takes the fast choice on the fewest last tied slices that keep the deadline."""
        tied = np.flatnonzero(slow != fast)

        def mix(count: int) -> np.ndarray:
            choice = slow.copy()
            choice[tied[len(tied) - count :]] = fast[tied[len(tied) - count :]]
            return choice

        few, enough = 0, len(tied)  # run(mix(enough)) keeps the deadline: it is the fast choice
        while enough - few > 1:
            middle = (few + enough) // 2
            few, enough = (few, middle) if run(mix(middle))[0] <= seconds else (middle, enough)
        since = tied[len(tied) - enough] * width if enough else float("inf")
        return Plan(slow_mu, *run(mix(enough)), fast_mu, float(since))

    def rung(self, curve: Curve, intensity: float, ahead: float = 0.0) -> int:
        """The rung to run at this intensity (or price), ``ahead`` seconds after the plan's start."""
        return curve.rung(intensity, self.fast_mu if ahead >= self.since else self.mu)
