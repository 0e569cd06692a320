"""Hugging Face Trainer adapters over `energy_core`."""

from importlib.util import find_spec

# Checked before anything imports transformers, so that a missing extra is named in one line.
_missing = [name for name in ("transformers", "accelerate") if find_spec(name) is None]
if _missing:
    raise ImportError(f"hf_energy needs {' and '.join(_missing)}: pip install 'energy-callbacks[hf]'")

from hf_energy.budget import EnergyBudgetCallback  # noqa: E402
from hf_energy.callback import EnergyCallback  # noqa: E402
from hf_energy.power_cap import PowerCapCallback  # noqa: E402
from hf_energy.registry import attach  # noqa: E402
from hf_energy.target import EnergyToTargetCallback  # noqa: E402
from hf_energy.time_shift import TimeShiftCallback  # noqa: E402

__all__ = [
    "EnergyBudgetCallback",
    "EnergyCallback",
    "EnergyToTargetCallback",
    "PowerCapCallback",
    "TimeShiftCallback",
    "attach",
]
