"""The end-of-run summary: the record's summary fields and the console's few lines."""

from __future__ import annotations

from typing import Any

from energy_core.accounting.figures import STAGES, RunTotals
from energy_core.devices import DEVICE_KINDS
from energy_core.notices import Notice
from energy_core.output import keys
from energy_core.sampling.meter import EnergyMeter
from energy_core.units import J_PER_KWH


def summary_fields(
    metrics: dict[str, float],
    totals: RunTotals,
    stage_kwh: dict[str, float],
    carbon: dict[str, Any],
    meter: EnergyMeter,
    currency: str | None = None,
    parts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record's summary line (besides type, step and status).

    Args:
        metrics: The final cumulative metrics.
        totals: The run's totals (work and seconds).
        stage_kwh: Energy of each non-training stage.
        carbon: The carbon factor's source and the PUE (`EnergyTracker.carbon_fields`); the mean
            intensity, weighted by energy, is added.
        meter: The run's meter: its gaps per source, its estimated sources, and per source with
            any fault: gaps, resets, glitches, seconds not measured and joules bridged at the
            last good power (`EnergyMeter.quality`).
        currency: The price's currency, when a price was set.
        parts: What other runs add, by name (``time_shift``: see `shift_line`).
    """
    failed_reads, estimated, faults = meter.failed_reads(), meter.estimated, meter.quality()
    joules = metrics.get(keys.TOTAL_KWH, 0.0) * J_PER_KWH
    joules_err = metrics.get(keys.err(keys.TOTAL_KWH), 0.0) * J_PER_KWH
    seconds = totals.fit_s
    kwh_pue = joules / J_PER_KWH * carbon["pue"]
    mean_g = 1000 * metrics.get(keys.CO2E_KG, 0.0) / kwh_pue if kwh_pue > 0 else carbon["g_per_kwh"]
    return {
        "metrics": metrics,
        "energy_j_err": joules_err,
        "seconds": seconds,
        "mean_power_w": joules / seconds if seconds > 0 else None,
        "samples": totals.samples,
        "tokens": totals.tokens,
        "j_per_sample": joules / totals.samples if totals.samples else None,
        "j_per_token": joules / totals.tokens if totals.tokens else None,
        "stage_kwh": {s: stage_kwh[s] for s in STAGES},
        "failed_reads": failed_reads,
        "estimated": estimated,
        "faults": faults,
        "unmeasured_s": max((f["unmeasured_s"] for f in faults.values()), default=0.0),
        "estimated_share": sum(f["estimated_j"] for f in faults.values()) / joules if joules > 0 else 0.0,
        "carbon": {**carbon, "g_per_kwh": mean_g},
        "cost": {"total": metrics.get(keys.COST, 0.0), "currency": currency} if currency else None,
        **(parts or {}),
    }


def quality_notices(fields: dict[str, Any]) -> list[Notice]:
    """One warning when part of the run's energy rests on estimates bridging a gap."""
    faults = {name: f for name, f in fields["faults"].items() if f["unmeasured_s"] > 0 or f["estimated_j"] > 0}
    if not faults:
        return []
    parts = "; ".join(
        f"{name} {f['unmeasured_s']:.1f} s not measured"
        + (f" (last error: {f['last_error']})" if f["last_error"] else "")
        for name, f in faults.items()
    )
    text = (
        f"Part of this run was not measured: {parts}. {100 * fields['estimated_share']:.1f}% of the energy is "
        "estimated from the last good power of each device (see the run record's summary, 'faults')."
    )
    return [Notice("warn", text)]


def summary_text(fields: dict[str, Any], estimated_kinds: set[str]) -> str:
    """A few lines for the console at the end of a run, from `summary_fields`."""
    metrics = fields["metrics"]
    carbon = fields["carbon"]
    kwh = metrics.get(keys.TOTAL_KWH, 0.0)
    kwh_err = metrics.get(keys.err(keys.TOTAL_KWH))
    bound = f" ± {100 * kwh_err / kwh:.2g} %" if kwh_err is not None and kwh > 0 else ""  # how exact it is
    kinds = sorted(k for k in DEVICE_KINDS if keys.kind_kwh(k) in metrics)
    parts = ", ".join(
        f"{k} {metrics[keys.kind_kwh(k)]:.6g} kWh" + (" (estimated)" if k in estimated_kinds else "") for k in kinds
    )
    mean_w = fields["mean_power_w"]
    lines = [
        f"Energy: {kwh:.6g} kWh{bound} ({kwh * J_PER_KWH:,.1f} J) [{parts or 'no device measured'}] "
        f"over {fields['seconds']:.1f} s" + (f", mean {mean_w:.1f} W" if mean_w is not None else ""),
        f"CO2e: {metrics.get(keys.CO2E_KG, 0.0) * 1000:.4g} g at {carbon['g_per_kwh']:.4g} g/kWh "
        f"x PUE {carbon['pue']:g} ({carbon['source']})",
    ]
    if fields.get("cost"):
        lines.append(f"Electricity cost: {fields['cost']['total']:.4g} {fields['cost']['currency']} (PUE applied)")
    if fields["samples"]:
        work = f"Work: {fields['samples']:,} samples, {fields['j_per_sample']:.4g} J/sample"
        if fields["tokens"]:
            work += f"; {fields['tokens']:,} tokens, {fields['j_per_token']:.4g} J/token"
        lines.append(work)
    stages = ", ".join(f"{s} {v:.6g} kWh" for s, v in fields["stage_kwh"].items() if v > 0)
    if stages:
        lines.append(f"Other stages: {stages}")
    if fields.get("time_shift"):
        lines.append(shift_line(fields["time_shift"]))
    if fields["failed_reads"]:
        lines.append(f"Gaps (failed reads): {fields['failed_reads']}")
    if fields["estimated_share"] > 0:
        lines.append(
            f"Not measured: up to {fields['unmeasured_s']:.1f} s; {100 * fields['estimated_share']:.1f}% of the "
            "energy is bridged at the last good power"
        )
    return "\n".join(lines)


def shift_line(shift: dict[str, Any]) -> str:
    """The console's line for a time shift: its mode, the time paused and the CO2e saved."""
    saved, now = shift["saved_kg"], shift["run_now_kg"]
    share = f" ({saved / now:.1%} of starting at once)" if now > 0 else ""
    hours = shift["paused_s"] / 3600
    line = f"Time shift ({shift['mode']}): paused {hours:.3g} h, {saved * 1000:.4g} g CO2e saved{share}"
    return line + (f"; {shift['note']}" if shift.get("note") else "")
