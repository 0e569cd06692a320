"""Hugging Face Trainer adapters over `energy_core`."""

from hf_energy.budget import EnergyBudgetCallback
from hf_energy.callback import EnergyCallback, attach

__all__ = ["EnergyBudgetCallback", "EnergyCallback", "attach"]
