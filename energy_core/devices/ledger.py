"""Ledger: one source's readings turned into monotone joules, faults accounted, never a false figure.

Readers report what the hardware said (`Reading`: a cumulative counter in joules, or a
power in watts); the ledger decides what it means, the same way for every vendor:

* a counter below its previous value is held until the next reading tells what it was: a
  **reset** (driver reload, board reset) when that reading goes on from it (the ledger
  re-bases on it and never subtracts), a **glitch** (dropped) when it is back at or past
  the last good value; and when the held value goes on from the good reading before the
  last, that last one ran high (within the plausible power) and is taken back;
* a reading implying more than the source's plausible maximum power (`max_power_w`,
  e.g. twice a board's highest power limit) is a **glitch**: it is dropped, unless the
  next reading confirms the new level, which is then taken as a re-base;
* a read that fails (any exception, a power outside [0, max]) is a **gap**; so is the
  interval before a counter reading that is not continuous (`Reading.continuous`: a
  narrow counter silent for longer than one wrap at full power), after which the counter
  is taken up again from that reading;
* a counter that stands still for its source's `Accuracy.still_s` (a RAPL zone that does not
  count) is a **gap** from its last move on: its power there is unknown (anything up to the
  most), not 0 W, until it moves again, when its count covers the gap.

Across a gap the total goes on at the last good power (so budgets and curves keep
moving), and that energy is *estimated*. When a counter answers again, its true energy
over the gap replaces the estimate; an estimate that ran high is paid back by the next
measured energy (the total holds still meanwhile, so it never goes back). A device lost
for good stays bridged; `unmeasured_s` and `estimated_j` say how much of the figure rests
on that.

The ledger also keeps how far its total can be from the truth, in two parts (the sampler
stores both with every reading, and `energy_core.sampling.bounds` makes the bound of any
span from them):

* `bound_j`, cumulative and never decreasing: the energy whose error adds up reading by
  reading. A counter adds nothing (it integrates exactly); a polled power adds the
  trapezoid's worst error over each interval (half the step between two averaged readings,
  half the spread of the recent readings for an instantaneous one, times the interval); a
  gap closed as an estimate adds its whole bridge (the power across it may have been 0 or
  twice the last; before any power was measured, the bridge is 0 and the gap adds the board's
  most power over it); a model adds its documented share (`Accuracy.relative`).
* `open_j`, the part of the total now that a later reading may still take back: the open
  bridge (before any power was measured, the board's most over the open gap) and an estimate
  that ran high and is not paid back yet.
"""

from __future__ import annotations

from collections import deque

from energy_core.devices.crosscheck import CrossCheck
from energy_core.devices.source import EnergySource, Reading

SPREAD_READINGS = 32  # an instantaneous power's spread is taken over this many recent readings (see _trapezoid_error)
COUNTER_SLACK_S = 0.1  # a counter may advance one update period (20-100 ms) at once
POWER_SMOOTHING_S = 1.0  # the bridging power follows the measured power over about a second


class Ledger:
    """The accounts of one source, updated by the sampler thread only.

    Args:
        source: The device reader.

    Attributes:
        gaps: Failed or dropped readings.
        resets: Counter resets seen. ``glitches``: implausible readings dropped.
        unmeasured_s: Seconds whose energy no reading covers (so far, the open gap included).
        last_error: The last reader error, for messages.
    """

    def __init__(self, source: EnergySource) -> None:
        self.source = source
        self.max_w = float(source.max_power_w)
        self.gaps = self.resets = self.glitches = 0
        self.streak = 0  # failed or dropped readings in a row
        self.last_error = ""
        self._confirmed_j = 0.0  # measured
        self._estimated_j = 0.0  # counted on estimates that no measurement replaced
        self._last_t: float | None = None  # time of the last good reading
        self._moved_t: float | None = None  # time of the last good counter reading that moved (or the first)
        self._opened_t: float | None = None  # time of the first read tried: silent from there if none answers
        self._last_value = 0.0  # its counter (J) or power (W)
        self._power_w: float | None = None  # power to bridge a gap with (None: not measured yet)
        self._in_gap = False
        self._pending: tuple[float, float] | None = None  # a counter jump waiting for confirmation
        self._before: tuple[float, float] | None = None  # the good counter reading before the last one
        self._closed_unmeasured_s = 0.0
        self._reported_j = 0.0
        self._now = 0.0
        self._bound_j = 0.0  # worst error accumulated reading by reading (see `bound_j`)
        self._recent_w: deque[float] = deque(maxlen=SPREAD_READINGS)  # recent polled powers
        self.check: CrossCheck | None = None  # the counter against the board's power, where it has both
        try:
            power = source.power_accuracy()
        except Exception:  # noqa: BLE001 - no second instrument to check against
            power = None
        if power is not None:
            self.check = CrossCheck(source, power)

    # ------------------------------------------------------------------ figures
    def _bridge_j(self, now: float) -> float:
        if not self._in_gap or self._last_t is None or self._power_w is None:
            return 0.0
        return self._power_w * (now - self._last_t)

    @property
    def total_j(self) -> float:
        """Joules since the source was opened, as last reported (monotone)."""
        return self._reported_j

    @property
    def estimated_j(self) -> float:
        """Joules of the total that rest on the last good power, not on a reading."""
        return self._reported_j - self._confirmed_j  # estimates, the open bridge, and any excess not yet paid back

    @property
    def bound_j(self) -> float:
        """Worst error of the total accumulated reading by reading (never decreases): polled
        powers' trapezoids, gaps closed as estimates, a model's documented share."""
        return self._bound_j

    @property
    def open_j(self) -> float:
        """The part of the total that a later reading may still take back: the open bridge and
        an estimate that ran high, not yet paid back."""
        bridge = self._bridge_j(self._now)
        unknown = self.max_w * self.silent_s if self._power_w is None else 0.0  # bridged at 0: anything up to the most
        return bridge + unknown + max(self._reported_j - (self._confirmed_j + self._estimated_j + bridge), 0.0)

    @property
    def unmeasured_s(self) -> float:
        return self._closed_unmeasured_s + self.silent_s

    @property
    def silent_s(self) -> float:
        """Seconds since the last good reading, or since the first read tried when none has answered yet
        (0 while readings come)."""
        since = self._last_t if self._last_t is not None else self._opened_t
        return self._now - since if self._in_gap and since is not None else 0.0

    @property
    def bridged_at_nothing(self) -> bool:
        """Whether the open gap's power is unknown (no power measured before it, or a counter that stood
        still): its energy is not counted, and the bound allows up to the most power over it."""
        return self._in_gap and self._power_w is None

    @property
    def never_read(self) -> bool:
        """Whether no reading has answered yet, though reads were tried (its energy is not counted)."""
        return self._last_t is None and self._in_gap

    # ------------------------------------------------------------------ updates
    def update(self, now: float) -> float:
        """Read the source once; returns the total. Never raises."""
        self._now = now
        if self._opened_t is None:
            self._opened_t = now
        reading: Reading | None
        try:
            reading = self.source.read(now)
        except Exception as err:  # noqa: BLE001 - any reader failure is a gap, never a crash
            self.last_error = f"{type(err).__name__}: {err}"
            reading = None
        if reading is None or (reading.joules is None and reading.watts is None):
            self._gap()
        elif reading.joules is not None:
            self._counter(now, float(reading.joules), reading.continuous)
        else:
            self._power(now, float(reading.watts))  # type: ignore[arg-type]
        if not self._in_gap:
            self.streak = 0
        total = self._confirmed_j + self._estimated_j + self._bridge_j(now)
        # An estimate that ran high (a gap bridged above the power the counter then showed) is
        # paid back by the next measured energy: the total holds still until the measurement
        # catches up, so it never goes back and ends exact.
        self._reported_j = max(self._reported_j, total)
        return self._reported_j

    def _gap(self) -> None:
        self.gaps += 1
        self.streak += 1
        self._in_gap = True
        if self.check is not None:
            self.check.restart()

    def _first_reading(self, now: float) -> None:
        """The first good reading, after reads that failed since ``_opened_t``: that span's energy is not in
        the total (a counter starts from this reading, a power from this moment); it is unmeasured, and may
        have been anything up to the board's most."""
        if self._in_gap and self._opened_t is not None:
            self._closed_unmeasured_s += now - self._opened_t
            self._bound_j += self.max_w * (now - self._opened_t)
        self._in_gap = False

    def _plausible(self, joules: float, seconds: float) -> bool:
        return 0.0 <= joules <= self.max_w * (max(seconds, 0.0) + COUNTER_SLACK_S)

    def _close_gap_as_estimate(self, until: float) -> None:
        """The interval since the last good reading is unknowable: its bridge becomes permanent."""
        if self._last_t is not None:
            bridge = self._bridge_j(until)
            self._estimated_j += bridge
            # The power across it may have been 0 or twice the last; before any power was measured
            # (bridged at 0), anything up to the board's most.
            self._bound_j += bridge if self._power_w is not None else self.max_w * (until - self._last_t)
            self._closed_unmeasured_s += until - self._last_t

    def _counter(self, now: float, joules: float, continuous: bool = True) -> None:
        if self._last_t is None:
            self._first_reading(now)
            self._last_t, self._last_value, self._moved_t = now, joules, now
            return
        delta, seconds = joules - self._last_value, now - self._last_t
        if delta == 0 and continuous and self._stands_still(now):
            return
        if delta < 0 and continuous:
            self._stepped_back(now, joules)
            return
        if not continuous:  # the interval since the last good reading is unknown: re-base
            self.gaps += 1
            self._in_gap = True
            self._close_gap_as_estimate(now)
            self._rebase(now, joules)
            return
        if not self._plausible(delta, seconds):
            pending = self._pending
            if pending is not None and self._plausible(joules - pending[1], now - pending[0]):
                self._in_gap = True  # the counter jumped for good at the pending reading: re-base there
                self._close_gap_as_estimate(pending[0])
                self._rebase(*pending)
                self._counter(now, joules)
                return
            self.glitches += 1
            self._pending = (now, joules)
            self._gap()
            return
        if delta > 0:
            self._moved_t = now
        self._confirmed_j += delta
        self._bound_j += self.source.accuracy.relative * delta
        self._smooth_power(delta, seconds)
        self._before = (self._last_t, self._last_value)
        self._last_t, self._last_value, self._in_gap, self._pending = now, joules, False, None
        if self.check is not None:
            self.check.update(now, self._confirmed_j)

    def _stands_still(self, now: float) -> bool:
        """Whether a counter that did not move is not counting (`Accuracy.still_s`): then its readings since
        it last moved are taken back into a gap whose power is unknown, and True."""
        still, moved = self.source.accuracy.still_s, self._moved_t
        if still is None or moved is None or now - moved < still:
            return False
        self.last_error = f"its counter has not moved for {now - moved:.3g} s (the device never draws 0 W)"
        if not self._in_gap:
            self._last_t, self._power_w, self._before = moved, None, None  # the same count, back at its last move
        self._gap()
        return True

    def _stepped_back(self, now: float, joules: float) -> None:
        """A counter reading below the last good one (a wrap was already added back by the reader). One such
        reading says nothing yet: the counter restarted (a driver reload), this read ran low, or the last one
        ran high (within the plausible power, so it was taken). It is held, as a forward jump is, and the next
        reading tells: back at or past the last good one, it was a glitch (dropped); going on from this one, a
        restart, unless this one goes on from the good reading before the last, which then ran high (taken back)."""
        pending = self._pending
        if pending is None or pending[1] > joules or not self._plausible(joules - pending[1], now - pending[0]):
            self.glitches += 1
            self._pending = (now, joules)
            self._gap()
            return
        before = self._before
        if (
            before is not None
            and before[1] <= pending[1]
            and self._plausible(pending[1] - before[1], pending[0] - before[0])
        ):
            taken = self._last_value - before[1]
            self._confirmed_j -= taken  # the total holds until the counter passes it again
            self._bound_j += taken  # a span from a mark while it was counted is off by it: its bound carries it
            self._last_t, self._last_value = before
            self._before, self._pending, self._in_gap = None, None, False
            self._counter(*pending)
            self._counter(now, joules)
            return
        self.glitches -= 1  # the held reading was no glitch: the counter restarted there
        self.resets += 1
        self.gaps += 1
        self._in_gap = True
        self._close_gap_as_estimate(pending[0])
        self._rebase(*pending)
        self._counter(now, joules)

    def _rebase(self, t: float, joules: float) -> None:
        self._last_t, self._last_value, self._in_gap, self._pending, self._moved_t = t, joules, False, None, t
        self._before = None
        if self.check is not None:
            self.check.restart()

    def _power(self, now: float, watts: float) -> None:
        if not 0.0 <= watts <= self.max_w:
            self.glitches += 1
            self._gap()
            return
        if self._last_t is not None:
            seconds = now - self._last_t
            joules = 0.5 * (watts + self._last_value) * seconds
            if self._in_gap:  # a line across the gap is an estimate
                self._estimated_j += joules
                self._bound_j += joules
                self._closed_unmeasured_s += seconds
            else:
                self._confirmed_j += joules
                self._bound_j += self._trapezoid_error(watts, seconds) + self.source.accuracy.relative * joules
        else:
            self._first_reading(now)
        self._recent_w.append(watts)
        self._power_w = watts
        self._last_t, self._last_value, self._in_gap = now, watts, False

    def _trapezoid_error(self, watts: float, seconds: float) -> float:
        """Worst error of one trapezoid from the previous power to ``watts`` over ``seconds``.

        An averaged power moves smoothly between readings: the trapezoid is off by at most half
        the step times the interval (the power monotone in between). An instantaneous one says
        nothing of the power in between: half the spread of the last `SPREAD_READINGS` readings,
        at least. A load that repeats at the sampling interval can put every reading on one level
        (aliasing); the sampler's dither (+-20% per reading) walks the readings' phase across such
        a period within about 20 readings, so 32 readings show its spread. Before 32 readings the
        spread shows nothing yet: the power may be anywhere from 0 to the board's plausible most
        (``max_w``, twice its highest limit), and half that range is taken. Either way each reading
        may be off by the power's resolution (`Accuracy.resolution_w`).
        """
        step = abs(watts - self._last_value)
        if self.source.accuracy.sampled:
            recent = [*self._recent_w, watts]
            seen = self.max_w if len(self._recent_w) < SPREAD_READINGS else max(recent) - min(recent)
            step = max(step, seen)
        return (0.5 * step + self.source.accuracy.resolution_w) * seconds

    def _smooth_power(self, joules: float, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._power_w is None:
            self._power_w = joules / seconds
            return
        weight = min(1.0, seconds / POWER_SMOOTHING_S)
        self._power_w += weight * (joules / seconds - self._power_w)
