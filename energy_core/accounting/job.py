"""The job's figures: one rank's totals and window, summed over the ranks by name.

A pure function of its inputs (the collective comes with `Ranks`), so the packing can be
tested with a fake sum in one process.
"""

from __future__ import annotations

from dataclasses import dataclass

from energy_core.accounting.figures import STAGES, RunTotals
from energy_core.accounting.ranks import Ranks
from energy_core.accounting.window import WindowFigures
from energy_core.devices import DEVICE_KINDS


@dataclass(frozen=True)
class JobSums:
    """One sum over the ranks.

    Args:
        totals: The job's totals (seconds stay this rank's).
        window: The job's window (GPU power keyed ``gpu{rank}`` in a multi-process job),
            or None when no window was summed.
        epoch_j: The job's energy of the epoch just ended (0 when none ended).
        breakdown: Per-rank window energy (``rank_j``, ``rank_gpu_j``) for the record.
    """

    totals: RunTotals
    window: WindowFigures | None
    epoch_j: float
    breakdown: dict[str, list[float]] | None = None


def sum_over_ranks(ranks: Ranks, local: RunTotals, window: WindowFigures | None, epoch_j: float = 0.0) -> JobSums:
    """Sum this rank's figures with every other rank's (a collective all ranks reach alike)."""
    win = window or WindowFigures(0, 0.0, 0.0)
    values = {f"energy_j.{k}": local.energy_j.get(k, 0.0) for k in DEVICE_KINDS}
    values |= {f"measured.{k}": float(k in local.energy_j) for k in DEVICE_KINDS}
    values |= {f"stage_j.{s}": local.stage_j.get(s, 0.0) for s in STAGES}
    values |= {"samples": local.samples, "tokens": local.tokens, "epoch_j": epoch_j}
    values |= {"co2e_kg": local.co2e_kg, "cost": local.cost}
    values |= {"window.joules": win.joules, "window.samples": win.samples, "window.tokens": win.tokens}
    per_rank = {"rank_j": win.joules, "rank_gpu_j": sum(win.gpu_j.values()), "rank_has_gpu": float(bool(win.gpu_j))}
    sums, by_rank = ranks.sum_by_name(values, per_rank)
    energy = {k: sums[f"energy_j.{k}"] for k in DEVICE_KINDS if sums[f"measured.{k}"] > 0}
    stages = {s: sums[f"stage_j.{s}"] for s in STAGES}
    totals = RunTotals(
        energy, stages, int(sums["samples"]), int(sums["tokens"]), local.fit_s, sums["co2e_kg"], sums["cost"]
    )
    if window is None or not ranks.distributed:
        return JobSums(totals, window, sums["epoch_j"])
    has_gpu = by_rank["rank_has_gpu"]
    gpus = {f"gpu{r}": joules for r, joules in enumerate(by_rank["rank_gpu_j"]) if has_gpu[r]}
    job_window = WindowFigures(
        window.steps,
        window.seconds,
        sums["window.joules"],
        gpus,
        int(sums["window.samples"]),
        int(sums["window.tokens"]),
    )
    breakdown = {"rank_j": by_rank["rank_j"], "rank_gpu_j": by_rank["rank_gpu_j"]}
    return JobSums(totals, job_window, sums["epoch_j"], breakdown)
