"""Shared statistics of the overhead benchmarks: paired ratios, bootstrap intervals, one verdict rule.

Every comparison (Lightning and HF, every peer) is judged the same way: the median of the
paired ratios (variant time / no-callback time in the same interleaved round), its 95%
bootstrap interval, and `verdict` against the target.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence

TARGET = 1.01  # slowdown allowed at 5 ms steps


def interleaved(names: Sequence[str], repeats: int, run: Callable[[str], tuple[float, float]]) -> tuple[dict, dict]:
    """Run every variant ``repeats`` times, the order rotating each round, so that slow drifts
    of the machine fall on every variant alike. ``run(name)`` returns (timed seconds, other
    seconds); returns both as lists per name."""
    timed: dict[str, list[float]] = {name: [] for name in names}
    other: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        shift = i % len(names)
        for name in [*names[shift:], *names[:shift]]:
            seconds, rest = run(name)
            timed[name].append(seconds)
            other[name].append(rest)
    return timed, other


def paired_ratios(times: dict[str, list[float]], name: str, base: str = "none") -> list[float]:
    """Variant time / baseline time, round by round."""
    return [a / b for a, b in zip(times[name], times[base])]


def median_ci(pairs: list[float], n: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Bootstrap confidence interval of the median of paired ratios (percentile method).

    One pair says nothing of the noise: its interval is unbounded, so `verdict` cannot decide."""
    if len(pairs) < 2:
        return float("-inf"), float("inf")
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(pairs, k=len(pairs))) for _ in range(n))
    return medians[int((1 - level) / 2 * n)], medians[int((1 + level) / 2 * n) - 1]


def verdict(ratio_ci: tuple[float, float], target: float = TARGET) -> str:
    """PASS when the whole interval is within the target, FAIL when it is all above it,
    UNRESOLVED when the machine's noise does not let the run decide."""
    low, high = ratio_ci
    return "PASS" if high <= target else "FAIL" if low > target else "UNRESOLVED"
