"""PowerLimits: set GPU power limits and put them back, with a journal that outlives the process.

A power limit outlives the process while persistence mode is on, so whoever sets it must
put it back. In this order of defence:

1. `PowerLimits.restore` at train end and on exceptions (the adapters call it);
2. `ExitGuard`: SIGTERM/SIGINT/SIGHUP handlers that restore first, then behave as
   before, and ``atexit``;
3. the `Journal`, written *before* each change: `PowerLimits.recover` (at the next cap's
   start, or ``energy-report --restore-power-limits``) puts back the limits of processes
   that are gone (SIGKILL, OOM kill) when the board still carries the limit they set
   (see `recovery`).

One owner per board, whichever user runs it: a board held by another live process of this
host (its `board_lock`, or, for this user's runs, its journal entry) is not capped again
(`PowerLimits.busy`), so the limit restored is always the one in force before the first
cap (not the maximum, not the default, not another run's cap). A board that no longer
carries the limit this object set (an administrator changed it since) is left as it is,
at the end and at the next change alike (`PowerLimits.set` lets it go).

A change in the driver when a restore comes (another thread's, waited for at most
`LOCK_WAIT_CALLS` driver calls' wait) is this run's too: its target is recorded before the
call (``pending_mw``), the restore accepts it on the board, and the board and its journal
entry are let go only once the board carries its limit before the cap again.
The journal entry written before a change also names the limit the board carried before it
(``from_mw``), so that a kill between the journal and the driver is recovered as well; it is
not written again after the change (a signal then could not clear it: its handler does not
wait for a journal this thread holds).
A driver that hangs holds no thread for long: every board call is waited for at most
`DRIVER_WAIT_S` (`deadline.BoundedBoard`). A change that has not returned by then may
still land: its board keeps its journal entry (which names the limit before it and its
target), is changed no more, and is restored once the driver answers again, or by
`recover` after the process is gone.
Boards are `GpuBoard`s: nothing here knows the vendor.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path

from energy_core.devices import DeviceError, GpuBoard, deadline
from energy_core.power import board_lock
from energy_core.power.board_lock import BoardLock, Holder, UnusableLock
from energy_core.power.errors import BoardBusyError, JournalError
from energy_core.power.exit_guard import ExitGuard, signals_held
from energy_core.power.journal import Journal
from energy_core.power.journal_entry import JournalEntry
from energy_core.power.plan import BusyBoard, CappedGpu, PlannedCap, busy_message, plan_caps, select_boards
from energy_core.power.recovery import recover_entry

__all__ = ["BusyBoard", "CappedGpu", "PlannedCap", "PowerLimits", "plan_caps", "select_boards"]

LOCK_WAIT_CALLS = 3  # a change holds the lock for at most this many bounded driver calls (read, set, read back)
_LEFT: list[PowerLimits] = []  # this process's runs that ended with a limit they could not put back
_LEFT_LOCK = threading.Lock()


class PowerLimits:
    """Sets and restores GPU power limits, journalled, one owner per board.

    Args:
        journal: The journal file; defaults to `energy_core.power.journal.journal_path`.

    Attributes:
        capped: The boards this object changed and has not restored (and holds).
        busy: The boards the last `apply` left alone (held by another live process).
        damage: Every journal problem seen (damaged content, dropped entries).

    Examples:
        >>> limits = PowerLimits()                                          # doctest: +SKIP
        >>> capped = limits.apply(devices.visible_boards(), None, 0.8)      # doctest: +SKIP
        >>> limits.restore()                                                 # doctest: +SKIP
    """

    def __init__(self, journal: Path | None = None) -> None:
        self.journal = Journal(journal)
        self.capped: list[CappedGpu] = []
        self.busy: list[BusyBoard] = []
        self.damage: list[str] = []
        self.guard = ExitGuard(self.restore)
        self.token = secrets.token_hex(8)
        self._messages: list[str] = []
        self._stale: list[str] = []  # restored boards whose entries are still to drop
        self._lock = threading.RLock()
        self._held: dict[str, BoardLock] = {}  # board UUID -> this object's hold on it
        self._unheld_said = self._unguarded_said = False

    def owns(self, entry: JournalEntry) -> bool:
        """Whether this object wrote the entry."""
        return entry.pid == os.getpid() and entry.token == self.token and entry.here()

    def _owned_elsewhere(self, entry: JournalEntry | None) -> bool:
        return entry is not None and entry.here() and not self.owns(entry) and entry.alive()

    def _collect(self) -> None:
        found = self.journal.take_problems()
        self.damage += found
        self._messages += found

    def _hold(self, uuid: str) -> Holder | None:
        """Hold a board against every other run of this host (`board_lock`). Its holder when
        another process that could set its limit has it; None when this object holds it, or
        when no lock can be used here (one message: other users' runs are then not kept off)."""
        if uuid in self._held:
            return None
        try:
            held = board_lock.take(uuid)
        except UnusableLock as err:
            if not self._unheld_said:
                self._unheld_said = True
                self._messages.append(
                    f"GPU power limits are not held against other users' runs here ({err}); this user's runs "
                    "are still kept apart by the journal."
                )
            return None
        if isinstance(held, Holder):
            return held
        self._held[uuid] = held
        return None

    def _let_go(self, uuids: Iterable[str]) -> None:
        for uuid in uuids:
            held = self._held.pop(uuid, None)
            if held is not None:
                held.release()

    def take_messages(self) -> list[str]:
        """Messages not yet shown (journal problems, limits left unchanged by `set`)."""
        messages, self._messages = self._messages, []
        return messages

    def recover(self) -> list[str]:
        """Restore limits left behind by processes of this host and user that are gone
        (see `energy_core.power.recovery`); returns one message per problem or board handled.

        Raises:
            JournalError: the journal cannot be used safely (nothing changed).
        """
        messages = []
        with self._lock, self.journal.entries() as entries:
            self._collect()
            for uuid, entry in list(entries.items()):
                if not entry.here() or entry.alive():
                    continue
                before = set(self._held)
                holder = self._hold(uuid)
                if holder is not None:  # another run's cap is on it now: its limit before is not ours to judge
                    who = "another process" if holder.pid is None else f"pid {holder.pid}"
                    messages.append(
                        f"{uuid}: held by {who}; the limit pid {entry.pid} left is recovered once that run has ended."
                    )
                    continue
                outcome = recover_entry(uuid, entry)
                self._let_go(set(self._held) - before)
                messages.append(outcome.message)
                if not outcome.keep:
                    del entries[uuid]
        return self.take_messages() + messages

    def keep_trying(self) -> None:
        """After a `restore` that left boards capped (the driver refused): the exit guard stays in
        place, and the next `apply` in this process tries again first. The boards stay this run's
        (held, journalled) until then."""
        with _LEFT_LOCK:
            if self not in _LEFT:
                _LEFT.append(self)

    @staticmethod
    def _retry_left() -> list[str]:
        """Put back the limits that earlier runs of this process could not (`keep_trying`), before a
        new cap: their boards are still theirs, and would read as another live run's."""
        with _LEFT_LOCK:
            left = list(_LEFT)
        messages: list[str] = []
        for earlier in left:
            messages += earlier.restore()
            if not earlier.capped:
                earlier.guard.uninstall()
                with _LEFT_LOCK:
                    if earlier in _LEFT:  # another thread's cap may have retried it meanwhile
                        _LEFT.remove(earlier)
        return messages

    def apply(
        self, boards: Sequence[GpuBoard], watts: float | None, fraction: float | None, strict: bool = False
    ) -> list[CappedGpu]:
        """Cap every board that no other live process has capped: journal first (one
        transaction for all), then set, then read back. The others are left as they are
        and listed in `busy`.

        With neither ``watts`` nor ``fraction`` the boards are only registered (journalled
        at their current limit) for the cap finder to change.

        Raises:
            ValueError: a target outside a board's range (nothing has been changed).
            BoardBusyError: with ``strict``, a board capped by another run (nothing changed).
            JournalError: the journal cannot be used safely (nothing changed).
            PermissionError, DeviceError: setting a limit failed (every change undone, but one
                still in a hung driver, `deadline.DriverHung`: kept for the restore).
        """
        self._messages += self._retry_left()  # first: a plan takes each board's limit now for the limit at start
        planned = plan_caps(boards, watts, fraction)
        with signals_held(), self._lock:  # a guard's restore comes after the change, not amid it
            claimed = self._claim(planned, strict)
            if claimed and not self.guard.install() and not self._unguarded_said:
                self._unguarded_said = True
                self._messages.append(
                    "The power cap was set from a thread other than the main one, where Python cannot take "
                    "signals: a SIGTERM or SIGHUP that ends this process leaves the cap on the board (the "
                    "limit goes back at a normal end, at exit and on Ctrl-C; after such a kill, at the next "
                    "cap's start or with energy-report --restore-power-limits)."
                )
            done: list[CappedGpu] = []
            try:
                for capped, target in claimed:
                    self._change(capped, target)
                    if capped not in self.capped:  # a restore (a signal) came meanwhile: cap nothing more
                        self._release([c for c, _ in claimed if c not in done and c is not capped])
                        break
                    done.append(capped)
            except (PermissionError, DeviceError):
                self._release([c for c, _ in claimed if c not in done and c.hung_mw is None])
                self._messages += self.restore()
                raise
        return self.capped

    def _claim(self, planned: Sequence[PlannedCap], strict: bool) -> list[tuple[CappedGpu, int]]:
        """Hold and journal the boards to cap, all at once under the journal's lock; which
        ones, with their targets. On any failure nothing is held or journalled."""
        self.busy = []
        claimed = []
        before = set(self._held)
        try:
            with self.journal.entries() as entries:
                self._collect()
                free = []
                for cap in planned:
                    entry = entries.get(cap.board.uuid)
                    if entry is not None and self._owned_elsewhere(entry):
                        self.busy.append(BusyBoard(cap.board, cap.limits.current_mw, entry.pid))
                        continue
                    holder = self._hold(cap.board.uuid)
                    if holder is not None:
                        uid = None if holder.uid in (None, os.geteuid()) else holder.uid
                        self.busy.append(BusyBoard(cap.board, cap.limits.current_mw, holder.pid, uid))
                        continue
                    free.append((cap, entry))
                if self.busy and strict:
                    raise BoardBusyError(f"{busy_message(self.busy)} strict=True: the run does not start.")
                for cap, entry in free:
                    capped = next((c for c in self.capped if c.board.uuid == cap.board.uuid), None)
                    if capped is None:
                        current = cap.board.limit_mw()
                        previous = current
                        low, high = cap.limits.min_mw, cap.limits.max_mw
                        if (
                            entry is not None
                            and entry.here()
                            and current in entry.carried()
                            and low <= entry.previous_mw <= high
                        ):
                            previous = entry.previous_mw  # a run that is gone left its cap: restore what was before
                        capped = CappedGpu(cap.board, previous, cap.limits, current)
                    entries[cap.board.uuid] = JournalEntry.mine(
                        capped.previous_mw, cap.target_mw, self.token, from_mw=capped.applied_mw
                    )
                    claimed.append((capped, cap.target_mw))
        except BaseException:
            self._let_go(set(self._held) - before)  # nothing was changed: hold nothing new
            raise
        return claimed

    def _change(self, capped: CappedGpu, target_mw: int) -> int:
        """Set one journalled board's limit; listed in `capped` first, and its target recorded
        (``pending_mw``), so that a signal arriving meanwhile restores it too (`restore`).
        Returns the limit read back, or, after a restore that came meanwhile, the limit the
        restore left (the board is then let go)."""
        new = capped not in self.capped
        if new:
            self.capped.append(capped)
        capped.pending_mw, capped.restore_to = target_mw, None
        try:
            capped.board.set_limit_mw(target_mw)
        except deadline.DriverHung:  # still in the driver: it may land whenever the driver answers
            capped.hung_mw, capped.pending_mw = target_mw, None
            self._when_returned(capped)
            raise
        except BaseException as err:
            if capped.restore_to is not None:
                self._after_restore(capped)
            else:
                capped.pending_mw = None
                if isinstance(err, (PermissionError, DeviceError)):
                    if new:
                        self.capped.remove(capped)
                else:  # interrupted (KeyboardInterrupt): the change may have landed
                    self._read_back(capped, target_mw)
            raise
        if capped.restore_to is None:  # read back while still pending: a restore meanwhile accepts it
            self._read_back(capped, target_mw)
        if capped.restore_to is not None:
            return self._after_restore(capped)
        capped.pending_mw = None
        return capped.applied_mw

    def _returned(self, capped: CappedGpu) -> None:
        """A change that outlived its wait (``hung_mw``) has returned, landed or not (on the
        driver call's thread). Before any restore, the board carries what it reads back and
        may be driven again; after one, the restore's limit goes back on, and the board and its
        entry are let go. It waits for the lock without a bound: on the driver call's thread,
        nobody waits for it, and whoever holds the lock lets it go within a few bounded calls
        (going on without it, a restore meanwhile took this run's own late cap for an
        administrator's)."""
        with self._lock:
            capped.hung_mw = None
            if capped not in self.capped:
                return
            if capped.restore_to is None:
                self._read_back(capped, capped.applied_mw)
                return
            to, capped.restore_to = capped.restore_to, None
            try:
                if capped.board.limit_mw() != to:
                    capped.board.set_limit_mw(to)
            except (DeviceError, PermissionError) as err:
                capped.restore_to = to
                if isinstance(err, deadline.DriverHung):  # another call of the board hangs: once it returns
                    self._when_returned(capped)
                else:
                    self._messages.append(f"{capped.board.label}: restoring the power limit failed ({err}).")
                return
            self._messages.append(f"{capped.board.label}: power limit restored to {to / 1000:g} W.")
            self._release([capped])

    def _when_returned(self, capped: CappedGpu) -> None:
        """Have `_returned` run once the board's call that did not return in time has returned."""
        deadline.when_returned(deadline.limits_library(capped.board), partial(self._returned, capped))

    @staticmethod
    def _read_back(capped: CappedGpu, target_mw: int) -> None:
        try:
            capped.applied_mw = capped.board.limit_mw()
        except (DeviceError, PermissionError):
            capped.applied_mw = target_mw

    def _after_restore(self, capped: CappedGpu) -> int:
        """A restore came while this board's change was in the driver: once the change has
        returned, the limit the restore chose goes back on if the change landed after it;
        then the board and its entry are let go. Returns the limit left on the board."""
        target, pending = capped.restore_to, capped.pending_mw
        assert target is not None and pending is not None
        capped.pending_mw = capped.restore_to = None
        try:
            current = capped.board.limit_mw()
        except (DeviceError, PermissionError):
            current = pending  # cannot tell: put the restore's limit back all the same
        if current == pending and current != target:
            try:
                capped.board.set_limit_mw(target)
            except (DeviceError, PermissionError) as err:
                capped.applied_mw = current  # still this run's cap: the next restore tries again
                self._messages.append(f"{capped.board.label}: restoring the power limit failed ({err}).")
                return current
        if capped in self.capped:
            self._release([capped])
        return target

    def _left_alone(self, capped: CappedGpu, current: int) -> str:
        return (
            f"{capped.board.label}: the power limit is {current / 1000:g} W, not the "
            f"{capped.applied_mw / 1000:g} W this run set: someone changed it since; left as it is."
        )

    def set(self, capped: CappedGpu, target_mw: int) -> int:
        """Set one board's limit (journalled first); returns the limit the board carries
        afterwards, in mW: anything but ``target_mw`` means the change was not made (or was
        undone), and the caller stops driving the board.

        Not changed: a board this object no longer holds (restored, or let go; its limit
        before the cap is returned). Not changed, with a message for `restore`
        (`take_messages`): a board whose limit is no longer the one set here (an
        administrator changed it since: it is left as it is and let go, its entry dropped);
        a board another run now owns; a change the journal cannot record (an unjournalled
        limit could not be recovered).

        Raises:
            PermissionError, DeviceError: the driver refused (the journal is put back), or did
                not answer in time (`deadline.DriverHung`: the change may still land; the entry,
                which names both limits, is kept, and the board is changed no more).
        """
        if not self.guard.here():
            return capped.applied_mw  # a forked child: the boards are its parent's
        with signals_held():  # a guard's restore comes after the change, not amid it (its driver calls wait)
            applied = self._set(capped, target_mw)
            kept = capped in self.capped
        if kept and capped not in self.capped:  # a signal's guard restored it as the block ended
            return capped.previous_mw
        return applied

    def _set(self, capped: CappedGpu, target_mw: int) -> int:
        uuid = capped.board.uuid
        with self._lock:
            if capped not in self.capped:
                return capped.previous_mw  # restored (or let go): no longer this run's to change
            if capped.hung_mw is not None:
                return capped.applied_mw  # a change is still in a hung driver: the board is driven no more
            try:
                current = capped.board.limit_mw()
            except (DeviceError, PermissionError):
                current = capped.applied_mw  # cannot tell: the driver answers the change itself
            if current != capped.applied_mw:
                self._messages.append(self._left_alone(capped, current))
                self._release([capped])
                return current
            try:
                with self.journal.entries() as entries:
                    self._collect()
                    before = entries.get(uuid)
                    if self._owned_elsewhere(before):
                        self._messages.append(
                            f"{capped.board.label}: another run now owns its power limit; left as it is."
                        )
                        return capped.applied_mw
                    entries[uuid] = JournalEntry.mine(capped.previous_mw, target_mw, self.token, from_mw=current)
            except JournalError as err:
                self._messages.append(
                    f"{capped.board.label}: the power limit stays at {capped.applied_mw / 1000:g} W: "
                    f"the journal could not record a change ({err})."
                )
                return capped.applied_mw
            try:
                applied = self._change(capped, target_mw)
            except (PermissionError, DeviceError):
                if capped.hung_mw is None:  # refused; a hung change's entry names both limits: kept
                    self._undo_entry(capped)
                raise
            return applied

    def _undo_entry(self, capped: CappedGpu) -> None:
        """After a refused change: the entry says what the board carries, or goes."""
        try:
            with self.journal.entries() as entries:
                if capped in self.capped:
                    entries[capped.board.uuid] = JournalEntry.mine(capped.previous_mw, capped.applied_mw, self.token)
                else:
                    entries.pop(capped.board.uuid, None)
        except JournalError:
            pass  # a stale entry is dropped by recovery: the board does not carry its limit

    def _release(self, boards: Sequence[CappedGpu]) -> None:
        for capped in boards:
            if capped in self.capped:
                self.capped.remove(capped)
        self._let_go([c.board.uuid for c in boards])
        self._forget([c.board.uuid for c in boards])

    def _forget(self, uuids: Sequence[str]) -> list[str]:
        """Drop this object's entries for these boards (and those an earlier call could not)."""
        self._stale += [uuid for uuid in uuids if uuid not in self._stale]
        if not self._stale or self.journal.in_use():
            return []  # a signal interrupted a transaction of this thread: the next call drops them
        stale, self._stale = self._stale, []
        try:
            with self.journal.entries() as entries:
                for uuid in stale:
                    entry = entries.get(uuid)
                    if entry is not None and self.owns(entry):
                        del entries[uuid]
        except JournalError as err:
            return [
                f"The power-limit journal could not be updated ({err}); its entries for the restored "
                "boards are stale and will be dropped."
            ]
        return []

    def restore(self) -> list[str]:
        """Put back every limit this object changed, then let the boards go. A board that no
        longer carries the limit set here (an administrator changed it since) is left as it
        is. Idempotent, safe from any thread and from a signal handler; never raises for a
        device or journal error.

        A change in the driver meanwhile is waited for (another thread's: at most
        `LOCK_WAIT_CALLS` driver calls' wait); its target counts as this run's limit. One
        that this thread's signal handler interrupted, or that has not returned in time, may
        land after the restore: its board and entry are kept until it has returned (`_change`
        or `_returned` then puts the limit back again).

        Only the process that capped the boards restores them: in a process forked from it
        (a user's ``os.fork``, a worker) this does nothing, as its exit guard does.
        """
        if not self.guard.here():
            return []
        with signals_held():  # a guard's restore comes after this one, not amid it (its driver calls wait)
            held = self._lock.acquire(timeout=LOCK_WAIT_CALLS * deadline.DRIVER_WAIT_S)
            try:
                return self._restore()
            finally:
                if held:
                    self._lock.release()

    def _restore(self) -> list[str]:
        messages = self.take_messages()
        restored = []
        for capped in list(self.capped):
            label = capped.board.label
            pending = capped.pending_mw
            try:
                current = capped.board.limit_mw()
            except (DeviceError, PermissionError):
                current = capped.applied_mw  # cannot tell: put the limit back all the same
            to = capped.previous_mw
            if current not in (capped.applied_mw, pending, capped.hung_mw):
                messages.append(self._left_alone(capped, current))
                to = current  # an administrator's: a change landing later gives way to it
            else:
                try:
                    capped.board.set_limit_mw(capped.previous_mw)
                except (DeviceError, PermissionError) as err:
                    messages.append(f"{label}: restoring the power limit failed ({err}).")
                    if capped.hung_mw is not None or pending is not None or isinstance(err, deadline.DriverHung):
                        capped.restore_to = capped.previous_mw  # put back once the driver answers (`_returned`)
                        if isinstance(err, deadline.DriverHung):
                            self._when_returned(capped)
                    continue
                messages.append(f"{label}: power limit restored to {capped.previous_mw / 1000:g} W.")
            if pending is not None:
                capped.restore_to = to
                if current != pending and pending != to:
                    continue  # the change may still land: let go of the board once it has returned
            if capped in self.capped:  # a restore run meanwhile (another thread's) may have let it go
                self.capped.remove(capped)
            restored.append(capped.board.uuid)
        self._let_go(restored)
        return list(dict.fromkeys(messages + self._forget(restored)))  # a failure said before is not said again
