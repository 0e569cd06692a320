"""Weights & Biases axes, summary and config for the energy keys (no wandb import here).

Lightning and HF both define a ``*`` glob metric against their step; a second glob would
be matched in undefined order, so every energy key is defined by exact name, on rank 0,
before the first energy log, against the framework's step metric. The functions take a
``wandb.Run``-like object (duck-typed), so the core stays free of wandb.
"""

from __future__ import annotations

from typing import Any

from energy_core.source import DEVICE_KINDS
from energy_core.tracker import EnergyTracker

WINDOW_KEYS = (
    "energy/step_j", "power/total_w", "throughput/samples_per_s", "throughput/tokens_per_s",
    "efficiency/j_per_sample", "efficiency/j_per_token", "power/cap_w",
)  # fmt: skip
CUMULATIVE_KEYS = (
    "energy/total_kwh", "carbon/co2e_kg", "carbon/intensity_g_per_kwh", "energy/epoch_kwh",
    "energy/val_kwh", "energy/test_kwh", "energy/predict_kwh", "budget/remaining_kwh", "budget/forecast_kwh",
)  # fmt: skip


def energy_keys(tracker: EnergyTracker, world_size: int = 1) -> list[str]:
    """Every key the callbacks may log for this tracker's devices."""
    keys = list(CUMULATIVE_KEYS) + [f"energy/{kind}_kwh" for kind in DEVICE_KINDS] + list(WINDOW_KEYS)
    gpus = [s.info.name for s in tracker.meter.sources if s.info.kind == "gpu"]
    if world_size > 1:
        gpus = [f"gpu{r}" for r in range(world_size)]
    return keys + [f"power/{name}_w" for name in gpus]


def define_axes(run: Any, keys: list[str], step_metric: str, prefix: str = "") -> None:
    """Define each key by exact name against ``step_metric``; totals keep their last value."""
    for key in keys:
        name = prefix + key
        if key in CUMULATIVE_KEYS or key.endswith("_kwh"):
            run.define_metric(name, step_metric=step_metric, summary="last")
        else:
            run.define_metric(name, step_metric=step_metric, summary="mean")


def write_config(run: Any, tracker: EnergyTracker) -> None:
    """The carbon factor, its source and the PUE, in the run's config."""
    run.config.update(
        {"energy/carbon_g_per_kwh": tracker.intensity.g_per_kwh, "energy/carbon_source": tracker.intensity.source,
         "energy/pue": tracker.pue, "energy/estimated": ", ".join(tracker.meter.estimated) or "none"},
        allow_val_change=True,
    )  # fmt: skip


def write_summary(run: Any, metrics: dict[str, float], prefix: str = "") -> None:
    """The run's final totals in its summary."""
    for key, value in metrics.items():
        if key.endswith("_kwh") or key.startswith("carbon/"):
            run.summary[prefix + key] = value
