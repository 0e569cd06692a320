"""energy_core: framework-free energy, power and carbon measurement for training loops.

Imports neither Lightning nor transformers. The pieces, one concept per module:

* `source` - the interface of a device reader; `nvidia`, `rapl`, `cpu_estimate` - readers;
* `sampler` - the background thread and its ring buffer; `meter` - devices + sampler;
* `carbon` - grid intensity lookup (codecarbon's bundled data) and CO2e;
* `batch` - counting samples/tokens; `record` - the JSON-lines run record;
* `tracker` - the bookkeeping the framework adapters share.
"""

from energy_core.carbon import CarbonIntensity, co2e_kg, resolve_intensity
from energy_core.meter import EnergyMeter
from energy_core.record import RunRecord
from energy_core.source import Notice
from energy_core.tracker import J_PER_KWH, EnergyTracker

__all__ = [
    "J_PER_KWH",
    "CarbonIntensity",
    "EnergyMeter",
    "EnergyTracker",
    "Notice",
    "RunRecord",
    "co2e_kg",
    "resolve_intensity",
]
__version__ = "0.1.0"
