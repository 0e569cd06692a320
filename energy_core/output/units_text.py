"""Figures as a person reads them: each in the unit that fits, rounded one way everywhere.

The loggers keep the spec's units (``energy/total_kwh`` in kWh, ``carbon/co2e_kg`` in kg);
whatever a person reads (the end-of-fit summary, budget messages, the progress bar, the
report's tables, its plots' axes, the W&B run summary) goes through these functions, so a
figure reads the same wherever it is shown: ``75.7 J``, ``2.19 Wh``, ``1.3 mg``.

Rounding, written once: three significant digits below 100 (``0.0154``, ``2.19``,
``75.7``), a whole number with thousands separators from 100 up (``123``, ``3,599``); never
an exponent. The unit is the largest of its ladder in which the figure, so rounded, is at
least 1 (a value that rounds up to the next unit is shown in it). Rounding is monotone: a
larger figure never reads smaller, so a total told first never reads above the same total
told later.

Examples:
    >>> energy(78.9), energy(7884.0), energy(2.19e-05 * 3.6e6), energy(0.00154)
    ('78.9 J', '2.19 Wh', '78.8 J', '1.54 mJ')
    >>> mass(1.296e-06), mass(0.5), power(2.1855), duration(3725.0)
    ('1.3 mg', '500 g', '2.19 W', '1 h 02 min')
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from energy_core.units import J_PER_KWH

# (name, size in the base unit), smallest first: joules, kilograms, watts.
ENERGY = (("mJ", 1e-3), ("J", 1.0), ("Wh", 3600.0), ("kWh", J_PER_KWH), ("MWh", 1000 * J_PER_KWH))
MASS = (("mg", 1e-6), ("g", 1e-3), ("kg", 1.0), ("t", 1000.0))
POWER = (("W", 1.0), ("kW", 1e3), ("MW", 1e6))

Ladder = Sequence[tuple[str, float]]


def rounded(value: float) -> str:
    """A number as every figure is shown: 3 significant digits below 100, a whole number above."""
    if not math.isfinite(value):
        return "-"
    size = abs(value)
    if size >= 99.95:
        return f"{value:,.0f}"
    if size == 0:
        return "0"
    decimals = max(0, 2 - math.floor(math.log10(size)))
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def unit_for(value: float, ladder: Ladder) -> tuple[str, float]:
    """The unit of ``ladder`` a figure of this size is shown in: (name, size in the base unit); zero is
    shown in the base unit (``0 J``)."""
    size = abs(value)
    if size == 0:
        return next((unit for unit in ladder if unit[1] == 1.0), ladder[0])
    for name, unit in reversed(ladder):
        if float(rounded(size / unit).replace(",", "")) >= 1:
            return name, unit
    return ladder[0]


def scaled(value: float, ladder: Ladder) -> str:
    """``value`` (in the ladder's base unit) in the unit that fits, e.g. ``"75.7 J"``."""
    if not math.isfinite(value):
        return "-"
    name, unit = unit_for(value, ladder)
    return f"{rounded(value / unit)} {name}"


def energy(joules: float) -> str:
    """Energy in mJ, J, Wh, kWh or MWh."""
    return scaled(joules, ENERGY)


def energy_kwh(kwh: float) -> str:
    """Energy given in kWh (the loggers' unit), in the unit that fits."""
    return energy(kwh * J_PER_KWH)


def mass(kg: float) -> str:
    """A mass (CO2e) in mg, g, kg or t."""
    return scaled(kg, MASS)


def power(watts: float) -> str:
    """Power in W, kW or MW."""
    return scaled(watts, POWER)


def share(value: float, err: float | None) -> str:
    """A figure's bound as a share of it, as every place shows it: ``"± 0.3 %"``, ``"± 120 %"``;
    ``""`` where there is no bound (or no figure to take a share of)."""
    if err is None or not math.isfinite(err) or not value:
        return ""
    return f"± {rounded(100 * err / abs(value))} %"


def money(amount: float, currency: str) -> str:
    """A cost in its currency, as every figure: ``"0.000019 EUR"``, ``"1,234 USD"`` (never an exponent)."""
    return f"{rounded(amount)} {currency}".strip()


def duration(seconds: float) -> str:
    """A span of time: ``"34.6 s"``, ``"12 min 05 s"``, ``"3 h 20 min"``, ``"2 d 04 h"``."""
    if not math.isfinite(seconds):
        return "-"
    if seconds < 59.95:  # what rounds to 60 s is a minute
        return f"{rounded(seconds)} s"
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s"
