"""Hardware energy counters of limited width turned into running totals, for every reader that has one.

A counter that wraps (a RAPL zone at ``max_energy_range_uj``, a 32-bit AMD energy
accumulator at 2**32 counts) steps back when it passes its range; so does a counter
that restarts from zero (a driver reload). The two look alike in one reading; what
tells them apart is the energy a wrap would imply: the wrapped step must be one the
device could have drawn since the previous reading. A wrap is added back here, in the
reader; a reset is passed on (the total steps back) for the `Ledger` to re-base on, so
the ledger's reset logic never eats a wrap and a wrap never hides a reset.
"""

from __future__ import annotations

from energy_core.devices.ledger import COUNTER_SLACK_S


class WrappingCounter:
    """The running total of one wrapping counter, in joules since its first reading.

    Args:
        period: The value at which the counter wraps back to 0 (its range).
        joules_per_count: The energy of one count (1e-6 for a µJ counter).
        max_power_w: The most the device can draw: a backward step that, unwrapped,
            would imply more over the time since the previous reading is a reset.

    Attributes:
        wraps: Wraps added back so far. ``resets``: backward steps passed on as resets.

    Example:
        >>> counter = WrappingCounter(period=100, joules_per_count=1.0, max_power_w=50.0)
        >>> counter.update(90, now=0.0)  # the first reading is the origin
        0.0
        >>> counter.update(20, now=1.0)  # 90 -> 99 -> 0 -> 20: 30 J in 1 s, a wrap
        30.0
        >>> counter.update(5, now=2.0)  # back by 15 in 1 s: 85 J unwrapped is too much, a reset
        15.0
    """

    def __init__(self, period: int, joules_per_count: float, max_power_w: float) -> None:
        self.period = int(period)
        self.joules_per_count = float(joules_per_count)
        self.max_power_w = float(max_power_w)
        self.wraps = self.resets = 0
        self._first: int | None = None
        self._offset = 0  # counts added back by wraps
        self._last = 0
        self._last_t: float | None = None

    def update(self, value: int, now: float | None) -> float:
        """Take one reading; returns joules since the first (lower than before only after a reset).

        Args:
            value: The counter's value.
            now: The reading's time in seconds; None when unknown (a backward step is then
                taken as a wrap whenever the counter's range allows one).
        """
        value = int(value)
        if self._first is None:
            self._first = value
        elif value < self._last:
            wrapped_j = (value + self.period - self._last) * self.joules_per_count
            seconds = None if now is None or self._last_t is None else max(now - self._last_t, 0.0)
            plausible = seconds is None or wrapped_j <= self.max_power_w * (seconds + COUNTER_SLACK_S)
            if self._last < self.period and plausible:
                self._offset += self.period
                self.wraps += 1
            else:
                self.resets += 1
        self._last, self._last_t = value, now
        return (self._offset + value - self._first) * self.joules_per_count
