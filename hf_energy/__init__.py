"""Hugging Face Trainer adapters over `energy_core` (EnergyCallback and friends: to come)."""

__all__: list[str] = []
