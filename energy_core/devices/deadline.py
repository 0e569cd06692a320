"""Driver calls made for the training thread, each waited for at most `DRIVER_WAIT_S`.

A driver call can hang (a GPU fallen off the bus, a wedged driver) and nothing can
interrupt it. The calls the training thread needs an answer to (discovering devices,
listing boards, the driver's version, every power-limit call: `BoundedBoard`) therefore run
on a daemon thread of their own; the caller waits at most `DRIVER_WAIT_S`, then goes on
without the answer. While a call to one library has not returned, further calls to that
library are not made (they would hang too): they fail at once. The sampler's readings
follow the same bound (`energy_core.sampling.sampler`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from energy_core.devices.source import DeviceError, GpuBoard, LimitRange

DRIVER_WAIT_S = 5.0  # the most the training thread waits for any driver call
THREAD_NAME = "energy-driver-call"
T = TypeVar("T")


class _Call:
    """One driver call on its own thread, and what runs once it returns (`when_returned`).

    Its lock is its own: the call's thread never takes the module's lock, which a signal
    handler's restore may find held by the thread it interrupted."""

    def __init__(self, call: Callable[[], object], library: str) -> None:
        self.library = library
        self.outcome: list[object] = []
        self.failure: list[BaseException] = []
        self.returned = False
        self.late: list[Callable[[], None]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, args=(call,), name=THREAD_NAME, daemon=True)

    def _run(self, call: Callable[[], object]) -> None:
        try:
            self.outcome.append(call())
        except BaseException as err:  # noqa: BLE001 - handed to the caller as it is
            self.failure.append(err)
        with self.lock:  # as `_outlived` decides, under the same lock
            self.returned = True
            if _hung.get(self.library) is self:
                _hung.pop(self.library, None)  # the driver answers again: what runs now may call it
        for then in self.late:
            try:
                then()
            except Exception:  # noqa: BLE001 - nobody waits for this thread: nothing to raise to
                pass

    def then(self, then: Callable[[], None]) -> bool:
        """Run ``then`` once the call has returned; False (not kept) if it has already."""
        with self.lock:
            if not self.returned:
                self.late.append(then)
                return True
        return False


_hung: dict[str, _Call] = {}  # library -> a call that has not returned in time
_lock = threading.RLock()  # the callers' (a signal handler's restore may enter it again)


class DriverHung(DeviceError):
    """A driver call did not return within `DRIVER_WAIT_S` (or an earlier one still has not)."""


def library_name(vendor: str) -> str:
    """How the calls to one vendor's driver are named (``"NVIDIA driver"``): one name per library."""
    return f"{vendor.upper()} driver"


def limits_library(board: GpuBoard) -> str:
    """How the power-limit calls of one board are named: apart from the vendor's reads, so that a
    set that hangs stops no measurement, and from its other boards', so that one board's hung call
    leaves the others' limits to be put back."""
    return f"{library_name(board.vendor)} for {board.uuid}'s power limit"


def when_returned(library: str, then: Callable[[], None]) -> None:
    """Run ``then`` once the call to ``library`` that did not return in time has returned (on
    that call's thread, whatever it returned or raised); at once if none is outstanding."""
    hung = _hung.get(library)
    if hung is None or not hung.then(then):
        then()


def within_bound(library: str, call: Callable[[], T]) -> T:
    """``call()``, run on its own thread and waited for at most `DRIVER_WAIT_S`.

    Args:
        library: What is called (``"NVIDIA driver"``), for messages and to tell the calls
            of a driver that has hung apart.
        call: The driver calls to make.

    Raises:
        DriverHung: it did not return in time, or an earlier call to ``library`` still
            has not returned (it is not called again).
        Exception: whatever ``call`` raised.
    """
    with _lock:
        earlier = _hung.get(library)
        if earlier is not None and earlier.thread.is_alive():
            raise DriverHung(f"an earlier call to the {library} still has not returned (a hung driver?)")
    made = _Call(call, library)
    try:
        made.thread.start()
    except RuntimeError:  # no new thread at interpreter shutdown (an atexit restore): called here
        return call()
    try:
        made.thread.join(DRIVER_WAIT_S)  # read at each call: one place to change the bound (tests shorten it)
    except BaseException:
        # A signal's handler raised (Ctrl-C) while the call was in the driver: what the caller undoes
        # depends on whether the call landed, so it is waited for as any call is, then the error goes on.
        made.thread.join(DRIVER_WAIT_S)
        _outlived(made)
        raise
    if _outlived(made):
        raise DriverHung(f"a call to the {library} did not return within {DRIVER_WAIT_S:g} s (a hung driver?)")
    if made.failure:
        raise made.failure[0]
    return made.outcome[0]  # type: ignore[return-value]


def _outlived(made: _Call) -> bool:
    """Whether the call is still in the driver after its wait; then it is the library's hung call."""
    with made.lock:
        if made.returned:
            return False
        with _lock:
            _hung[made.library] = made
    return True


class BoundedBoard(GpuBoard):
    """A board whose power-limit calls are each waited for at most `DRIVER_WAIT_S` (`within_bound`).

    The training thread reads and sets limits (a cap at fit start, the search's and the
    follower's changes at steps, the restore at the end): a hung driver must not hold it.
    A change that has not returned in time raises `DriverHung` and may still land; the
    caller keeps its journal entry (`energy_core.power.limits`).

    Args:
        board: A vendor's board.
    """

    def __init__(self, board: GpuBoard) -> None:
        self.board = board
        self.vendor, self.index, self.uuid = board.vendor, board.index, board.uuid
        self._library = limits_library(board)

    def limits(self) -> LimitRange:
        return within_bound(self._library, self.board.limits)

    def limit_mw(self) -> int:
        return within_bound(self._library, self.board.limit_mw)

    def set_limit_mw(self, mw: int) -> None:
        within_bound(self._library, partial(self.board.set_limit_mw, mw))
