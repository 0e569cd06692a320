"""Lightning adapters over `energy_core`; each works with ``lightning.pytorch`` and ``pytorch_lightning``."""

from lightning_energy.budget import EnergyBudget
from lightning_energy.monitor import EnergyMonitor
from lightning_energy.power_cap import PowerCap

__all__ = ["EnergyBudget", "EnergyMonitor", "PowerCap"]
