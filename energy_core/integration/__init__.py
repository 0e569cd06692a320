"""Integration: what a framework adapter or a hand-written loop calls, and nothing else (the adapter contract).

An adapter translates its framework's hooks into these runs, each the one object that
knows its part of a training run:

* `MonitorRun` - the measurement: start, windows, epochs, stages, finish (W&B included);
* `BudgetRun` - a budget: bind to a tracker, begin, check each step, review, finish;
* `PowerCapRun` - a power cap: start on the node's leader, drive the finder, publish the
  cap, restore on every way out;
* `TargetRun` - a target: bind to a tracker, evaluate at each evaluation's end, finish;
* `TimeShiftRun` - a time shift: bind, begin, check each step (pause, or requeue), review,
  finish;

and builds a `Ranks` from its framework's view of the job (or `torch_distributed`, or
`fabric_ranks` for a Fabric loop); `units_text` shows a figure in the unit that fits,
wherever an adapter shows one itself (a progress bar).
`EnergyLoop` is the same runs driven by a few calls from a loop of one's own.
`lightning_energy` and `hf_energy` import from this package and from `energy_core`'s
public names only (the import contract in pyproject.toml says so).
"""

from energy_core import checks
from energy_core.accounting.ranks import UNLOGGED_DECIDE_EVERY, Ranks, as_launched, let_go, torch_distributed
from energy_core.budget.guard import BudgetAction
from energy_core.budget.rule import BudgetRule
from energy_core.budget.run import BudgetArgs, BudgetRun, HasBudgetRun
from energy_core.integration.fabric import fabric_ranks
from energy_core.integration.loop import EnergyLoop
from energy_core.integration.monitor_run import HasMonitorRun, MonitorRun
from energy_core.notices import Notice, warn_at_user_code
from energy_core.options import MeasureArgs, MeasureOptions
from energy_core.output import keys, units_text
from energy_core.output.record import scalar_losses
from energy_core.output.summary import UNREPORTED_END, end_status
from energy_core.power.cap import CapArgs, PowerCapRun
from energy_core.shift.run import ShiftAction, TimeShiftArgs, TimeShiftRun
from energy_core.target.rule import TargetRule
from energy_core.target.run import HasTargetRun, TargetArgs, TargetOutcome, TargetRun
from energy_core.tracker import EnergyTracker
from energy_core.tracker_share import SharedRun

__all__ = [
    "as_launched",
    "BudgetAction",
    "BudgetArgs",
    "BudgetRule",
    "BudgetRun",
    "CapArgs",
    "EnergyLoop",
    "EnergyTracker",
    "HasBudgetRun",
    "HasMonitorRun",
    "HasTargetRun",
    "MeasureArgs",
    "MeasureOptions",
    "MonitorRun",
    "Notice",
    "PowerCapRun",
    "Ranks",
    "TargetArgs",
    "TargetOutcome",
    "TargetRule",
    "TargetRun",
    "SharedRun",
    "ShiftAction",
    "TimeShiftArgs",
    "TimeShiftRun",
    "UNLOGGED_DECIDE_EVERY",
    "checks",
    "end_status",
    "UNREPORTED_END",
    "fabric_ranks",
    "keys",
    "let_go",
    "scalar_losses",
    "torch_distributed",
    "units_text",
    "warn_at_user_code",
]
