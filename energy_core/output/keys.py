"""Metric keys: every name the callbacks log, written once (SPEC.md's table).

Window keys describe the last logging window (a W&B summary shows their mean);
cumulative keys describe the run so far (a W&B summary keeps their last value).
"""

from __future__ import annotations

from collections.abc import Iterable

from energy_core.accounting.figures import STAGES
from energy_core.devices import DEVICE_KINDS

STEP_J = "energy/step_j"
TOTAL_KWH = "energy/total_kwh"
EPOCH_KWH = "energy/epoch_kwh"
TOTAL_W = "power/total_w"
CAP_W = "power/cap_w"
SAMPLES_PER_S = "throughput/samples_per_s"
TOKENS_PER_S = "throughput/tokens_per_s"
J_PER_SAMPLE = "efficiency/j_per_sample"
J_PER_TOKEN = "efficiency/j_per_token"
CO2E_KG = "carbon/co2e_kg"
INTENSITY = "carbon/intensity_g_per_kwh"
COST = "cost/total"
BUDGET_REMAINING = "budget/remaining_kwh"
BUDGET_FORECAST = "budget/forecast_kwh"
TARGET_KWH = "target/energy_kwh"
TARGET_CO2E = "target/co2e_kg"
TARGET_SECONDS = "target/seconds"
TARGET_STEP = "target/step"
TARGET_GAIN = "target/gain_per_kwh"
PAUSED_S = "carbon/paused_s"
SAVED_KG = "carbon/saved_kg"


def kind_kwh(kind: str) -> str:
    """``energy/gpu_kwh``, ``energy/cpu_kwh``, ``energy/dram_kwh``."""
    return f"energy/{kind}_kwh"


def stage_kwh(stage: str) -> str:
    """``energy/val_kwh``, ``energy/test_kwh``, ``energy/predict_kwh``."""
    return f"energy/{stage}_kwh"


def err(key: str) -> str:
    """The key of a figure's bound: ``energy/total_kwh_err`` (same unit: the half-width of an
    interval that holds the figure's true value)."""
    return f"{key}_err"


def gpu_w(name: str) -> str:
    """``power/gpu0_w``: ``name`` is a GPU's name, its visible index in one process (its job-wide name in a job)."""
    return f"power/{name}_w"


# The figures logged with a bound beside them (``err(key)``).
BOUNDED_KEYS = (
    STEP_J,
    TOTAL_KWH,
    *(kind_kwh(k) for k in DEVICE_KINDS),
    EPOCH_KWH,
    *(stage_kwh(s) for s in STAGES),
    CO2E_KG,
    COST,
)
WINDOW_KEYS = (STEP_J, err(STEP_J), TOTAL_W, SAMPLES_PER_S, TOKENS_PER_S, J_PER_SAMPLE, J_PER_TOKEN, CAP_W)
CUMULATIVE_KEYS = (
    TOTAL_KWH,
    *(kind_kwh(k) for k in DEVICE_KINDS),
    CO2E_KG,
    INTENSITY,
    COST,
    EPOCH_KWH,
    *(stage_kwh(s) for s in STAGES),
    *(err(key) for key in BOUNDED_KEYS if key != STEP_J),
    BUDGET_REMAINING,
    BUDGET_FORECAST,
    PAUSED_S,
    SAVED_KG,
)
# Logged by a target: the cost of reaching it (once), the gain per kWh (each evaluation).
TARGET_KEYS = (TARGET_KWH, TARGET_CO2E, TARGET_SECONDS, TARGET_STEP, TARGET_GAIN)


def all_keys(gpu_names: Iterable[str]) -> list[str]:
    """Every key the callbacks may log, for GPUs with these names."""
    return [*CUMULATIVE_KEYS, *WINDOW_KEYS, *TARGET_KEYS, *(gpu_w(name) for name in gpu_names)]


def is_cumulative(key: str) -> bool:
    """Whether a key describes the run so far (its last value is its summary)."""
    return key in CUMULATIVE_KEYS
