"""energy_core: framework-free energy, power and carbon measurement for training loops.

Imports neither Lightning nor transformers. The layers, bottom up (docs/architecture.md):

* `devices` - every hardware reader behind one interface (NVIDIA, RAPL, CPU estimate);
* `sampler` - the background thread and its buffer; `meter` - devices + sampler, time marks;
* `carbon` - grid intensity (codecarbon's bundled data) and CO2e;
* `options` - the measurement arguments, validated once (`checks`);
* `window`, `totals`, `ranks`, `job` - a logging window, run totals, sums over a job;
* `accounts`, `charges`, `factors` - what a run spent and did, at which carbon and price;
* `tracker` - the bookkeeping the framework adapters share (its hooks; its state and
  reads are `books`); `metrics`, `keys`, `summary`, `header`, `record` - what it writes and logs;
* `budget`, `power` - energy budgets and GPU power caps; `report` - the report command;
* `loop` - `EnergyLoop`: all of it for a loop without a Trainer (plain PyTorch, Fabric,
  Accelerate).
"""

from energy_core.accounting.figures import J_PER_KWH, RunTotals
from energy_core.accounting.ranks import Ranks
from energy_core.budget.guard import BudgetRule
from energy_core.carbon.location import CarbonIntensity, co2e_kg, resolve_intensity
from energy_core.integration.loop import EnergyLoop
from energy_core.notices import Notice
from energy_core.options import MeasureArgs, MeasureOptions
from energy_core.output.record import RunRecord
from energy_core.power import PowerCapRun
from energy_core.sampling.meter import EnergyMeter
from energy_core.tracker import EnergyTracker

__all__ = [
    "J_PER_KWH",
    "BudgetRule",
    "CarbonIntensity",
    "EnergyLoop",
    "EnergyMeter",
    "EnergyTracker",
    "MeasureArgs",
    "MeasureOptions",
    "Notice",
    "PowerCapRun",
    "Ranks",
    "RunRecord",
    "RunTotals",
    "co2e_kg",
    "resolve_intensity",
]
__version__ = "0.1.0"
