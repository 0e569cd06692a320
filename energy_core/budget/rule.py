"""BudgetRule: the limits of a run (energy, CO2e, cost), validated, and what they mean in kWh now."""

from __future__ import annotations

import math

from energy_core import checks
from energy_core.output import units_text as show
from energy_core.units import MAX_CO2E_KG, MAX_COST, MAX_KWH

FORECAST_MODES = ("warn", "stop", "off")


class BudgetRule:
    """Limits of a run: energy in kWh, carbon in kg CO2e, electricity cost, or several.

    Args:
        max_kwh: Stop once the measured total (all devices, no PUE) reaches this.
        max_co2e_kg: Stop once the CO2e (each slice of energy x PUE x the intensity in
            force) reaches this.
        max_cost: Stop once the electricity cost (needs ``price_per_kwh``) reaches this.
        forecast: ``"warn"``, ``"stop"`` or ``"off"``: what to do when the projected
            total for the whole run exceeds a limit.

    Raises:
        TypeError: naming the argument, for a limit that is not a number (a bool is not).
        ValueError: naming the argument, for a non-positive limit or one beyond any run's
            (`energy_core.units`), no limit at all, or an unknown ``forecast``.
    """

    def __init__(
        self,
        max_kwh: float | None = None,
        max_co2e_kg: float | None = None,
        max_cost: float | None = None,
        forecast: str = "warn",
    ) -> None:
        self.max_kwh = checks.number("max_kwh", max_kwh, low=0, high=MAX_KWH, low_open=True, optional=True)
        self.max_co2e_kg = checks.number(
            "max_co2e_kg", max_co2e_kg, low=0, high=MAX_CO2E_KG, low_open=True, optional=True
        )
        self.max_cost = checks.number("max_cost", max_cost, low=0, high=MAX_COST, low_open=True, optional=True)
        self.forecast = checks.choice("forecast", forecast, FORECAST_MODES)
        if self.max_kwh is None and self.max_co2e_kg is None and self.max_cost is None:
            raise ValueError("EnergyBudget needs a limit: max_kwh, max_co2e_kg and/or max_cost, each a number > 0")

    def reached(self, kwh: float, co2e_kg: float, cost: float) -> bool:
        """Whether these totals reach a limit."""
        return any(
            limit is not None and spent >= limit
            for limit, spent in ((self.max_kwh, kwh), (self.max_co2e_kg, co2e_kg), (self.max_cost, cost))
        )

    def limit_kwh(self, spent: tuple[float, float, float], per_kwh: tuple[float, float]) -> float:
        """The binding limit in kWh of measured energy, at the factors in force now.

        Args:
            spent: (kWh, kg CO2e, cost) so far.
            per_kwh: (kg CO2e, cost) of one more kWh now (PUE applied).
        """
        kwh, co2, cost = spent
        limits = [] if self.max_kwh is None else [self.max_kwh]
        for limit, used, rate in ((self.max_co2e_kg, co2, per_kwh[0]), (self.max_cost, cost, per_kwh[1])):
            if limit is not None:
                limits.append(kwh + (limit - used) / rate if rate > 0 else math.inf)
        return min(limits)

    @property
    def only_energy(self) -> bool:
        """Whether the only limit is in kWh (no CO2e or cost limit to convert at the factors in force)."""
        return self.max_co2e_kg is None and self.max_cost is None

    def describe(self) -> str:
        """The limits as given, each with its figure in the unit that fits: ``max_kwh=4e-07 (1.44 J)``."""
        parts = [f"max_kwh={self.max_kwh:g} ({show.energy_kwh(self.max_kwh)})"] if self.max_kwh is not None else []
        if self.max_co2e_kg is not None:
            parts.append(f"max_co2e_kg={self.max_co2e_kg:g} ({show.mass(self.max_co2e_kg)} CO2e)")
        if self.max_cost is not None:
            parts.append(f"max_cost={self.max_cost:g}")
        return " / ".join(parts)
