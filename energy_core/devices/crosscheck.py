"""Two instruments, one answer: a board's energy counter checked against its own power readings.

A board with an energy counter also reports its power. Neither is the truth: the counter
trails by up to its update period and counts in whole quanta; the power is a sensor NVML
documents as accurate to within +-5% (`POWER_SENSOR_SHARE`), read as a 1 s average (Ampere
and newer) or an instantaneous sample, and integrated between readings. Over a long span
(`SPAN_S`) each gives the energy, with a bound; when they differ by more than the two bounds
together, one of them is wrong (a counter that skips, a sensor out of calibration, a board
reporting another's power), and the run says so rather than silently trusting the counter.

The check runs on the sampler thread, reading the power at most every `EVERY_S`: no work on
the training thread, one extra driver call a second. Power read less often than every
`GAP_S` (a ``sample_interval_s`` above about 1 s) cannot be integrated: what the board drew
between two readings is not in them, and a burst there would look like a counter that is
wrong. Such a gap starts the span again; at such intervals the check does not run.
"""

from __future__ import annotations

from dataclasses import dataclass

from energy_core.devices.source import Accuracy, EnergySource

SPAN_S = 60.0  # the counter and the integrated power are compared over spans this long
EVERY_S = 1.0  # the power is read at most this often
GAP_S = 1.25  # power readings further apart than this cannot be integrated: the span starts again
POWER_SENSOR_SHARE = 0.05  # NVML: the power reading is accurate to within +-5% of the power drawn


@dataclass(frozen=True)
class Disagreement:
    """One span over which the counter and the integrated power differ by more than their joint bound.

    Args:
        source: The source's name (``gpu0``).
        seconds: The span's length.
        counter_j: The counter's energy over it.
        power_j: The integrated power's energy over it.
        bound_j: The joint bound: how far apart the two may be with both within their own.
    """

    source: str
    seconds: float
    counter_j: float
    power_j: float
    bound_j: float

    def fields(self) -> dict[str, float | str]:
        """The record's ``check`` line."""
        return {
            "source": self.source,
            "seconds": self.seconds,
            "counter_j": self.counter_j,
            "power_j": self.power_j,
            "bound_j": self.bound_j,
        }


class CrossCheck:
    """The counter of one source against its power, span by span (updated by the sampler thread).

    Args:
        source: A source with a counter whose `EnergySource.read_power` gives its power.
        power: How its power reading behaves (`Accuracy`: averaged or instantaneous).

    Attributes:
        spans: Spans compared so far. ``disagreements``: those that disagreed, not yet taken.
    """

    def __init__(self, source: EnergySource, power: Accuracy, span_s: float = SPAN_S) -> None:
        self.source, self.power, self.span_s = source, power, span_s
        self.spans = 0
        self.disagreements: list[Disagreement] = []
        self._start: tuple[float, float] | None = None  # (time, counter joules) the span began at
        self._last: tuple[float, float] | None = None  # (time, watts) of the last power reading
        self._power_j = self._error_j = 0.0
        self._high = self._low = 0.0

    def restart(self) -> None:
        """The counter cannot vouch for the time since the last reading (a gap): the span starts again."""
        self._start = self._last = None

    def update(self, now: float, counter_j: float) -> None:
        """After a good counter reading at ``now`` (total ``counter_j``): read the power when due, and
        close the span once it is long enough. Never raises."""
        if self._last is not None and now - self._last[0] < EVERY_S:
            return
        try:
            watts = self.source.read_power()
        except Exception:  # noqa: BLE001 - a failed power read only restarts the check
            watts = None
        if watts is None or not 0.0 <= watts <= self.source.max_power_w:
            self.restart()
            return
        if self._start is None or self._last is None:
            self._begin(now, counter_j, watts)
            return
        seconds = now - self._last[0]
        if seconds > GAP_S:  # the power between is not known: this span cannot be checked
            self._begin(now, counter_j, watts)
            return
        self._power_j += 0.5 * (watts + self._last[1]) * seconds
        self._error_j += 0.5 * abs(watts - self._last[1]) * seconds  # the trapezoid, the power monotone between
        self._high, self._low = max(self._high, watts), min(self._low, watts)
        self._last = (now, watts)
        if now - self._start[0] >= self.span_s:
            self._compare(now, counter_j)
            self._begin(now, counter_j, watts)

    def _begin(self, now: float, counter_j: float, watts: float) -> None:
        self._start, self._last = (now, counter_j), (now, watts)
        self._power_j = self._error_j = 0.0
        self._high = self._low = watts

    def _compare(self, now: float, counter_j: float) -> None:
        assert self._start is not None
        counter = counter_j - self._start[1]
        accuracy = self.source.accuracy
        counter_bound = self._high * accuracy.lag_s + 2 * accuracy.quantum_j
        span_high = self._high * self.power.lag_s  # the average's tail at each end
        sampling = self._error_j if not self.power.sampled else 0.5 * (self._high - self._low) * (now - self._start[0])
        power_bound = sampling + span_high + POWER_SENSOR_SHARE * self._power_j
        self.spans += 1
        if abs(counter - self._power_j) > counter_bound + power_bound:
            seconds = now - self._start[0]
            found = Disagreement(self.source.info.name, seconds, counter, self._power_j, counter_bound + power_bound)
            self.disagreements.append(found)

    def take(self) -> list[Disagreement]:
        """The disagreements found since the last call."""
        found, self.disagreements = self.disagreements, []
        return found
