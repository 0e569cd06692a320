"""Hardware energy counters of limited width turned into running totals, for every reader that has one.

A counter that wraps (a RAPL zone at ``max_energy_range_uj``, a 32-bit AMD energy
accumulator at 2**32 counts) steps back when it passes its range; so does a counter
that restarts from zero (a driver reload). The two look alike in one reading; what
tells them apart is the energy a wrap would imply: the wrapped step must be one the
device could have drawn since the previous reading. A wrap is added back here, in the
reader; a reset is passed on (the total steps back) for the `Ledger` to re-base on, so
the ledger's reset logic never eats a wrap and a wrap never hides a reset.

A counter read after longer than one wrap takes at the device's highest power could
have wrapped any number of times: its value then says nothing about the energy in
between. That reading is passed on as not continuous (`Reading.continuous`), and the
ledger counts the interval as unmeasured instead of trusting a count that may be whole
wraps short.
"""

from __future__ import annotations

from energy_core.devices.ledger import COUNTER_SLACK_S
from energy_core.devices.source import Reading


class WrappingCounter:
    """The running total of one wrapping counter, in joules since its first reading.

    Args:
        period: The value at which the counter wraps back to 0 (its range).
        joules_per_count: The energy of one count (1e-6 for a µJ counter).
        max_power_w: The most the device can draw: a backward step that, unwrapped,
            would imply more over the time since the previous reading is a reset, and
            an interval in which it could have drawn a whole wrap is not continuous.

    Attributes:
        wraps: Wraps added back so far. ``resets``: backward steps passed on as resets.
        breaks: Readings passed on as not continuous (too long since the previous one).

    Example:
        >>> counter = WrappingCounter(period=100, joules_per_count=1.0, max_power_w=50.0)
        >>> counter.update(90, now=0.0).joules  # the first reading is the origin
        0.0
        >>> counter.update(20, now=1.0).joules  # 90 -> 99 -> 0 -> 20: 30 J in 1 s, a wrap
        30.0
        >>> counter.update(5, now=1.5).joules  # back by 15 in 0.5 s: 85 J unwrapped is too much, a reset
        15.0
        >>> counter.update(30, now=4.0).continuous  # 2.5 s at 50 W could be a whole wrap (100 J): unknown
        False
    """

    def __init__(self, period: int, joules_per_count: float, max_power_w: float) -> None:
        self.period = int(period)
        self.joules_per_count = float(joules_per_count)
        self.max_power_w = float(max_power_w)
        self.wraps = self.resets = self.breaks = 0
        self._first: int | None = None
        self._offset = 0  # counts added back by wraps
        self._last = 0
        self._last_t: float | None = None
        self._wide = False  # a value at or above the period: the counter is wider than that, it never wraps there

    @property
    def wrap_s(self) -> float | None:
        """The longest time between two readings that still tells how many times the counter
        wrapped (one wrap at `max_power_w`, less a counter update); None once it shows it never wraps."""
        if self._wide or self.period <= 0 or self.max_power_w <= 0:
            return None
        return max(self.period * self.joules_per_count / self.max_power_w - COUNTER_SLACK_S, 0.0)

    def update(self, value: int, now: float | None) -> Reading:
        """Take one reading; its joules since the first (lower than before only after a reset),
        not continuous when the counter may have wrapped more than once since the previous one.

        Args:
            value: The counter's value.
            now: The reading's time in seconds; None when unknown (a backward step is then
                taken as a wrap whenever the counter's range allows one).
        """
        value = int(value)
        self._wide = self._wide or value >= self.period
        continuous = True
        if self._first is None:
            self._first = value
        else:
            seconds = None if now is None or self._last_t is None else max(now - self._last_t, 0.0)
            most_j = None if seconds is None else self.max_power_w * (seconds + COUNTER_SLACK_S)
            if most_j is not None and not self._wide and most_j >= self.period * self.joules_per_count:
                continuous = False  # any number of wraps fits: the count since the last reading means nothing
                self.breaks += 1
            elif value < self._last:
                wrapped_j = (value + self.period - self._last) * self.joules_per_count
                if not self._wide and (most_j is None or wrapped_j <= most_j):
                    self._offset += self.period
                    self.wraps += 1
                else:
                    self.resets += 1
        self._last, self._last_t = value, now
        return Reading(joules=(self._offset + value - self._first) * self.joules_per_count, continuous=continuous)
