"""Typed figures into the metric dictionaries of the spec (the only place keys are filled)."""

from __future__ import annotations

from energy_core.accounting.figures import RunTotals, WindowFigures
from energy_core.output import keys
from energy_core.units import J_PER_KWH


def cumulative(totals: RunTotals, g_per_kwh: float, priced: bool, cap_w: float | None) -> dict[str, float]:
    """``energy/total_kwh``, ``energy/<kind>_kwh``, ``carbon/*`` (``g_per_kwh``: the intensity in
    force now), ``cost/total`` when a price is set, ``power/cap_w`` while a cap is in force; each
    energy, CO2e and cost figure with its bound (``*_err``)."""
    metrics = {keys.TOTAL_KWH: totals.total_kwh, keys.err(keys.TOTAL_KWH): totals.total_err / J_PER_KWH}
    for kind in sorted(totals.energy_j):
        metrics[keys.kind_kwh(kind)] = totals.energy_j[kind] / J_PER_KWH
        metrics[keys.err(keys.kind_kwh(kind))] = totals.energy_err.get(kind, 0.0) / J_PER_KWH
    metrics[keys.CO2E_KG] = totals.co2e_kg
    metrics[keys.err(keys.CO2E_KG)] = totals.co2e_err
    metrics[keys.INTENSITY] = g_per_kwh
    if priced:
        metrics[keys.COST] = totals.cost
        metrics[keys.err(keys.COST)] = totals.cost_err
    return {**metrics, **cap(cap_w)}


def stage(stage: str, kwh: float, kwh_err: float) -> dict[str, float]:
    """``energy/<stage>_kwh``: the stage's energy so far, and its bound."""
    return {keys.stage_kwh(stage): kwh, keys.err(keys.stage_kwh(stage)): kwh_err}


def epoch(joules: float, joules_err: float) -> dict[str, float]:
    """``energy/epoch_kwh``: the epoch's energy (validation included), and its bound."""
    return {keys.EPOCH_KWH: joules / J_PER_KWH, keys.err(keys.EPOCH_KWH): joules_err / J_PER_KWH}


def cap(cap_w: float | None) -> dict[str, float]:
    """``power/cap_w`` while a cap is in force (known even when no energy figure is)."""
    return {keys.CAP_W: cap_w} if cap_w is not None else {}


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
        metrics[keys.err(keys.STEP_J)] = figures.joules_err / figures.steps
    if figures.samples:
        metrics[keys.J_PER_SAMPLE] = figures.joules / figures.samples
    if figures.tokens:
        metrics[keys.J_PER_TOKEN] = figures.joules / figures.tokens
    return metrics


def shift(paused_s: float, saved_kg: float) -> dict[str, float]:
    """``carbon/paused_s`` and ``carbon/saved_kg`` of a time shift."""
    return {keys.PAUSED_S: paused_s, keys.SAVED_KG: saved_kg}
