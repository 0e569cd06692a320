"""Recovery: put back a limit that a process which is gone left on a board, if the journal says so credibly.

An entry is applied only when it is valid (`JournalEntry.parse` accepted it from a
journal private to this user), was written on this host by a process of this user that
has ended, names a board present on this host, holds limits inside that board's allowed
range, and the board still carries the limit the entry says was set, or (``from_mw``) the
limit it carried before that change: a kill between the
journal and the driver leaves that one (otherwise someone changed it since, or the
driver reloaded: the board is left alone). Entries written before ``from_mw`` existed
are read as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

from energy_core import devices
from energy_core.devices import DeviceError
from energy_core.power.journal_entry import JournalEntry


@dataclass(frozen=True)
class Outcome:
    """What recovering one entry did.

    Args:
        message: One line for the user.
        keep: Keep the entry in the journal (the board could not be reached: try again later).
    """

    message: str
    keep: bool = False


def _driver_reachable() -> bool:
    try:
        devices.visible_boards()
    except DeviceError:
        return False
    return True


def recover_entry(uuid: str, entry: JournalEntry) -> Outcome:
    """Restore one board from the entry of a process that has ended (see the module)."""
    pid = entry.pid
    try:
        board = devices.board_by_uuid(uuid)
        if board is None:
            if not _driver_reachable():
                return Outcome(f"{uuid}: no GPU driver to reach the board; left in the journal.", keep=True)
            return Outcome(f"{uuid}: no such GPU on this host; the journal entry of pid {pid} is dropped.")
        limits = board.limits()
        for key in ("previous_mw", "set_mw", "from_mw"):
            value = getattr(entry, key)
            if value is not None and not limits.min_mw <= value <= limits.max_mw:
                return Outcome(
                    f"{uuid}: the journal entry of pid {pid} has {key}={value}, outside the board's range "
                    f"[{limits.min_mw}, {limits.max_mw}] mW; dropped, board left as it is."
                )
        current = limits.current_mw
        if current not in entry.carried():
            return Outcome(f"{uuid}: limit changed since pid {pid} set it; left as it is.")
        board.set_limit_mw(entry.previous_mw)
    except (DeviceError, PermissionError) as err:
        return Outcome(f"{uuid}: could not restore the power limit ({err}); left in the journal.", keep=True)
    return Outcome(
        f"Restored the power limit of {uuid} to {entry.previous_mw / 1000:g} W "
        f"(left at {current / 1000:g} W by pid {pid}, which is gone)."
    )
