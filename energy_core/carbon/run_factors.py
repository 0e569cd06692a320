"""RunFactors: the grid intensity, the electricity price and the PUE one run is charged at.

Each factor is a `Factor` over time (a fixed figure, a recorded series, or a live API; see
`energy_core.carbon.factor`), and the PUE applies to both. This class answers what the rest of
a run needs of them: the live one's refresh thread, the figures in force at a moment (for
the record's header and summary, and for a budget's limits), the price of one more kWh,
and the run record's ``factor`` lines (every value used, from when, where it came from).
`Charges` prices the energy itself, reading by reading, with the same factors.

Example:
    >>> from energy_core.carbon.factor import Fixed
    >>> factors = RunFactors(Fixed(400.0, "given"), None, pue=1.5, currency="EUR")
    >>> factors.per_kwh(when=0.0)
    (0.6, 0.0)
"""

from __future__ import annotations

from typing import Any

from energy_core.carbon.factor import Factor
from energy_core.notices import Notice

# The factors' names in the record's factor lines.
CARBON, PRICE = "carbon_g_per_kwh", "price_per_kwh"


class RunFactors:
    """The factors of one run.

    Args:
        carbon: The grid intensity over time (g CO2e/kWh).
        price: The electricity price over time (per kWh), or None.
        pue: The data centre's power usage effectiveness (applied to both).
        currency: The price's currency.
    """

    def __init__(self, carbon: Factor, price: Factor | None, pue: float, currency: str) -> None:
        self.carbon, self.price, self.pue, self.currency = carbon, price, pue, currency
        self._written = {CARBON: 0, PRICE: 0}  # values of each factor's history already in the record

    def start(self) -> None:
        """A fit starts: a live intensity refreshes on its own thread from now."""
        self.carbon.start()

    def stop(self) -> None:
        self.carbon.stop()

    def take_notices(self) -> list[Notice]:
        """What the factors found (a series that ends, a live source that fails), once."""
        return self.carbon.take_notices() + (self.price.take_notices() if self.price else [])

    def fields(self, when: float) -> dict[str, Any]:
        """The carbon factor in force at unix time ``when``, its source and the PUE."""
        now = self.carbon.at(when)
        return {"g_per_kwh": now.value, "source": now.source, "pue": self.pue}

    def header(self, when: float) -> dict[str, Any]:
        """The record header's carbon fields: `fields`, how each factor is given, the currency."""
        return {
            **self.fields(when),
            "factor": self.carbon.describe(),
            "price": self.price.describe() if self.price else None,
            "currency": self.currency,
        }

    @property
    def cost_currency(self) -> str | None:
        """The currency of the run's cost; None without a price (no cost)."""
        return self.currency if self.price is not None else None

    def per_kwh(self, when: float, kept: bool = True) -> tuple[float, float]:
        """(kg CO2e, cost) of one more kWh at unix time ``when``, PUE applied.

        ``kept``: the values used go into the factors' history (for the record's factor
        lines); False for a preview, which must not enter it.
        """
        carbon = (self.carbon.at if kept else self.carbon.peek)(when).value
        price = (self.price.at if kept else self.price.peek)(when).value if self.price is not None else 0.0
        return self.pue * carbon / 1000.0, self.pue * price

    def changes(self, start: float, end: float) -> list[float]:
        """The unix times strictly between ``start`` and ``end`` where the intensity or the price
        changes (known in advance: a series' rows), in order."""
        found = set(self.carbon.changes(start, end))
        if self.price is not None:
            found.update(self.price.changes(start, end))
        return sorted(found)

    def new_lines(self) -> list[dict[str, Any]]:
        """The record's factor lines not written yet: every value used since, from when, its source."""
        found = []
        for name, factor in ((CARBON, self.carbon), (PRICE, self.price)):
            new = factor.history[self._written[name] :] if factor is not None else []
            found += [{"factor": name, "value": v.value, "source": v.source, "since": v.since} for v in new]
            self._written[name] += len(new)
        return found
