"""The end-of-run summary: the record's summary fields and the console's few lines.

The console's lines say, besides the figures (each in the unit that fits:
`energy_core.output.units_text`), which of them are estimates and how far off an estimate
can be (`ESTIMATES`), and which devices the total leaves out and why (`not_counted`), so
that a figure is never read as more exact, or more complete, than it is.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

from energy_core.accounting.figures import STAGES, RunTotals
from energy_core.devices import DEVICE_KINDS
from energy_core.notices import Notice, printable_lines
from energy_core.output import keys
from energy_core.output import units_text as show
from energy_core.sampling.meter import EnergyMeter
from energy_core.units import J_PER_KWH

# How far off each kind of estimate can be (docs/cpu_estimate.md gives the reasoning).
ESTIMATES = {
    "cpu": (
        "a model (watts per busy thread x this process tree's CPU time), not a reading: treat it as right to "
        "within a factor of about 2, and expect it to rise on a loaded machine, where the same work takes more "
        "CPU time"
    ),
    "dram": (
        "a model (watts per GB of the process tree's resident memory), not a reading: a rough guide, easily off "
        "by a factor of several (its bound allows up to 5 times the estimate)"
    ),
}
GUIDE = "docs/cpu_estimate.md"


UNREPORTED_END = "exception: unknown"  # a fit found still open when the next begins: the framework reported no end


def end_status(error: BaseException | type[BaseException]) -> str:
    """The summary's ``status`` for a run that ``error`` (or its type) ended: ``interrupted`` (Ctrl+C), else
    ``exception: <type>``; a run that ends normally says ``completed``."""
    kind = error if isinstance(error, type) else type(error)
    return "interrupted" if issubclass(kind, KeyboardInterrupt) else f"exception: {kind.__name__}"


def not_counted(meter: EnergyMeter) -> dict[str, str]:
    """The device kinds the totals leave out on this process, each with why (the header's and the summary's).

    A kind left out of ``devices``, and DRAM where the machine shows no RAPL DRAM domain (most VMs, AMD
    CPUs) and ``devices`` did not ask for an estimate. Kinds another rank of the node measures, and GPUs
    on a machine without any (unless asked for), are no gap.
    """
    measured = {s.info.kind for s in meter.sources}
    found: dict[str, str] = {}
    for kind in DEVICE_KINDS:
        if kind in measured or (kind != "gpu" and not meter.node_devices):
            continue
        if kind not in meter.kinds:
            found[kind] = f"devices= names {', '.join(meter.kinds)} only"
        elif kind == "dram":
            found[kind] = (
                "no readable RAPL DRAM domain on this machine (most VMs and AMD CPUs have none); "
                'add "dram" to devices= for an estimate from the resident memory'
            )
        elif kind == "gpu" and meter.explicit:
            found[kind] = "no GPU found"
    return found


def unresolved(metrics: dict[str, float], estimated_kinds: Collection[str]) -> bool:
    """Whether the readings in a run's total are within their own bound of nothing: a run shorter than
    its counters' update period reads 0 J, or one whole update, within a bound of a whole update at the
    board's most (and a device unread for most of a run, e.g. a RAPL zone that stands still, is bounded
    at its most over that time). Its mean power and energy per unit of work are then no figures (0 W, or
    several times the board's draw) and are left out; the total keeps its bound, which holds the truth. The kinds an
    estimate measures are left out of the question: a model's bound is a share of the model's figure."""
    read = [k for k in DEVICE_KINDS if k not in estimated_kinds]
    err = sum(metrics.get(keys.err(keys.kind_kwh(k)), 0.0) for k in read)
    return err > 0 and err >= sum(metrics.get(keys.kind_kwh(k), 0.0) for k in read)


def summary_fields(
    metrics: dict[str, float],
    totals: RunTotals,
    stage_kwh: dict[str, float],
    carbon: dict[str, Any],
    meter: EnergyMeter,
    currency: str | None = None,
    parts: dict[str, Any] | None = None,
    elsewhere: tuple[dict[str, dict[str, Any]], dict[str, int]] = ({}, {}),
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
        elsewhere: In a job, the other ranks' faults and failed reads, by ``rank<r>/<source>``.
    """
    failed_reads, estimated, faults = meter.failed_reads(), meter.estimated, meter.quality()
    faults, failed_reads = {**faults, **elsewhere[0]}, {**failed_reads, **elsewhere[1]}
    joules = metrics.get(keys.TOTAL_KWH, 0.0) * J_PER_KWH
    joules_err = metrics.get(keys.err(keys.TOTAL_KWH), 0.0) * J_PER_KWH
    seconds = totals.fit_s
    resolved = not unresolved(metrics, {s.info.kind for s in meter.sources if s.info.estimated})
    kwh_pue = joules / J_PER_KWH * carbon["pue"]
    mean_g = 1000 * metrics.get(keys.CO2E_KG, 0.0) / kwh_pue if kwh_pue > 0 else carbon["g_per_kwh"]
    return {
        "metrics": metrics,
        "energy_j_err": joules_err,
        "seconds": seconds,
        "mean_power_w": joules / seconds if seconds > 0 and resolved else None,
        "samples": totals.samples,
        "tokens": totals.tokens,
        "j_per_sample": joules / totals.samples if totals.samples and resolved else None,
        "j_per_token": joules / totals.tokens if totals.tokens and resolved else None,
        "stage_kwh": {s: stage_kwh[s] for s in STAGES},
        "failed_reads": failed_reads,
        "estimated": estimated,
        "not_counted": not_counted(meter),
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
        f"{name} {show.duration(f['unmeasured_s'])} not measured"
        + (f" (last error: {f['last_error']})" if f["last_error"] else "")
        for name, f in faults.items()
    )
    text = (
        f"Part of this run was not measured: {parts}. {100 * fields['estimated_share']:.1f}% of the energy is "
        "estimated from the last good power of each device (see the run record's summary, 'faults')."
    )
    return [Notice("warn", text)]  # made printable there: the carbon source names the user's series file


def estimate_mark(measured_kinds: Sequence[str], estimated_kinds: Collection[str]) -> str:
    """How much of a total rests on an estimate, as every place that shows the total says it:
    ``" (estimated)"`` (every device kind in it), ``" (partly estimated)"``, or ``""``."""
    estimated = [k for k in measured_kinds if k in estimated_kinds]
    if not estimated:
        return ""
    return " (estimated)" if len(estimated) == len(measured_kinds) else " (partly estimated)"


def summary_text(fields: dict[str, Any], estimated_kinds: set[str]) -> str:
    """A few lines for the console at the end of a run, from `summary_fields`: the figures in the
    units that fit, what is estimated and how far off it can be, what the total leaves out."""
    metrics = fields["metrics"]
    carbon = fields["carbon"]
    kwh = metrics.get(keys.TOTAL_KWH, 0.0)
    kwh_err = metrics.get(keys.err(keys.TOTAL_KWH))
    vague = unresolved(metrics, estimated_kinds)
    bound = f"± {show.energy_kwh(kwh_err or 0.0)}" if vague else show.share(kwh, kwh_err)  # how exact it is
    kinds = sorted(k for k in DEVICE_KINDS if keys.kind_kwh(k) in metrics)
    estimated = [k for k in kinds if k in estimated_kinds]
    total = show.energy_kwh(kwh) + estimate_mark(kinds, estimated_kinds) + (f" {bound}" if bound else "")
    mean_w = fields["mean_power_w"]
    line = f"Energy: {total} over {show.duration(fields['seconds'])}"
    line += f", mean {show.power(mean_w)}" if mean_w is not None else ""
    if not kinds:
        line += " [no device measured]"
    elif len(kinds) > 1:
        line += ": " + ", ".join(
            f"{k} {show.energy_kwh(metrics[keys.kind_kwh(k)])}" + (" (estimated)" if k in estimated else "")
            for k in kinds
        )
    line += "; the readings' bound is as wide as their energy: no mean power, no energy per sample" if vague else ""
    # the energy-weighted mean: where the intensity changed in the run (a series, a live zone, a resume under
    # another figure), it is no value of the source named, and says so
    now = metrics.get(keys.INTENSITY)
    varied = now is not None and not math.isclose(now, carbon["g_per_kwh"], rel_tol=1e-3, abs_tol=1e-9)
    lines = [
        line,
        f"CO2e: {show.mass(metrics.get(keys.CO2E_KG, 0.0))} at {carbon['g_per_kwh']:.4g} g/kWh"
        f"{' on average' if varied else ''} x PUE {carbon['pue']:g} ({carbon['source']})",
    ]
    if fields.get("cost"):
        cost = fields["cost"]
        lines.append(f"Electricity cost: {show.money(cost['total'], cost['currency'])} (PUE applied)")
    if fields["samples"]:
        work = f"Work: {fields['samples']:,} samples"
        work += f", {show.energy(fields['j_per_sample'])}/sample" if fields["j_per_sample"] is not None else ""
        if fields["tokens"]:
            work += f"; {fields['tokens']:,} tokens"
            work += f", {show.energy(fields['j_per_token'])}/token" if fields["j_per_token"] is not None else ""
        lines.append(work)
    stages = ", ".join(f"{STAGE_NAMES[s]} {show.energy_kwh(v)}" for s, v in fields["stage_kwh"].items() if v > 0)
    if stages:
        lines.append(f"Of which not training: {stages}")
    if fields.get("time_shift"):
        lines.append(shift_line(fields["time_shift"]))
    if fields["failed_reads"]:
        gaps = ", ".join(f"{name} {count}" for name, count in fields["failed_reads"].items())
        lines.append(f"Failed reads (gaps): {gaps}")
    if fields["estimated_share"] > 0:
        lines.append(
            f"Not measured: up to {show.duration(fields['unmeasured_s'])}; "
            f"{100 * fields['estimated_share']:.1f}% of the energy is bridged at the last good power"
        )
    for kind in estimated:
        lines.append(f"Estimated: {kind}, {ESTIMATES.get(kind, 'a model, not a reading')} ({GUIDE}).")
    for kind, why in (fields.get("not_counted") or {}).items():
        lines.append(f"Not counted: {kind} ({why}).")
    return printable_lines("\n".join(lines))


STAGE_NAMES = {"val": "validation", "test": "test", "predict": "predict"}


def shift_line(shift: dict[str, Any]) -> str:
    """The console's line for a time shift: its mode, the time paused and the CO2e saved."""
    saved, now = shift["saved_kg"], shift["run_now_kg"]
    share = f" ({saved / now:.1%} of starting at once)" if now > 0 else ""
    line = (
        f"Time shift ({shift['mode']}): paused {show.duration(shift['paused_s'])}, {show.mass(saved)} CO2e saved{share}"
    )
    return line + (f"; {shift['note']}" if shift.get("note") else "")
