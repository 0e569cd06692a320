"""Charges: CO2e and electricity cost of the energy since a fit started, at the factors in force when it was used.

``carbon/co2e_kg`` is the sum of kWh x PUE x intensity / 1000 over the energy used, and
``cost/total`` of kWh x PUE x price. The energy between two hardware readings is charged on
the sampler thread as the second reading comes (`Charges.take`), spread evenly over the time
between them and split where a factor changes (a series' row): the figure is the integral of
power x factor to within what the readings themselves miss, however long the logging windows
(a window charged at one intensity was off by up to the whole swing of the intensity
inside it). A figure at a boundary (`Charges.at`) adds the energy since the last reading,
priced the same way, and changes nothing. With fixed factors this is total kWh x PUE x factor.

Where a factor changes, how a reading's energy splits about the change is not known (it is
spread evenly; a counter's or an average's reading also trails the truth by up to ``reach_s``):
each reading that spans a change, or comes within ``reach_s`` after one, may be priced off by
its energy times the change (part of the bound of ``carbon/co2e_kg``: `Charges.bound`).

Examples:
    >>> from energy_core.carbon.run_factors import RunFactors
    >>> from energy_core.carbon.factor import Fixed
    >>> charges = Charges(RunFactors(Fixed(400.0, "given"), None, pue=1.5, currency="EUR"))
    >>> charges.restart(0.0)
    >>> charges.take(3.6e6, when=3600.0)   # the first kWh, read an hour in
    >>> round(charges.at(3.6e6, when=3600.0)[0], 6)
    0.6
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from itertools import pairwise
from typing import Any, ClassVar

from energy_core.carbon.factor import MadeAgain
from energy_core.carbon.run_factors import RunFactors
from energy_core.units import J_PER_KWH


class Charges(MadeAgain):
    """The CO2e and cost of the energy used since a fit started (this process).

    Thread-safe: the sampler thread charges each reading, the training thread and budgets
    ask for the figures at any moment.

    Args:
        factors: The run's intensity and price over time, and its PUE.

    Attributes:
        co2e_kg, cost: What the energy up to the last reading charged cost.
        charged_j: The joules since the fit started at the last reading charged.
        charged_at: When that reading was taken (unix time), or the fit started.
        reach_s: How long before it a reading's energy may have been used (`restart`).
    """

    MADE_AGAIN: ClassVar[dict[str, Callable[[], Any]]] = {"_lock": threading.Lock}

    def __init__(self, factors: RunFactors) -> None:
        self.factors = factors
        self.co2e_kg = 0.0
        self.cost = 0.0
        self.charged_j = 0.0
        self.charged_at = 0.0
        self.reach_s = 0.0
        self._doubt = (0.0, 0.0)  # (kg, cost) the charges so far may be off by where factors changed
        self._highest = (0.0, 0.0)  # (kg, cost) per kWh: the highest factors in force up to the last reading
        self._lock = threading.Lock()

    def _rates(self, start: float, end: float, kept: bool = False) -> list[tuple[float, tuple[float, float]]]:
        """(seconds, (kg, cost) per kWh) of each stretch between unix times ``start`` and ``end``
        (either order) over which the factors stay the same; one stretch of 0 s at ``end`` when the
        span is empty. ``kept``: the values go into the factors' history (see `RunFactors.per_kwh`)."""
        low, high = min(start, end), max(start, end)
        if high <= low:
            return [(0.0, self.factors.per_kwh(high, kept))]
        return [
            (b - a, self.factors.per_kwh((a + b) / 2, kept))
            for a, b in pairwise([low, *self.factors.changes(low, high), high])
        ]

    def _swing(self, start: float, end: float) -> tuple[float, float]:
        """(kg, cost) per kWh: the sum of the factors' changes between unix times ``start`` and
        ``end`` (0 without a change: fixed factors, or a series' row not crossed)."""
        rates = [r for _, r in self._rates(start, end)]
        return (
            sum(abs(b[0] - a[0]) for a, b in pairwise(rates)),
            sum(abs(b[1] - a[1]) for a, b in pairwise(rates)),
        )

    def _top(self, start: float, end: float, seed: tuple[float, float]) -> tuple[float, float]:
        """(kg, cost) per kWh: the highest factors in force between unix times ``start`` and ``end``,
        or ``seed`` if higher."""
        rates = [r for _, r in self._rates(start, end)]
        return max([seed[0], *(r[0] for r in rates)]), max([seed[1], *(r[1] for r in rates)])

    def bound(self, joules_err: float, live_j: float, when: float) -> tuple[float, float]:
        """(kg CO2e, cost): the bound of the figures of `at` (``live_j`` joules at unix time
        ``when``) when those joules are known to within ``joules_err``. Where in the span the
        energy's error lies is not known (mostly at its ends, where the factors may be far from
        their mean): it is priced at the highest factors in force since a reading's reach before
        the fit began. Each reading split evenly about a change of a factor adds its energy times
        the change. With fixed factors: the energy's relative bound."""
        with self._lock:
            kg, cost = self._top(self.charged_at, when, self._highest)
            swing_kg, swing_cost = self._swing(self.charged_at - self.reach_s, when)
            pending, kwh_err = abs(live_j - self.charged_j) / J_PER_KWH, joules_err / J_PER_KWH
            return (
                kg * kwh_err + self._doubt[0] + pending * swing_kg,
                cost * kwh_err + self._doubt[1] + pending * swing_cost,
            )

    def _priced(self, start: float, end: float, joules: float, kept: bool) -> tuple[float, float]:
        """(CO2e kg, cost) of ``joules`` used evenly from unix time ``start`` to ``end`` (either
        order; a negative amount is taken back), split at every change of a factor between them.
        ``kept``: the factors' values go into their history (a charge, not a figure asked for)."""
        kwh = joules / J_PER_KWH
        stretches = self._rates(start, end, kept)
        seconds = sum(length for length, _ in stretches)
        if seconds <= 0:
            return kwh * stretches[-1][1][0], kwh * stretches[-1][1][1]
        return (
            sum(kwh * length / seconds * rates[0] for length, rates in stretches),
            sum(kwh * length / seconds * rates[1] for length, rates in stretches),
        )

    def take(self, live_j: float, when: float) -> None:
        """A reading at unix time ``when`` found ``live_j`` joules used since the fit started:
        charge what it adds (sampler thread)."""
        with self._lock:
            if when < self.charged_at:  # a reading taken before the fit began
                return
            added = live_j - self.charged_j
            co2, cost = self._priced(self.charged_at, when, added, kept=True)
            self.co2e_kg, self.cost = max(self.co2e_kg + co2, 0.0), max(self.cost + cost, 0.0)
            kg, price = self._swing(self.charged_at - self.reach_s, when)
            if kg or price:
                kwh = abs(added) / J_PER_KWH
                self._doubt = (self._doubt[0] + kwh * kg, self._doubt[1] + kwh * price)
            self._highest = self._top(self.charged_at, when, self._highest)
            self.charged_j, self.charged_at = live_j, when

    def at(self, live_j: float, when: float) -> tuple[float, float]:
        """(CO2e kg, cost) when ``live_j`` joules had been used at unix time ``when``: the charges up
        to the last reading, and the energy from it to ``when`` (or back to ``when``, for a moment
        a reading has passed) priced at the factors in force then. Nothing changes."""
        with self._lock:
            co2, cost = self._priced(self.charged_at, when, live_j - self.charged_j, kept=False)
            return max(self.co2e_kg + co2, 0.0), max(self.cost + cost, 0.0)

    def restart(self, when: float, reach_s: float = 0.0) -> None:
        """A new fit starting at unix time ``when``: its energy counts from zero (earlier fits are
        in the resumed totals). ``reach_s``: how long before it a reading's energy may have been
        used (a counter's update period, an average's span)."""
        with self._lock:
            self.co2e_kg = self.cost = self.charged_j = 0.0
            self.charged_at, self.reach_s = when, reach_s
            self._doubt = (0.0, 0.0)
            self._highest = self._top(when - reach_s, when, (0.0, 0.0))
