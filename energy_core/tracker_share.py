"""TrackerShare: the tracker a budget, a target or a time shift watches, a monitor's or its own.

A budget, a target or a time shift beside a monitor reads the monitor's tracker (one
sampler per process, the monitor's carbon settings); alone, it measures with a tracker of
its own, built only then, which it starts, ends with its own status and checkpoints.
`TrackerShare` is that choice, written once; `SharedRun` is the part the three runs play
around it alike (bind, finish, close, the own totals in their checkpoints).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from energy_core.accounting.figures import RunTotals
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
        self._own: EnergyTracker | None = None  # made at the first bind alone, kept for later fits
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
        if self._own is None:  # never one shared in an earlier fit: its record and totals are another's
            self._own = EnergyTracker(self.options)
            self._own.measures_alone = True
        self.tracker = self._own
        self.tracker.join(ranks)
        # Taken once: a later fit in this process goes on from this one's totals, not the checkpoint's again.
        saved, self._saved = self._saved, None
        self.tracker.load_state_dict(saved, own_share=ranks.leads_job)
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
        """The totals of the tracker measuring alone, its own or another run's, for a checkpoint (None
        when it watches a monitor's, which keeps them): whichever measures after a resume has them."""
        return self.tracker.state_dict() if self.tracker is not None and self.tracker.measures_alone else None

    def load_state_dict(self, state: dict[str, Any] | None, own_share: bool) -> None:
        """Keep a checkpoint's totals for `bind` (or apply them, if restored after fit start).

        Args:
            state: From `state_dict`.
            own_share: Whether this process carries the checkpoint's totals (global rank 0).

        Raises:
            ValueError: naming the field of the stored totals that is missing or wrong.
        """
        if state is not None:
            # The totals are checked now, when the checkpoint is loaded, not at fit start. The epoch part is
            # checked where it is taken (a run measuring alone): a run beside a monitor never takes it, and an
            # older version wrote parts a last bit over their totals.
            RunTotals.from_state(state)
        self._saved = state
        if self.owns and self.tracker is not None and state:
            self.tracker.load_state_dict(state, own_share=own_share)
            self._saved = None  # taken: the next fit goes on from this one's totals


class SharedRun(ABC):
    """The base of `BudgetRun`, `TargetRun` and `TimeShiftRun`: a run that watches a tracker
    through a `TrackerShare`, and what they do alike with it.

    Subclasses extend `bind` (their own start) and name the status their own stop ends the
    run with (`TrackerLink.stop_by`); they put `with_totals` around their checkpoint state.

    Args:
        options: How to measure when no monitor's tracker can be shared.
    """

    def __init__(self, options: MeasureOptions) -> None:
        self.options = options
        self.share = TrackerShare(options)
        self._ranks = Ranks()

    @property
    def tracker(self) -> EnergyTracker | None:
        """The tracker watched: a monitor's, or the run's own (None before `bind`)."""
        return self.share.tracker

    @property
    def owns(self) -> bool:
        """Whether the run measures alone, with a tracker of its own."""
        return self.share.owns

    def bind(self, shared: EnergyTracker | None, ranks: Ranks, step: int, resumed: bool = False) -> list[Notice]:
        """At fit start: watch a monitor's tracker, or measure alone from now (validation included).

        Args:
            shared: A monitor's tracker, or None to measure alone.
            ranks: This process's part in the job.
            step: The optimizer step training starts at.
            resumed: The trainer resumed from a checkpoint (see `EnergyTracker.start_fit`).
        """
        self._ranks = ranks
        return self.share.bind(shared, ranks, step, resumed)

    def finish(self, step: int, status: str = "completed", collective: bool = True) -> list[Notice]:
        """End the run's own tracker (a shared one is the monitor's to end); notices to show.

        ``collective=False`` where the other ranks may not follow (an exception on this rank).
        """
        return self.share.finish(step, status, collective)

    def close(self) -> None:
        """Stop the run's own sampler (idempotent)."""
        self.share.close()

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The run's checkpoint state (its own, `with_totals`)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from a checkpoint's state (`load_totals` keeps the own tracker's)."""

    def with_totals(self, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` and, measuring alone, the own tracker's totals (``"tracker"``), for a checkpoint."""
        totals = self.share.state_dict()
        return state if totals is None else {**state, "tracker": totals}

    def load_totals(self, state: dict[str, Any]) -> None:
        """Keep the own tracker's totals of a checkpoint's ``state`` (see `with_totals`)."""
        self.share.load_state_dict(state.get("tracker"), own_share=self._ranks.leads_job)
