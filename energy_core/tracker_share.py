"""TrackerShare: the tracker a budget or a target watches, a monitor's or its own.

A budget or a target beside a monitor reads the monitor's tracker (one sampler per
process, the monitor's carbon settings); alone, it measures with a tracker of its own,
built only then, which it starts, ends with its own status and checkpoints. This class
is that choice, written once for both.
"""

from __future__ import annotations

from typing import Any

from energy_core.accounting.ranks import Ranks
from energy_core.notices import Notice
from energy_core.options import MeasureOptions
from energy_core.tracker import EnergyTracker


class TrackerShare:
    """A monitor's tracker, shared, or one of its own.

    Args:
        options: How to measure when no monitor's tracker can be shared.

    Attributes:
        tracker: The tracker watched (None before `bind`).
        owns: Whether it is this object's own (measuring alone).
    """

    def __init__(self, options: MeasureOptions) -> None:
        self.options = options
        self.tracker: EnergyTracker | None = None
        self.owns = False
        self._saved: dict[str, Any] | None = None  # the own tracker's checkpoint state

    def bind(self, shared: EnergyTracker | None, ranks: Ranks, step: int, resumed: bool = False) -> list[Notice]:
        """At fit start: watch a monitor's tracker, or measure alone from now (validation included).

        Args:
            shared: A monitor's tracker, or None to measure alone.
            ranks: This process's part in the job.
            step: The optimizer step training starts at.
            resumed: The trainer resumed from a checkpoint (see `EnergyTracker.start_fit`).
        """
        self.owns = shared is None
        if shared is not None:
            self.tracker = shared
            return []
        if self.tracker is None:
            self.tracker = EnergyTracker(self.options)
        self.tracker.join(ranks)
        self.tracker.load_state_dict(self._saved, own_share=ranks.leads_job)
        return self.tracker.start_fit(step, resumed=resumed)

    def finish(self, step: int, status: str, collective: bool = True) -> list[Notice]:
        """End the own tracker with ``status`` (a shared one is the monitor's to end); notices to show.

        ``collective=False`` where the other ranks may not follow (an exception on this rank).
        """
        if not self.owns or self.tracker is None:
            return []
        self.tracker.end_fit(step, status=status, collective=collective)
        self.tracker.close()
        return self.tracker.pop_notices()

    def close(self) -> None:
        """Stop the own tracker's sampler (idempotent)."""
        if self.owns and self.tracker is not None:
            self.tracker.close()

    def state_dict(self) -> dict[str, Any] | None:
        """The own tracker's totals, for a checkpoint (None when it watches a monitor's)."""
        return self.tracker.state_dict() if self.owns and self.tracker is not None else None

    def load_state_dict(self, state: dict[str, Any] | None, own_share: bool) -> None:
        """Keep a checkpoint's totals for `bind` (or apply them, if restored after fit start).

        Args:
            state: From `state_dict`.
            own_share: Whether this process carries the checkpoint's totals (global rank 0).
        """
        self._saved = state
        if self.owns and self.tracker is not None and state:
            self.tracker.load_state_dict(state, own_share=own_share)
