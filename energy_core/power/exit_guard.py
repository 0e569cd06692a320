"""ExitGuard: run a restore on every way out of the process that Python can see.

``atexit``, and SIGTERM/SIGINT/SIGHUP handlers that restore first and then behave as
before: the previous handler, or the default (KeyboardInterrupt for SIGINT, exit status
128 + signal for SIGTERM and SIGHUP: a closed terminal or SSH session ends the run). A
signal the process ignores (``nohup`` ignores SIGHUP) stays ignored: the run goes on, and
so does its cap. A SIGKILL cannot be caught: the journal covers it.
"""

from __future__ import annotations

import atexit
import signal
import threading
from collections.abc import Callable
from typing import Any

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))


class ExitGuard:
    """Calls ``restore`` at interpreter exit and on the signals in `SIGNALS`.

    Args:
        restore: Idempotent, safe from any thread.

    Examples:
        >>> guard = ExitGuard(lambda: None)
        >>> guard.install(); guard.uninstall()
    """

    def __init__(self, restore: Callable[[], Any]) -> None:
        self.restore = restore
        self.installed = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Register with atexit and, from the main thread, take over the signals."""
        if self.installed:
            return
        self.installed = True
        atexit.register(self.restore)
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in SIGNALS:
            previous = signal.getsignal(signum)
            if previous == signal.SIG_IGN:
                continue  # ignored (nohup): the process outlives it, and the cap must too
            self._previous[signum] = previous
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.restore()
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise SystemExit(128 + signum)

    def uninstall(self) -> None:
        """Put the previous handlers back and leave atexit (after a normal restore)."""
        if threading.current_thread() is threading.main_thread():
            for signum, previous in self._previous.items():
                if signal.getsignal(signum) == self._on_signal:
                    signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()
        atexit.unregister(self.restore)
        self.installed = False
