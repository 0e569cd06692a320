"""Driver calls made for the training thread, each waited for at most `DRIVER_WAIT_S`.

A driver call can hang (a GPU fallen off the bus, a wedged driver) and nothing can
interrupt it. The calls the training thread needs an answer to (discovering devices,
listing boards, the driver's version) therefore run on a daemon thread of their own;
the caller waits at most `DRIVER_WAIT_S`, then goes on without the answer. While a call
to one library has not returned, further calls to that library are not made (they would
hang too): they fail at once. The sampler's readings follow the same bound
(`energy_core.sampling.sampler`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from energy_core.devices.source import DeviceError

DRIVER_WAIT_S = 5.0  # the most the training thread waits for any driver call
THREAD_NAME = "energy-driver-call"
T = TypeVar("T")
_hung: dict[str, threading.Thread] = {}  # library -> the thread of a call that has not returned
_lock = threading.Lock()


class DriverHung(DeviceError):
    """A driver call did not return within `DRIVER_WAIT_S` (or an earlier one still has not)."""


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
        if earlier is not None and earlier.is_alive():
            raise DriverHung(f"an earlier call to the {library} still has not returned (a hung driver?)")
        outcome: list[T] = []
        failure: list[BaseException] = []

        def run() -> None:
            try:
                outcome.append(call())
            except BaseException as err:  # noqa: BLE001 - handed to the caller as it is
                failure.append(err)

        thread = threading.Thread(target=run, name=THREAD_NAME, daemon=True)
        thread.start()
    thread.join(DRIVER_WAIT_S)  # read at each call: one place to change the bound (tests shorten it)
    if thread.is_alive():
        with _lock:
            _hung[library] = thread
        raise DriverHung(f"a call to the {library} did not return within {DRIVER_WAIT_S:g} s (a hung driver?)")
    if failure:
        raise failure[0]
    return outcome[0]
