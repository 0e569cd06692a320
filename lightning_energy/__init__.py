"""Lightning adapters over `energy_core`; each works with ``lightning.pytorch`` and ``pytorch_lightning``."""

from importlib.util import find_spec

# Checked before anything imports Lightning's helpers, so that a missing extra is named in
# one line rather than surfacing as a missing dependency of Lightning's.
if find_spec("lightning") is None and find_spec("pytorch_lightning") is None:
    raise ImportError(
        "lightning_energy needs lightning or pytorch_lightning: pip install 'energy-callbacks[lightning]'"
    )

from lightning_energy.budget import EnergyBudget
from lightning_energy.monitor import EnergyMonitor
from lightning_energy.power_cap import PowerCap
from lightning_energy.target import EnergyToTarget
from lightning_energy.time_shift import TimeShift

__all__ = ["EnergyBudget", "EnergyMonitor", "EnergyToTarget", "PowerCap", "TimeShift"]
