"""Charges: CO2e and electricity cost, each slice of energy at the factors in force when it was used.

``carbon/co2e_kg`` is the sum over slices of kWh x PUE x intensity / 1000, and ``cost/total``
of kWh x PUE x price; a slice is the energy between two boundaries (logging windows, stage
and fit ends), charged at the factors in force at its midpoint (so a change of intensity
inside a slice is off by half that slice's energy at most). With fixed factors this is
simply total kWh x PUE x factor.

Examples:
    >>> from energy_core.intensity import Fixed
    >>> charges = Charges(Fixed(400.0, "given"), None, pue=1.5)
    >>> charges.charge(3.6e6, when=0.0)   # the first kWh
    >>> round(charges.co2e_kg, 6)
    0.6
"""

from __future__ import annotations

from energy_core.intensity import Factor
from energy_core.totals import J_PER_KWH


class Charges:
    """The CO2e and cost of the energy used since a fit started (this process).

    Args:
        carbon: The grid intensity over time (g CO2e/kWh).
        price: The electricity price over time (per kWh), or None.
        pue: The data centre's power usage effectiveness (applied to both).
    """

    def __init__(self, carbon: Factor, price: Factor | None, pue: float) -> None:
        self.carbon, self.price, self.pue = carbon, price, pue
        self.co2e_kg = 0.0
        self.cost = 0.0
        self.charged_j = 0.0
        self.charged_at: float | None = None  # when the last slice ended

    def _slice(self, total_j: float, when: float) -> tuple[float, float]:
        # negative when the last boundary was extrapolated past the newest reading and the exact
        # figure came in lower: the excess is taken back, so fixed factors stay exactly total x factor
        kwh = (total_j - self.charged_j) / J_PER_KWH * self.pue
        middle = when if self.charged_at is None or self.charged_at > when else (self.charged_at + when) / 2
        co2 = kwh * self.carbon.at(middle).value / 1000.0
        cost = kwh * self.price.at(middle).value if self.price is not None else 0.0
        return co2, cost

    def preview(self, total_j: float, when: float) -> tuple[float, float]:
        """(CO2e kg, cost) if the energy up to ``total_j`` were charged at ``when``; nothing changes."""
        co2, cost = self._slice(total_j, when)
        return self.co2e_kg + co2, self.cost + cost

    def charge(self, total_j: float, when: float) -> None:
        """Charge the energy used since the last charge (which ends at ``when``)."""
        co2, cost = self._slice(total_j, when)
        self.co2e_kg += co2
        self.cost += cost
        self.charged_j = total_j
        self.charged_at = when

    def restart(self, when: float | None = None) -> None:
        """A new fit starting at ``when``: its energy counts from zero (earlier fits are in the
        resumed totals)."""
        self.co2e_kg = self.cost = self.charged_j = 0.0
        self.charged_at = when
