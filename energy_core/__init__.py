"""energy_core: framework-free energy, power and carbon measurement for training loops.

Imports neither Lightning nor transformers. One folder per idea, each layer importing only
the ones below it (docs/architecture.md; enforced by the import contract in pyproject.toml):

* `report` - the ``energy-report`` command; `integration` - what adapters and loops call
  (`EnergyLoop`, the monitor's run, W&B);
* `budget`, `power`, `target`, `shift` - energy budgets, GPU power caps, energy to a target
  quality, time shifting;
* `tracker_share` - the tracker a budget or a target watches (a monitor's, or its own);
* `tracker` - `EnergyTracker`, one process's bookkeeping at the hooks of a run;
* `output` - metric keys and dictionaries, the run record, the summary;
* `accounting` - the typed figures and how they add up (windows, stages, ranks, totals);
* `options` - the measurement arguments, validated once;
* `sampling` - the background sampler and the meter; `carbon` - grid intensity and price;
* `devices` - every hardware reader behind one interface;
* `checks`, `notices`, `units`, `codecarbon_data` - argument checks, messages, units, bundled data.
"""

from energy_core.accounting.figures import RunTotals
from energy_core.accounting.ranks import Ranks, torch_distributed
from energy_core.budget.rule import BudgetRule
from energy_core.carbon.location import CarbonIntensity, co2e_kg, resolve_intensity
from energy_core.integration.fabric import fabric_ranks
from energy_core.integration.loop import EnergyLoop
from energy_core.notices import Notice
from energy_core.options import MeasureArgs, MeasureOptions
from energy_core.output.record import RunRecord, read_runs
from energy_core.power import PowerCapRun
from energy_core.sampling.meter import EnergyMeter
from energy_core.shift.planner import TimeShiftPlan, plan_time_shift
from energy_core.shift.run import TimeShiftRun
from energy_core.target.rule import TargetRule
from energy_core.tracker import EnergyTracker
from energy_core.units import J_PER_KWH

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
    "TargetRule",
    "TimeShiftPlan",
    "TimeShiftRun",
    "co2e_kg",
    "fabric_ranks",
    "plan_time_shift",
    "read_runs",
    "resolve_intensity",
    "torch_distributed",
]
__version__ = "0.1.0"
