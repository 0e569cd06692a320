"""PowerLimits: set GPU power limits and put them back, with a journal that outlives the process.

A power limit outlives the process while persistence mode is on, so whoever sets it must
put it back. In this order of defence:

1. `PowerLimits.restore` at train end and on exceptions (the adapters call it);
2. `ExitGuard`: SIGTERM/SIGINT handlers that restore first, then behave as before, and
   ``atexit``;
3. the `Journal`, written *before* each change: `PowerLimits.recover` (at the next cap's
   start, or ``energy-report --restore-power-limits``) puts back the limits of processes
   that are gone (SIGKILL, OOM kill) when the board still carries the limit they set.

The limit restored is the one in force before (not the maximum, not the default). Boards
are `GpuBoard`s: nothing here knows the vendor.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from energy_core import devices
from energy_core.devices import DeviceError, GpuBoard, LimitRange
from energy_core.power.exit_guard import ExitGuard
from energy_core.power.journal import Journal


@dataclass
class CappedGpu:
    """One board whose limit this process changed.

    Args:
        board: The board.
        previous_mw: The limit in force before, restored at the end.
        limits: The board's allowed range and default.
        applied_mw: The limit read back after the last change.
    """

    board: GpuBoard
    previous_mw: int
    limits: LimitRange
    applied_mw: int


@dataclass(frozen=True)
class PlannedCap:
    """A limit to set on one board, checked against its range before anything changes."""

    board: GpuBoard
    limits: LimitRange
    target_mw: int


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def plan_caps(boards: Sequence[GpuBoard], watts: float | None, fraction: float | None) -> list[PlannedCap]:
    """Each board's target limit (mW): ``watts``, ``fraction`` x its default, or its current limit
    (registered only, for the cap finder).

    Raises:
        ValueError: a target outside a board's range, naming the argument (nothing changed).
    """
    planned = []
    for board in boards:
        limits = board.limits()
        if watts is not None:
            target = int(round(watts * 1000))
        elif fraction is not None:
            target = int(round(fraction * limits.default_mw))
        else:
            target = limits.current_mw
        low, high, default = limits.min_mw, limits.max_mw, limits.default_mw
        if not low <= target <= high:
            where = f"the allowed range of GPU {board.index} ({board.uuid}): [{low / 1000:g}, {high / 1000:g}] W"
            if watts is not None:
                raise ValueError(f"watts={watts:g} is outside {where}")
            raise ValueError(
                f"fraction={fraction:g} gives {target / 1000:g} W, outside {where}, i.e. fraction in "
                f"[{low / default:.3g}, {high / default:.3g}] of its {default / 1000:g} W default"
            )
        planned.append(PlannedCap(board, limits, target))
    return planned


class PowerLimits:
    """Sets and restores GPU power limits, journalled.

    Args:
        journal: The journal file; defaults to ``$ENERGY_CALLBACKS_POWER_JOURNAL`` or
            ``/var/tmp/energy-callbacks/power-limits.json``.

    Example:
        >>> limits = PowerLimits()                                          # doctest: +SKIP
        >>> capped = limits.apply(devices.visible_boards(), None, 0.8)      # doctest: +SKIP
        >>> limits.restore()                                                 # doctest: +SKIP
    """

    def __init__(self, journal: Path | None = None) -> None:
        self.journal = Journal(journal)
        self.capped: list[CappedGpu] = []
        self.guard = ExitGuard(self.restore)
        self._lock = threading.RLock()

    def recover(self) -> list[str]:
        """Restore limits left behind by processes of this host that are gone.

        A limit is put back only if the board still carries the limit the dead process
        set (otherwise someone changed it since, or the driver was reloaded: the entry
        is dropped and the board left alone). Returns one message per board handled.
        """
        messages = []
        host = socket.gethostname()
        with self.journal.entries() as entries:
            for uuid, entry in list(entries.items()):
                if entry.get("host") != host or _alive(int(entry.get("pid", 0))):
                    continue
                try:
                    board = devices.board_by_uuid(uuid)
                    if board is None:
                        raise DeviceError("no such board")
                    current = board.limit_mw()
                    if current == int(entry["set_mw"]):
                        board.set_limit_mw(int(entry["previous_mw"]))
                        messages.append(
                            f"Restored the power limit of {uuid} to {entry['previous_mw'] / 1000:g} W "
                            f"(left at {current / 1000:g} W by pid {entry['pid']}, which is gone)."
                        )
                    else:
                        messages.append(f"{uuid}: limit changed since pid {entry['pid']} set it; left as it is.")
                except (DeviceError, PermissionError) as err:
                    messages.append(f"{uuid}: could not restore the power limit ({err}); left in the journal.")
                    continue
                del entries[uuid]
        return messages

    def apply(self, boards: Sequence[GpuBoard], watts: float | None, fraction: float | None) -> list[CappedGpu]:
        """Cap every board (all or nothing): journal first, then set, then read back.

        With neither ``watts`` nor ``fraction`` the boards are only registered (journalled
        at their current limit) for the cap finder to change.

        Raises:
            ValueError: a target outside a board's range (nothing has been changed).
            PermissionError: no permission to set limits (nothing was changed).
        """
        planned = plan_caps(boards, watts, fraction)
        self.guard.install()
        try:
            for cap in planned:
                capped = CappedGpu(cap.board, cap.limits.current_mw, cap.limits, cap.limits.current_mw)
                self.set(capped, cap.target_mw)
        except PermissionError:
            self.restore()
            raise
        return self.capped

    def set(self, capped: CappedGpu, target_mw: int) -> int:
        """Set one board's limit (journalled); returns the limit read back, in mW."""
        uuid = capped.board.uuid
        with self._lock:
            with self.journal.entries() as entries:
                entry = entries.get(uuid)
                if entry is None or int(entry.get("pid", 0)) != os.getpid():
                    entry = {"previous_mw": capped.previous_mw, "pid": os.getpid(), "host": socket.gethostname()}
                entry.update(set_mw=target_mw, time=time.time())
                entries[uuid] = entry
            try:
                capped.board.set_limit_mw(target_mw)
            except PermissionError:
                with self.journal.entries() as entries:
                    entries.pop(uuid, None)
                raise
            if capped not in self.capped:
                self.capped.append(capped)
            capped.applied_mw = capped.board.limit_mw()
            return capped.applied_mw

    def restore(self) -> list[str]:
        """Put back every limit this process changed. Idempotent, safe from any thread."""
        messages = []
        with self._lock:
            for capped in list(self.capped):
                index = capped.board.index
                try:
                    capped.board.set_limit_mw(capped.previous_mw)
                except (DeviceError, PermissionError) as err:
                    messages.append(f"GPU {index}: restoring the power limit failed ({err}).")
                    continue
                self.capped.remove(capped)
                messages.append(f"GPU {index}: power limit restored to {capped.previous_mw / 1000:g} W.")
                with self.journal.entries() as entries:
                    entries.pop(capped.board.uuid, None)
        return messages


def select_boards(gpus: str | tuple[int, ...]) -> list[GpuBoard]:
    """The visible boards named by ``gpus`` (``"all"`` or visible indices).

    Raises:
        DeviceError: no GPU library at all.
        ValueError: an unknown index, naming the visible ones.
    """
    visible = devices.visible_boards()
    if gpus == "all":
        return visible
    known = {b.index: b for b in visible}
    unknown = [i for i in gpus if i not in known]
    if unknown:
        raise ValueError(
            f"gpus: no visible GPU with index {unknown}; visible indices are "
            f"{sorted(known) if known else 'none'} (0 to {len(visible) - 1})"
        )
    return [known[i] for i in gpus]
