"""Hugging Face Trainer adapters over `energy_core`."""

from hf_energy.budget import EnergyBudgetCallback
from hf_energy.callback import EnergyCallback
from hf_energy.power_cap import PowerCapCallback
from hf_energy.registry import attach

__all__ = ["EnergyBudgetCallback", "EnergyCallback", "PowerCapCallback", "attach"]
