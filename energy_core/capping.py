"""PowerCapRun: one training run's power cap, from recovery at start to restore at the end.

Both framework adapters drive this class; they only add the framework's way of running
it once per node (the node's local rank 0) and of making every rank wait for, and agree
on, the outcome.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pynvml

from energy_core.cap_finder import CapFinder
from energy_core.meter import EnergyMeter
from energy_core.power_cap import PowerLimits, check_cap_arguments, select_gpus
from energy_core.source import Notice
from energy_core.tracker import EnergyTracker


class PowerCapRun:
    """Caps this node's GPUs for one run and always puts the previous limits back.

    Args:
        watts: Cap in W for each selected GPU, or ``"auto"`` to search (see `CapFinder`).
        fraction: Cap as a fraction of each GPU's default limit, in (0, 1].
        gpus: ``"all"`` visible GPUs or a list of visible indices.
        strict: Raise PermissionError (before training) instead of training uncapped when
            limits cannot be set.
        max_slowdown: For ``watts="auto"``: largest accepted rise in time per step.

    Raises:
        ValueError: naming the argument: both or neither of ``watts``/``fraction``, a
            fraction outside (0, 1], a non-positive ``watts``, bad ``gpus`` or
            ``max_slowdown``. Device ranges and unknown indices are checked in `start`,
            before anything is changed.
    """

    def __init__(
        self,
        watts: float | str | None = None,
        fraction: float | None = None,
        gpus: str | Sequence[int] = "all",
        strict: bool = False,
        max_slowdown: float = 0.1,
    ) -> None:
        self.watts, self.fraction, self.gpus = check_cap_arguments(watts, fraction, gpus)
        if not isinstance(max_slowdown, (int, float)) or not math.isfinite(max_slowdown) or not 0 < max_slowdown <= 10:
            raise ValueError(f"max_slowdown must be in (0, 10] (0.1 means 10% slower), got {max_slowdown!r}")
        self.strict = strict
        self.max_slowdown = float(max_slowdown)
        self.limits: PowerLimits | None = None
        self.finder: CapFinder | None = None
        self._own_meter: EnergyMeter | None = None

    @property
    def auto(self) -> bool:
        return self.watts == "auto"

    @property
    def cap_w(self) -> float | None:
        """Sum of the caps in force on this node's capped GPUs (W), or None."""
        if self.limits is None or not self.limits.capped:
            return None
        return sum(c.applied_mw for c in self.limits.capped) / 1000.0

    def caps(self) -> list[dict[str, object]]:
        """Per-GPU caps, for the run record's header."""
        if self.limits is None:
            return []
        return [
            {"gpu": c.gpu.cuda_index, "uuid": c.gpu.uuid, "previous_w": c.previous_mw / 1000,
             "cap_w": c.applied_mw / 1000, "range_w": [c.min_mw / 1000, c.max_mw / 1000]}
            for c in self.limits.capped
        ]  # fmt: skip

    def start(self) -> list[Notice]:
        """Recover limits left by killed runs, then cap (call on one process per node).

        With ``watts="auto"`` the boards are registered here and the search begins with
        `start_search`, once training (and its meter) has started.

        Raises:
            ValueError: a cap outside a device's range or an unknown GPU index (nothing
                changed).
            PermissionError: no permission and ``strict=True`` (nothing changed).
        """
        notices: list[Notice] = []
        self.limits = PowerLimits()
        try:
            notices += [Notice("warn", m) for m in self.limits.recover()]
            boards = select_gpus(self.gpus)
        except pynvml.NVMLError as err:
            return [Notice("info", f"No NVIDIA GPU to cap (NVML: {err}); training runs uncapped.")]
        if not boards:
            return [*notices, Notice("info", "No NVIDIA GPU visible to this process: nothing to cap.")]
        try:
            if self.auto:
                self.limits.apply(boards, None, None)
            else:
                self.limits.apply(boards, self.watts, self.fraction)  # type: ignore[arg-type]
        except PermissionError as err:
            if self.strict:
                raise
            return [*notices, Notice("warn", f"{err} Training continues uncapped.")]
        if not self.auto:
            notices.append(Notice("info", "Power cap in force: " + ", ".join(
                f"GPU {c['gpu']} {c['cap_w']:g} W (was {c['previous_w']:g} W)" for c in self.caps())))  # fmt: skip
        return notices

    def start_search(self, meter: EnergyMeter | None = None) -> list[Notice]:
        """For ``watts="auto"``: begin the cap search (after `start`).

        Args:
            meter: A running meter of these GPUs (a monitor's); one is opened if None.
        """
        if not self.auto or self.limits is None or not self.limits.capped or self.finder is not None:
            return []
        if meter is None:
            self._own_meter = meter = EnergyMeter(devices=["gpu"], sample_interval_s=0.05)
            meter.open()
        self.finder = CapFinder(self.limits, meter, max_slowdown=self.max_slowdown)
        return [Notice("info", f"Searching for the power cap that saves most energy within "
                               f"{self.max_slowdown:.0%} slowdown ({len(self.finder.fractions)} candidates).")]  # fmt: skip

    def on_step(self, step: int) -> dict[str, float] | None:
        """Drive the cap search after each optimizer step; metrics when the cap changed."""
        return self.finder.on_step(step) if self.finder is not None else None

    def publish(self, tracker: EnergyTracker | None) -> None:
        """Show the caps in force in a monitor's figures (``power/cap_w`` in every window)
        and in its run record's header; without a cap in force, take the figure away."""
        if tracker is None:
            return
        tracker.power_caps = self.caps()
        if self.cap_w is None:
            tracker.fixed_metrics.pop("power/cap_w", None)
        else:
            tracker.fixed_metrics["power/cap_w"] = self.cap_w

    def record(self, tracker: EnergyTracker | None, event: str) -> None:
        """A ``power_cap`` line in a monitor's run record (the header may precede the cap)."""
        if tracker is not None and tracker.record is not None:
            table = self.finder.table() if self.finder is not None else None
            tracker.record.write("power_cap", event=event, caps=self.caps(), table=table)

    def finish(self, tracker: EnergyTracker | None = None) -> list[str]:
        """Restore every limit changed (idempotent) and take ``power/cap_w`` out of the
        tracker's figures; returns the messages to show."""
        if tracker is not None:
            tracker.fixed_metrics.pop("power/cap_w", None)
        messages = [self.finder.summary()] if self.finder is not None and self.finder.trials else []
        if self.limits is not None:
            messages += self.limits.restore()
            self.limits.uninstall_exit_handlers()
        if self._own_meter is not None:
            self._own_meter.close()
        return messages
