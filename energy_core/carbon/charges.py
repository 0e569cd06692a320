"""Charges: CO2e and electricity cost, each slice of energy at the factors in force when it was used.

``carbon/co2e_kg`` is the sum over slices of kWh x PUE x intensity / 1000, and ``cost/total``
of kWh x PUE x price; a slice is the energy between two boundaries (logging windows, stage
and fit ends), charged at the factors in force at its midpoint (so a change of intensity
inside a slice is off by half that slice's energy at most). With fixed factors this is
simply total kWh x PUE x factor.

Examples:
    >>> from energy_core.carbon.run_factors import RunFactors
    >>> from energy_core.carbon.factor import Fixed
    >>> charges = Charges(RunFactors(Fixed(400.0, "given"), None, pue=1.5, currency="EUR"))
    >>> charges.charge(3.6e6, when=0.0)   # the first kWh
    >>> round(charges.co2e_kg, 6)
    0.6
"""

from __future__ import annotations

import threading

from energy_core.carbon.run_factors import RunFactors
from energy_core.units import J_PER_KWH


class Charges:
    """The CO2e and cost of the energy used since a fit started (this process).

    Thread-safe: the sampler thread previews (budgets) while the training thread charges.

    Args:
        factors: The run's intensity and price over time, and its PUE.
    """

    def __init__(self, factors: RunFactors) -> None:
        self.factors = factors
        self.co2e_kg = 0.0
        self.cost = 0.0
        self.charged_j = 0.0
        self.charged_at: float | None = None  # when the last slice ended
        self._rates = (0.0, 0.0)  # kg CO2e and cost per kWh (PUE applied) of the last slice charged
        self._lock = threading.Lock()

    def _slice(self, total_j: float, when: float, kept: bool) -> tuple[float, float, tuple[float, float]]:
        """(CO2e kg, cost, rates) of the energy since the last charge; ``kept``: the factors'
        values go into their history (a charge, not a preview)."""
        kwh = (total_j - self.charged_j) / J_PER_KWH
        if kwh < 0:  # the last boundary was extrapolated past the newest reading and the exact figure
            # came in lower: the excess is taken back at the rates it was charged at, never below zero
            co2, cost = max(kwh * self._rates[0], -self.co2e_kg), max(kwh * self._rates[1], -self.cost)
            return co2, cost, self._rates
        middle = when if self.charged_at is None or self.charged_at > when else (self.charged_at + when) / 2
        rates = self.factors.per_kwh(middle, kept)
        return kwh * rates[0], kwh * rates[1], rates

    def preview(self, total_j: float, when: float) -> tuple[float, float]:
        """(CO2e kg, cost) if the energy up to ``total_j`` were charged at ``when``; nothing changes."""
        with self._lock:
            co2, cost, _ = self._slice(total_j, when, kept=False)
            return self.co2e_kg + co2, self.cost + cost

    def charge(self, total_j: float, when: float) -> None:
        """Charge the energy used since the last charge (which ends at ``when``)."""
        with self._lock:
            co2, cost, self._rates = self._slice(total_j, when, kept=True)
            self.co2e_kg += co2
            self.cost += cost
            self.charged_j = total_j
            self.charged_at = when

    def restart(self, when: float | None = None) -> None:
        """A new fit starting at ``when``: its energy counts from zero (earlier fits are in the
        resumed totals)."""
        with self._lock:
            self.co2e_kg = self.cost = self.charged_j = 0.0
            self.charged_at = when
            self._rates = (0.0, 0.0)
