"""The power-limit journal: limits changed and not yet restored, on disk, for recovery after a kill.

One JSON object keyed by board UUID, each entry saying the limit in force before, the
limit set, and the process (pid, host) that set it. Every read-modify-write holds an
exclusive ``flock`` on a lock file beside it, and the new content replaces the old in one
``os.replace``. ``$ENERGY_CALLBACKS_POWER_JOURNAL`` chooses the file.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

JOURNAL_ENV = "ENERGY_CALLBACKS_POWER_JOURNAL"
DEFAULT_JOURNAL = Path("/var/tmp/energy-callbacks/power-limits.json")


def journal_path() -> Path:
    """Where the journal lives: ``$ENERGY_CALLBACKS_POWER_JOURNAL``, else the default."""
    return Path(os.environ.get(JOURNAL_ENV, DEFAULT_JOURNAL))


class Journal:
    """Locked access to the journal file.

    Args:
        path: The journal file; defaults to `journal_path`.

    Example:
        >>> with Journal(Path("/tmp/j.json")).entries() as entries:   # doctest: +SKIP
        ...     entries["GPU-1"] = {"previous_mw": 350000, "set_mw": 250000, "pid": 1, "host": "h"}
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or journal_path()

    @contextmanager
    def entries(self) -> Iterator[dict[str, Any]]:
        """The journal's entries, locked against other processes, written back on exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                entries = json.loads(self.path.read_text()) if self.path.exists() else {}
            except (OSError, ValueError):
                entries = {}
            yield entries
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(entries, indent=1))
            os.replace(tmp, self.path)
