"""Discovery that cannot stop or hang a start: a binding raising anything, a driver call that never returns.

A vendor's binding may raise more than its own error class (``RuntimeError`` from NVML;
``KeyError``, ``TypeError``, ``OSError`` from amdsmi); at discovery that is one notice and
the vendor is not measured, for the power cap a `DeviceError`, never the raw exception.
A driver call that does not return is waited for at most `DRIVER_WAIT_S`.
"""

from __future__ import annotations

import threading

import pynvml
import pytest

from energy_core import devices
from energy_core.devices import DeviceError, deadline
from tests.doubles.sim_gpu import SimGpu
from tests.doubles.vendors import both_vendors


def failing(error: type[BaseException]):
    def call(*args, **kwargs):
        raise error("simulated failure of the binding")

    return call


# (vendor, the binding's function that fails, what it raises)
BROKEN = [
    ("nvml", "nvmlInit", RuntimeError),
    ("nvml", "nvmlDeviceGetCount", RuntimeError),
    ("nvml", "nvmlDeviceGetUUID", AttributeError),
    ("nvml", "nvmlDeviceGetTotalEnergyConsumption", RuntimeError),
    ("amdsmi", "amdsmi_init", OSError),
    ("amdsmi", "amdsmi_get_processor_handles", KeyError),
    ("amdsmi", "amdsmi_get_gpu_device_uuid", TypeError),
    ("amdsmi", "amdsmi_get_energy_count", OSError),
]


def break_binding(monkeypatch, sim, vendor: str, function: str, error: type[BaseException]) -> None:
    if vendor == "nvml":
        monkeypatch.setattr(pynvml, function, failing(error))
    else:
        monkeypatch.setattr(sim, function, failing(error))


@pytest.mark.parametrize(
    ("sim_gpus", "function", "error"), BROKEN, indirect=["sim_gpus"], ids=[f"{v}-{f}" for v, f, _ in BROKEN]
)
def test_a_binding_raising_anything_at_discovery_is_one_notice(sim_gpus, monkeypatch, function, error) -> None:
    sim = sim_gpus(SimGpu("GPU-a"))
    break_binding(monkeypatch, sim, sim_gpus.vendor, function, error)
    sources, notices = devices.discover(["gpu"], explicit=True)
    assert sources == []
    failed = [n for n in notices if error.__name__ in n.text]
    assert len(failed) == 1 and failed[0].level == "warn", notices
    assert "simulated failure of the binding" in failed[0].text
    assert notices[-1].text == "Nothing to measure among gpu: energy stays at zero."


@pytest.mark.parametrize(
    ("sim_gpus", "function", "error"),
    [b for b in BROKEN if "Energy" not in b[1] and "energy" not in b[1]],
    indirect=["sim_gpus"],
    ids=[f"{v}-{f}" for v, f, _ in BROKEN if "nergy" not in f],
)
def test_a_binding_raising_anything_for_power_limits_is_a_device_error(sim_gpus, monkeypatch, function, error) -> None:
    sim = sim_gpus(SimGpu("GPU-a"))
    break_binding(monkeypatch, sim, sim_gpus.vendor, function, error)
    with pytest.raises(DeviceError, match=f"{error.__name__}.*simulated failure of the binding"):
        devices.visible_boards()
    devices.board_by_uuid("GPU-a")  # recovery: a board, or None, never the binding's exception
    devices.drivers()  # the run record's header: whatever it can say, never an exception


@both_vendors
def test_a_board_whose_binding_raises_anything_is_a_device_error(sim_gpus, monkeypatch) -> None:
    sim = sim_gpus(SimGpu("GPU-a"))
    (board,) = devices.visible_boards()
    for function in ("nvmlDeviceSetPowerManagementLimit", "nvmlDeviceGetPowerManagementLimit",
                     "amdsmi_set_power_cap", "amdsmi_get_power_cap_info"):  # fmt: skip
        if function.startswith(sim_gpus.vendor):
            break_binding(monkeypatch, sim, sim_gpus.vendor, function, TypeError)
    with pytest.raises(DeviceError, match="TypeError: simulated failure"):
        board.set_limit_mw(300_000)
    with pytest.raises(DeviceError, match="TypeError: simulated failure"):
        board.limit_mw()


@both_vendors
def test_one_board_that_cannot_be_opened_is_skipped_and_the_others_measured(sim_gpus, monkeypatch) -> None:
    sim_gpus(SimGpu("GPU-a", raise_between=(0.0, 1e9, RuntimeError)), SimGpu("GPU-b"))
    sources, notices = devices.discover(["gpu"], explicit=True)
    assert [s.info.name for s in sources] == ["gpu1"]
    (skipped,) = [n for n in notices if "RuntimeError" in n.text]
    assert skipped.text.startswith("GPU 0 (GPU-a) cannot be read (RuntimeError: simulated failure")


@both_vendors
def test_a_discovery_that_never_returns_is_left_behind_after_the_bound(sim_gpus, monkeypatch) -> None:
    monkeypatch.setattr(deadline, "DRIVER_WAIT_S", 0.5)
    board = SimGpu("GPU-a", hang_after=0.0)
    sim_gpus(board)
    try:
        sources, notices = devices.discover(["gpu"], explicit=True)
        assert sources == []
        (hung,) = [n for n in notices if "did not return" in n.text]
        assert hung.level == "warn" and "within 0.5 s" in hung.text and "not measured" in hung.text
        again, notices = devices.discover(["gpu"], explicit=True)  # asked again while the first call hangs
        assert again == [] and any("still has not returned" in n.text for n in notices)
        assert [t.name for t in threading.enumerate()].count(deadline.THREAD_NAME) == 1  # not asked twice
    finally:
        board.release.set()
        for thread in threading.enumerate():
            if thread.name == deadline.THREAD_NAME:
                thread.join(10)


def test_what_waits_for_a_hung_call_runs_once_it_returns_and_may_call_the_driver(monkeypatch) -> None:
    """A call that outlives its wait: the library is not called again while it hangs; what waits for it
    (`when_returned`, a restore's limit to put back) runs on its thread once it returns, and may call the
    same library (it answers again); once nothing hangs, `when_returned` runs at once."""
    monkeypatch.setattr(deadline, "DRIVER_WAIT_S", 0.1)
    release, said = threading.Event(), []
    with pytest.raises(deadline.DriverHung, match="call to the X driver did not return within 0.1 s"):
        deadline.within_bound("X driver", lambda: release.wait(30))
    with pytest.raises(deadline.DriverHung, match="still has not returned"):
        deadline.within_bound("X driver", lambda: said.append("called while hung"))
    assert deadline.within_bound("Y driver", lambda: 5) == 5  # another library is asked as before
    answered = threading.Event()
    deadline.when_returned(
        "X driver", lambda: (said.append(deadline.within_bound("X driver", lambda: 3)), answered.set())
    )
    assert said == []
    release.set()
    assert answered.wait(10) and said == [3]
    deadline.when_returned("X driver", lambda: said.append("at once"))
    assert said == [3, "at once"]


def test_a_call_made_where_no_thread_can_start_is_made_on_the_callers(monkeypatch) -> None:
    """At interpreter shutdown (an atexit restore, Python 3.12+) no new thread starts: the call is made
    on the caller's thread, unbounded, rather than not at all."""

    def refuse(self) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    assert deadline.within_bound("X driver", lambda: threading.current_thread().name) == "MainThread"
