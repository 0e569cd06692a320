"""Hugging Face Trainer adapters over `energy_core`."""

from hf_energy.callback import EnergyCallback, attach

__all__ = ["EnergyCallback", "attach"]
