"""Hugging Face Trainer adapters over `energy_core`."""

from hf_energy.budget import EnergyBudgetCallback
from hf_energy.callback import EnergyCallback, attach
from hf_energy.power_cap import PowerCapCallback

__all__ = ["EnergyBudgetCallback", "EnergyCallback", "PowerCapCallback", "attach"]
