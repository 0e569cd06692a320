"""GPU power caps, restored on every way out.

* `journal` - limits changed and not yet restored, on disk; `exit_guard` - atexit and signals;
* `limits` - `PowerLimits`: set, restore, recover (on vendor-neutral `GpuBoard`s);
* `cap` - `PowerCapRun`: one run's cap, driven by the framework adapters;
* `finder` - `CapFinder`: the automatic search for the cap with least energy per step.
"""

from energy_core.power.cap import CapArgs, PowerCapRun, check_cap_arguments
from energy_core.power.finder import CapFinder
from energy_core.power.journal import Journal, journal_path
from energy_core.power.limits import PowerLimits

__all__ = ["CapArgs", "CapFinder", "Journal", "PowerCapRun", "PowerLimits", "check_cap_arguments", "journal_path"]
