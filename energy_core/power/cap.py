"""PowerCapRun: one training run's power cap, from recovery at start to restore at the end.

Both framework adapters drive this class through their hooks; the node's local rank 0
acts (`PowerCapRun.start_on`), every rank waits for the outcome and takes the same
decision, and the figures go to a monitor's tracker when there is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from energy_core import checks
from energy_core.accounting.ranks import Ranks
from energy_core.devices import DeviceError
from energy_core.notices import Notice
from energy_core.output import keys
from energy_core.output.record import POWER_CAP
from energy_core.power.errors import JournalError, PowerCapError
from energy_core.power.finder.finder import CapFinder
from energy_core.power.limits import PowerLimits
from energy_core.power.plan import busy_message, select_boards
from energy_core.sampling.meter import EnergyMeter
from energy_core.tracker import EnergyTracker
from energy_core.units import MAX_DEVICE_W


class CapArgs(TypedDict, total=False):
    """Keyword arguments of every power cap (see `PowerCapRun`)."""

    watts: float | str | None
    fraction: float | None
    gpus: str | Sequence[int]
    strict: bool
    max_slowdown: float
    min_watts: float | None


def check_cap_arguments(
    watts: Any, fraction: Any, gpus: Any, strict: Any, max_slowdown: Any, min_watts: Any = None
) -> tuple[float | str | None, float | None, str | tuple[int, ...], bool, float, float | None]:
    """Validate the cap's arguments; TypeError/ValueError names the argument and the allowed range."""
    if (watts is None) == (fraction is None):
        raise ValueError("give exactly one of watts (W, or 'auto') and fraction (of the default limit, in (0, 1])")
    board_w = f"in (0, {MAX_DEVICE_W:g}] W"
    if isinstance(watts, str):
        if watts != "auto":
            raise ValueError(f"watts must be a number of watts {board_w} or 'auto', got {watts!r}")
    else:
        watts = checks.number(
            "watts", watts, low=0, high=MAX_DEVICE_W, low_open=True, optional=True, what=f"{board_w} or 'auto'"
        )
    fraction = checks.number(
        "fraction",
        fraction,
        low=0,
        high=1,
        low_open=True,
        optional=True,
        what="in (0, 1] (a share of each GPU's default limit)",
    )
    if isinstance(gpus, str):
        if gpus != "all":
            raise ValueError(f"gpus must be 'all' or a list of visible GPU indices, got {gpus!r}")
    else:
        gpus = checks.indices("gpus", gpus, what="'all' or a non-empty list of distinct visible GPU indices >= 0")
    strict = checks.boolean("strict", strict)
    max_slowdown = checks.number(
        "max_slowdown", max_slowdown, low=0, high=10, low_open=True, what="in (0, 10] (0.1 means 10% slower)"
    )
    min_watts = checks.number(
        "min_watts", min_watts, low=0, high=MAX_DEVICE_W, low_open=True, optional=True, what=f"{board_w} (or None)"
    )
    if min_watts is not None and watts != "auto":
        raise ValueError(f"min_watts={min_watts:g} applies only to watts='auto' (the floor of the cap search)")
    return watts, fraction, gpus, strict, max_slowdown, min_watts


class PowerCapRun:
    """Caps this node's GPUs for one run and always puts the previous limits back.

    Args:
        watts: Cap in W for each selected GPU, or ``"auto"`` to search (see `CapFinder`).
        fraction: Cap as a fraction of each GPU's default limit, in (0, 1].
        gpus: ``"all"`` visible GPUs or a list of visible indices.
        strict: Never train uncapped: raise before training (PermissionError without
            permission, `PowerCapError` without a GPU, with an unusable or damaged journal,
            or when another run has capped a selected board) instead of one message.
        max_slowdown: For ``watts="auto"``: largest accepted rise in time per step.
        min_watts: For ``watts="auto"``: lowest cap tried per GPU, in W (default: each
            board's minimum limit, as NVML or amdsmi reports it).

    Raises:
        TypeError, ValueError: naming the argument: both or neither of ``watts``/``fraction``,
            a fraction outside (0, 1], a non-positive ``watts``, bad ``gpus``, ``strict``,
            ``max_slowdown`` or ``min_watts`` (or ``min_watts`` without ``watts="auto"``).
            Device ranges and unknown indices are checked in `start`, before anything is
            changed.
    """

    def __init__(
        self,
        watts: float | str | None = None,
        fraction: float | None = None,
        gpus: str | Sequence[int] = "all",
        strict: bool = False,
        max_slowdown: float = 0.1,
        min_watts: float | None = None,
    ) -> None:
        self.watts, self.fraction, self.gpus, self.strict, self.max_slowdown, self.min_watts = check_cap_arguments(
            watts, fraction, gpus, strict, max_slowdown, min_watts
        )
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
            {
                "gpu": c.board.index,
                "uuid": c.board.uuid,
                "previous_w": c.previous_mw / 1000,
                "cap_w": c.applied_mw / 1000,
                "range_w": [c.limits.min_mw / 1000, c.limits.max_mw / 1000],
            }
            for c in self.limits.capped
        ]

    def start(self) -> list[Notice]:
        """Recover limits left by killed runs, then cap (on one process per node).

        Boards that another live run has capped are left as they are (one notice). With
        ``watts="auto"`` the boards are registered here and the search begins with
        `start_search`, once training (and its meter) has started.

        Raises:
            ValueError: a cap outside a device's range or an unknown GPU index (nothing
                changed).
            PermissionError: no permission and ``strict=True`` (nothing changed).
            PowerCapError: with ``strict=True``: no GPU, the journal unusable or damaged,
                a board capped by another run, or a driver error (nothing changed).
        """
        self.limits = PowerLimits()
        try:
            boards = select_boards(self.gpus)
        except DeviceError as err:
            return self._uncapped([], f"No GPU to cap ({err}).", "info")
        if not boards:
            return self._uncapped([], "No GPU visible to this process: nothing to cap.", "info")
        notices: list[Notice] = []
        try:
            notices += [Notice("warn", m) for m in self.limits.recover()]
            if self.strict and self.limits.damage:
                raise JournalError(" ".join(self.limits.damage) + " strict=True: check the boards' limits first.")
            self.limits.apply(boards, None if self.auto else self.watts, self.fraction, strict=self.strict)  # type: ignore[arg-type]
        except JournalError as err:
            return self._uncapped(notices, f"Power cap not applied: {err}", "warn")
        except DeviceError as err:
            return self._uncapped(notices, f"Power cap not applied: the GPU driver failed ({err}).", "warn")
        except PermissionError as err:
            if self.strict:
                raise
            return [*notices, Notice("warn", f"{err} Training continues uncapped.")]
        notices += [Notice("warn", m) for m in self.limits.take_messages()]
        if self.limits.busy:
            notices.append(Notice("warn", busy_message(self.limits.busy)))
        if self.limits.capped and not self.auto:
            in_force = ", ".join(f"GPU {c['gpu']} {c['cap_w']:g} W (was {c['previous_w']:g} W)" for c in self.caps())
            notices.append(Notice("info", "Power cap in force: " + in_force))
        return notices

    def _uncapped(self, notices: list[Notice], reason: str, level: str) -> list[Notice]:
        """Train uncapped with one message, or (``strict``) raise `PowerCapError` first.

        Raises:
            PowerCapError: with ``strict=True``.
        """
        reason = reason if reason.endswith(".") else reason + "."
        if self.strict:
            raise PowerCapError(f"{reason} strict=True: the run does not start uncapped.")
        return [*notices, Notice(level, f"{reason} Training continues uncapped.")]

    def start_on(self, ranks: Ranks) -> list[Notice]:
        """`start` on the node's local rank 0; every rank waits and raises the same error.

        Raises:
            ValueError, PermissionError, PowerCapError: as `start`, on every rank when any
                node failed.
        """
        failure: Exception | None = None
        notices: list[Notice] = []
        if ranks.leads_node:
            try:
                notices = self.start()
            except (ValueError, PermissionError, PowerCapError) as err:
                failure = err
        for kind in (ValueError, PermissionError, PowerCapError):  # every rank reaches every decision
            if ranks.agree(isinstance(failure, kind)):
                raise failure if isinstance(failure, kind) else kind("Setting the power cap failed on another node.")
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
        self.finder = finder = CapFinder(self.limits, meter, max_slowdown=self.max_slowdown, min_watts=self.min_watts)
        if finder.done:
            return [Notice("warn", f"No cap to search below the limit at start ({finder.cap_w(0):g} W in all).")]
        text = (
            f"Searching for the power cap that saves most energy within {self.max_slowdown:.0%} slowdown: "
            f"{len(finder.fractions)} candidates from {finder.cap_w(0):g} W to {finder.cap_w(-1):g} W, "
            f"at most {finder.budget} steps (Zeus's defaults: {finder.zeus_steps})."
        )
        return [Notice("info", text)]

    def on_step(self, step: int) -> dict[str, float] | None:
        """Drive the cap search after each optimizer step; metrics when the cap changed."""
        return self.finder.on_step(step) if self.finder is not None else None

    def figures(self) -> dict[str, float]:
        """``{"power/cap_w": W}`` while a cap is in force, else {}."""
        return {} if self.cap_w is None else {keys.CAP_W: self.cap_w}

    def publish(self, tracker: EnergyTracker | None) -> None:
        """Show the caps in force in a monitor's figures (``power/cap_w`` in every window)
        and in its run record's header; without a cap in force, take the figure away."""
        if tracker is not None:
            tracker.show_power_cap(self.cap_w, self.caps())

    def record(self, tracker: EnergyTracker | None, event: str) -> None:
        """A ``power_cap`` line in a monitor's run record (the header may precede the cap)."""
        if tracker is not None:
            if self.finder is None:
                tracker.write_record(POWER_CAP, event=event, caps=self.caps(), table=None)
            else:
                choice = self.finder.choice() if self.finder.done else None
                tracker.write_record(POWER_CAP, event=event, caps=self.caps(), table=self.finder.table(), choice=choice)

    def finish(self, tracker: EnergyTracker | None = None) -> list[str]:
        """Restore every limit changed (idempotent) and take ``power/cap_w`` out of the
        tracker's figures; returns the messages to show."""
        if tracker is not None:
            tracker.show_power_cap(None, self.caps())
        messages = [self.finder.summary()] if self.finder is not None and self.finder.steps_used else []
        if self.limits is not None:
            messages += self.limits.restore()
            self.limits.guard.uninstall()
        if self._own_meter is not None:
            self._own_meter.close()
        return messages
