"""Typed figures into the metric dictionaries of the spec (the only place keys are filled)."""

from __future__ import annotations

from energy_core import keys
from energy_core.carbon import CarbonIntensity, co2e_kg
from energy_core.totals import J_PER_KWH, RunTotals
from energy_core.window import WindowFigures


def cumulative(totals: RunTotals, intensity: CarbonIntensity, pue: float, cap_w: float | None) -> dict[str, float]:
    """``energy/total_kwh``, ``energy/<kind>_kwh``, ``carbon/*`` and, while a cap is in force, ``power/cap_w``."""
    total_kwh = totals.total_kwh
    metrics = {keys.TOTAL_KWH: total_kwh}
    for kind in sorted(totals.energy_j):
        metrics[keys.kind_kwh(kind)] = totals.energy_j[kind] / J_PER_KWH
    metrics[keys.CO2E_KG] = co2e_kg(total_kwh, pue, intensity.g_per_kwh)
    metrics[keys.INTENSITY] = intensity.g_per_kwh
    if cap_w is not None:
        metrics[keys.CAP_W] = cap_w
    return metrics


def window(figures: WindowFigures) -> dict[str, float]:
    """Power, throughput, J per step/sample/token of one window (only the figures it resolves)."""
    metrics: dict[str, float] = {}
    if figures.seconds > 0:
        metrics[keys.TOTAL_W] = figures.joules / figures.seconds
        for name, joules in figures.gpu_j.items():
            metrics[keys.gpu_w(name)] = joules / figures.seconds
        if figures.samples:
            metrics[keys.SAMPLES_PER_S] = figures.samples / figures.seconds
        if figures.tokens:
            metrics[keys.TOKENS_PER_S] = figures.tokens / figures.seconds
    if figures.steps > 0:
        metrics[keys.STEP_J] = figures.joules / figures.steps
    if figures.samples:
        metrics[keys.J_PER_SAMPLE] = figures.joules / figures.samples
    if figures.tokens:
        metrics[keys.J_PER_TOKEN] = figures.joules / figures.tokens
    return metrics
