"""Optima found without the planner: a brute force for small instances, and for long windows
the classic exact solutions of the cases without resume costs.

The brute force: every subset of grid units tried.

With the series' steps, the window's ends, the work and the resume time all multiples of one
unit, an optimum of the continuous problem lies on that unit's grid (the planner's own
argument: every run edge on a step boundary but one, which the work puts on the grid too),
so the least cost over all subsets of units is the true optimum.
"""

from __future__ import annotations

from itertools import product

import numpy as np

from energy_core.shift.intensity import Intensity
from energy_core.units import J_PER_KWH


def cost_kg(curve: Intensity, runs, t0: float, mode: str, busy_w: float, idle_w: float) -> float:
    """The cost model, written out again: busy power while running, the idle power from t0 to the
    end when not running (wait and pause), nothing between runs in requeue."""
    busy = sum(curve.integral(a, b) for a, b in runs)
    held = 0.0 if mode == "requeue" else idle_w * (curve.integral(t0, runs[-1][1]) - busy)
    return (busy_w * busy + held) / J_PER_KWH / 1000.0


def brute_force(curve: Intensity, t0: float, unit: float, units: int, work_units: int, resume_units: int,
                mode: str, busy_w: float, idle_w: float) -> float:  # fmt: skip
    """The least cost over every schedule of whole units between t0 and t0 + units x unit."""
    best = float("inf")
    for pattern in product((0, 1), repeat=units):
        runs: list[list[int]] = []
        for i, on in enumerate(pattern):
            if on and runs and runs[-1][1] == i:
                runs[-1][1] = i + 1
            elif on:
                runs.append([i, i + 1])
        if not runs or (mode == "wait" and len(runs) > 1):
            continue
        resumed = runs if mode == "requeue" and runs[0][0] > 0 else runs[1:]  # a late first start is a restart
        if any(b - a <= resume_units for a, b in resumed):
            continue  # a resumed run that does no work
        if sum(b - a for a, b in runs) - resume_units * len(resumed) != work_units:
            continue
        timed = [(t0 + a * unit, t0 + b * unit) for a, b in runs]
        best = min(best, cost_kg(curve, timed, t0, mode, busy_w, idle_w))
    return best


def cuts(curve: Intensity, t0: float, t1: float) -> list[float]:
    """t0, every row of the series between, t1."""
    return [t0, *[t for t in curve.times if t0 < t < t1], t1]


def wait_optimum(curve: Intensity, t0: float, t1: float, work: float, busy_w: float, idle_w: float) -> float:
    """One run: the cost is linear in its start between the moments where its start or its end
    crosses a row, so the least is at one of those moments."""
    starts = {t0, t1 - work}
    for t in cuts(curve, t0, t1):
        starts |= {t, t - work}
    return min(cost_kg(curve, [(s, s + work)], t0, "wait", busy_w, idle_w) for s in starts if t0 <= s <= t1 - work)


def cleanest(curve: Intensity, t0: float, t1: float, work: float) -> float:
    """The least integral of the intensity over any ``work`` seconds between t0 and t1 (cleanest first)."""
    edges = cuts(curve, t0, t1)
    pieces = sorted((curve.at(a), b - a) for a, b in zip(edges, edges[1:]))
    total, left = 0.0, work
    for value, length in pieces:
        used = min(left, length)
        total, left = total + value * used, left - used
        if left <= 0:
            break
    return total


def requeue_optimum(curve: Intensity, t0: float, t1: float, work: float, busy_w: float) -> float:
    """Without resume costs or idle power: the cleanest seconds, wherever they are."""
    return busy_w * cleanest(curve, t0, t1, work) / J_PER_KWH / 1000.0


def pause_optimum(curve: Intensity, t0: float, t1: float, work: float, busy_w: float, idle_w: float,
                  grid_s: float = 60.0) -> float:  # fmt: skip
    """Without resume costs: for a job that ends by T, idle power from t0 to T and the cleanest
    seconds before T at busy minus idle power; the least over T on a grid (an upper bound of the
    optimum within one grid step)."""
    ends = sorted({*cuts(curve, t0 + work, t1), *np.arange(t0 + work, t1, grid_s)})
    return min(
        (idle_w * curve.integral(t0, end) + (busy_w - idle_w) * cleanest(curve, t0, end, work)) / J_PER_KWH / 1000.0
        for end in ends
    )
