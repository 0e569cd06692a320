"""GPU power caps, restored on every way out, safe on machines shared with other users.

* `journal` (`private_dir`, `journal_entry`) - limits changed and not yet restored, on disk,
  in a directory only its owner can write; `exit_guard` - atexit and signals;
* `plan` - which boards, which targets; `limits` - `PowerLimits`: set, restore, one owner
  per board; `board_lock` - that owner held on the board, across users; `recovery` -
  limits left by processes that are gone;
* `cap` - `PowerCapRun`: one run's cap, driven by the framework adapters;
* `finder` - `CapFinder`: the automatic search for the cap with least energy per step
  (`search` - which cap to measure next and which to keep; `estimate` - each cap's figures).
"""

from energy_core.power.cap import CapArgs, PowerCapRun, check_cap_arguments
from energy_core.power.errors import BoardBusyError, JournalError, PowerCapError
from energy_core.power.finder.finder import CapFinder
from energy_core.power.journal import Journal, journal_path
from energy_core.power.limits import PowerLimits

__all__ = [
    "BoardBusyError",
    "CapArgs",
    "CapFinder",
    "Journal",
    "JournalError",
    "PowerCapError",
    "PowerCapRun",
    "PowerLimits",
    "check_cap_arguments",
    "journal_path",
]
