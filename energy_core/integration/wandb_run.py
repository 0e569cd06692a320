"""Weights & Biases axes, summary and config for the energy keys (no wandb import here).

Lightning and HF both define a ``*`` glob metric against their step; a second glob would
be matched in undefined order, so every energy key is defined by exact name, on rank 0,
before the first energy log, against the framework's step metric. The functions take a
``wandb.Run``-like object (duck-typed), so the core stays free of wandb.

Summary rule, one for every key: its last logged value, a plain number (W&B's default);
at fit end the run's final totals overwrite the cumulative keys (`write_summary`).
"""

from __future__ import annotations

from typing import Any

from energy_core.output import keys
from energy_core.tracker import EnergyTracker


def energy_keys(tracker: EnergyTracker) -> list[str]:
    """Every key the callbacks may log for this tracker's devices (every GPU of the job, by its job-wide name)."""
    return keys.all_keys(tracker.gpu_names)


def define_axes(run: Any, tracker: EnergyTracker, step_metric: str, prefix: str = "") -> None:
    """Define each key by exact name against ``step_metric`` (summary: W&B's plain last value)."""
    for key in energy_keys(tracker):
        run.define_metric(prefix + key, step_metric=step_metric)


def write_config(run: Any, tracker: EnergyTracker) -> None:
    """The carbon factor the run is charged at (in force at its start, and how it is given: a fixed
    figure, a series, a live source), its source and the PUE, in the run's config."""
    carbon = tracker.carbon_fields()
    config = {
        "energy/carbon_g_per_kwh": carbon["g_per_kwh"],
        "energy/carbon_source": carbon["source"],
        "energy/carbon_factor": tracker.factors.carbon.describe()["kind"],
        "energy/pue": carbon["pue"],
        "energy/estimated": ", ".join(tracker.meter.estimated) or "none",
    }
    run.config.update(config, allow_val_change=True)


def write_summary(run: Any, metrics: dict[str, float], prefix: str = "") -> None:
    """The run's final totals in its summary."""
    for key, value in metrics.items():
        if keys.is_cumulative(key):
            run.summary[prefix + key] = value
