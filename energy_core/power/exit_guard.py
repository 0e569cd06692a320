"""ExitGuard: run a restore on every way out of the process that Python can see.

``atexit``, and SIGTERM/SIGINT/SIGHUP handlers that restore first and then behave as
before: the previous handler, or the default action, taken again with the default
handler (SIGINT's default in Python raises KeyboardInterrupt; SIGTERM and SIGHUP end the
process by the signal, status 128 + signal in a shell: a closed terminal or SSH session
ends the run). A signal the process ignores (``nohup`` ignores SIGHUP) stays ignored: the
run goes on, and so does its cap. A SIGKILL cannot be caught: the journal covers it.

Only the process that installed the guard restores. A process forked from it (a
DataLoader worker) inherits the handlers and the ``atexit`` entry: there they do nothing
but what the process would have done without them, so a Ctrl-C to the whole process
group sets no limit from the workers, and a SIGTERM ends them by the signal.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))


class ExitGuard:
    """Calls ``restore`` at interpreter exit and on the signals in `SIGNALS`, in this process only.

    Args:
        restore: Idempotent, safe from any thread.

    Examples:
        >>> guard = ExitGuard(lambda: None)
        >>> guard.install()  # True: from the main thread, the signals are taken too
        True
        >>> guard.uninstall()
    """

    def __init__(self, restore: Callable[[], Any]) -> None:
        self.restore = restore
        self.installed = False
        self.signals = False  # whether the signals are taken (`install` on the main thread)
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    def here(self) -> bool:
        """Whether this is the process that installed the guard (not a fork of it)."""
        return os.getpid() == self._pid

    def install(self) -> bool:
        """Register with atexit and, from the main thread, take over the signals. Whether the
        signals are guarded: Python sets signal handlers from the main thread only."""
        if self.installed:
            return self.signals
        self.installed = True
        self._pid = os.getpid()
        atexit.register(self._at_exit)
        self.signals = threading.current_thread() is threading.main_thread()
        if not self.signals:
            return False
        for signum in SIGNALS:
            previous = _handler(signum)
            if previous == signal.SIG_IGN:
                continue  # ignored (nohup): the process outlives it, and the cap must too
            if self._in_chain(signum, previous):
                continue  # still in place (uninstalled off the main thread, or under another guard's)
            self._previous[signum] = previous
            _set_handler(signum, self._on_signal)
        return True

    def _in_chain(self, signum: int, handler: Any) -> bool:
        """Whether this guard's handler is ``handler`` or one the guards' handlers from it pass the signal
        on to: wrapping it again would make a loop."""
        seen: set[int] = set()
        while getattr(handler, "__func__", None) is ExitGuard._on_signal and id(handler.__self__) not in seen:
            if handler.__self__ is self:
                return True
            seen.add(id(handler.__self__))
            handler = handler.__self__._previous.get(signum)
        return False

    def _at_exit(self) -> None:
        if self.here():
            self.restore()

    def _on_signal(self, signum: int, frame: Any) -> None:
        previous = self._previous.get(signum)
        try:
            with signals_held():
                if self.here():
                    self.restore()
                if not callable(previous):  # the default action, as without the guard: the signal again
                    signal.signal(signum, signal.SIG_DFL)
                    os.kill(os.getpid(), signum)
        finally:  # a Ctrl-C held during the restore raises as it ends: the signal's own handler runs all the same
            if callable(previous):
                previous(signum, frame)
        if not callable(previous):
            raise SystemExit(128 + signum)  # only where the signal did not end the process (blocked)

    def uninstall(self) -> None:
        """Put the previous handlers back and leave atexit (after a normal restore).

        Where another handler was installed over this one (a second guard, finished first or
        not), this one stays in its chain and passes the signal on to the handler it found
        (an uninstalled guard's handler restores nothing of its own: its limits are back); a
        guard that puts it back skips it. Off the main thread, where no handler can be set,
        this one stays in place the same way, passing every signal on."""
        if threading.current_thread() is threading.main_thread():
            for signum, previous in list(self._previous.items()):
                if _handler(signum) == self._on_signal:
                    _set_handler(signum, _unchained(signum, previous))
                    del self._previous[signum]
        atexit.unregister(self._at_exit)
        self.installed = self.signals = False


def _unchained(signum: int, handler: Any) -> Any:
    """The handler to put back for ``signum``: ``handler``, past any uninstalled guard's (which
    would only pass the signal on); the default action for None."""
    while getattr(handler, "__func__", None) is ExitGuard._on_signal and not handler.__self__.installed:
        handler = handler.__self__._previous.get(signum)
    return signal.SIG_DFL if handler is None else handler


AGAIN_TRIES = 3  # `_all_done`: an item that may be done again is tried at most this many times
_holds: list[dict[int, Any]] = []  # the handlers `signals_held` blocks hold, outermost first (main thread)


def _handler(signum: int) -> Any:
    """The handler of ``signum`` as the program set it: a held one is the one its block puts back."""
    for held in _holds:
        if signum in held:
            return held[signum]
    return signal.getsignal(signum)


def _set_handler(signum: int, handler: Any) -> None:
    """Set the handler of ``signum``; inside a `signals_held` block, from the block's end."""
    for held in _holds:
        if signum in held:
            held[signum] = handler
            return
    signal.signal(signum, handler)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold every Python signal handler until the block ends; then send the signals that came
    meanwhile again, for their handlers to run as they would have. Off the main thread, where
    Python sets no handler, it holds nothing. The guard's signals are held even at their default
    action (a first cap installs its guard inside the block): their default comes at the block's end.

    A handler runs between any two bytecodes of the one it interrupts: a DataLoader's SIGCHLD
    handler raises when its workers die of the same signal, which would cut a restore short
    (an exception inside a driver call reads as a failed call); and a guard's restore in the
    middle of a change of limit would let the change go on after it (`PowerLimits.set`).
    """
    came: list[int] = []
    held: dict[int, Any] = {}
    pushed = False
    try:  # a signal whose handler raises (Ctrl-C) may cut the setup short: what it held is put back
        for signum in signal.valid_signals():
            try:
                handler = signal.getsignal(signum)
                if callable(handler) or (handler == signal.SIG_DFL and signum in SIGNALS):  # a guard's own too
                    held[signum] = handler  # first: put back even if the signal comes as it is replaced
                    signal.signal(signum, lambda number, frame: came.append(number))
            except (OSError, ValueError, RuntimeError):
                held.pop(signum, None)  # a signal Python does not handle, or not from this thread
        if held:  # the main thread's: a guard installed meanwhile takes its place from the block's end
            _holds.append(held)
            pushed = True
        yield
    finally:
        if pushed:
            _holds.remove(held)
        # A handler that raises (Ctrl-C's), for a signal sent again or one that comes now, stops no other
        # handler from being put back and no other signal from being sent: its error is raised after them.
        # Ctrl-C's handler goes back last, so that a Ctrl-C coming meanwhile finds every other one in place.
        back = sorted(held.items(), key=lambda item: item[0] == signal.SIGINT)
        first = _all_done(back, lambda item: signal.signal(*item), again=True)
        sent = _all_done(list(dict.fromkeys(came)), signal.raise_signal, again=False)  # to this thread: at once
        if first or sent:
            raise first or sent  # type: ignore[misc]


def _all_done(items: list[Any], act: Callable[[Any], Any], again: bool) -> BaseException | None:
    """``act`` on every item, whatever a signal's handler raises meanwhile; the first error (None if
    none). ``again``: an item the error came after may be done again (putting a handler back), else
    it counts as done (sending a signal, whose handler raised)."""
    first: BaseException | None = None
    left, tried = list(items), 0  # how often the first item left was tried
    while left:
        try:
            while left:
                tried += 1
                if again and tried < AGAIN_TRIES:  # an item that fails each time is not tried for ever
                    act(left[0])
                    del left[0]
                else:
                    act(left.pop(0))
                tried = 0
        except BaseException as err:  # noqa: BLE001 - raised by the caller once every item is done
            first = first or err
            if not (again and tried < AGAIN_TRIES):
                tried = 0  # that item was taken off: the next one starts afresh
    return first
