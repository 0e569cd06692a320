"""A driver that does not answer in time: what the bounded power-limit calls leave undone is done
once it answers, and signals during a change or a restore wait for it (a hostile review's findings,
each failing on the first version of the bounded calls).

The simulated driver's calls are slowed or held on an Event; every wait for an outcome polls the
board (`eventually`), so that the tests hold on a loaded machine.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import pynvml
import pytest

from energy_core import devices
from energy_core.accounting.ranks import Ranks
from energy_core.devices import deadline
from energy_core.power import PowerCapRun, PowerLimits
from tests.energy_core.power.test_changes_in_flight import driver_set, once
from tests.helpers.shared_machine import PREVIOUS_MW, journal_entries


def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("during", ["set", "read"])
def test_a_sigterm_during_the_end_s_restore_raises_nothing_and_restores(sim, monkeypatch, sigterm_seen, during) -> None:
    """SLURM's SIGTERM while the end's restore waits for the driver: the guard's restore ran inside it and
    let the board go, then the outer one removed it again (`ValueError` out of `finish`)."""
    run = PowerCapRun(watts=250)
    run.begin(Ranks())
    assert sim.limit_mw(sim.gpus[0]) == 250_000
    name = "nvmlDeviceSetPowerManagementLimit" if during == "set" else "nvmlDeviceGetPowerManagementLimit"
    real, sent = getattr(sim, name), []

    def slow(gpu, *mw):
        if not sent and (during == "read" or mw == (PREVIOUS_MW,)):
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.3)
        return real(gpu, *mw)

    monkeypatch.setattr(pynvml, name, slow)
    try:
        notices = [n.text for n in run.finish()]
    finally:
        if run.limits is not None:
            run.limits.guard.uninstall()
    assert "GPU 0: power limit restored to 350 W." in notices and sigterm_seen == [signal.SIGTERM]
    assert sim.limit_mw(sim.gpus[0]) == PREVIOUS_MW and journal_entries() == {}


def test_a_ctrl_c_and_a_sigterm_during_a_change_both_reach_their_handlers(sim, monkeypatch, sigterm_seen) -> None:
    """Both held while the change is in the driver: the Ctrl-C's replay raised, and the SIGTERM was never sent."""
    limits = PowerLimits()
    limits.apply(devices.visible_boards(), None, None)
    (capped,) = limits.capped

    def both() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)

    driver_set(sim, monkeypatch, once(both, 300_000), landed_first=True)
    try:
        with pytest.raises(KeyboardInterrupt):
            limits.set(capped, 300_000)
    finally:
        limits.guard.uninstall()
    assert sim.limit_mw(sim.gpus[0]) == PREVIOUS_MW and sigterm_seen == [signal.SIGTERM]


def test_a_ctrl_c_during_the_guard_s_restore_lets_the_sigterm_reach_the_handler_below(
    sim, monkeypatch, sigterm_seen
) -> None:
    """SLURM's SIGTERM reaches the guard; a Ctrl-C comes while its restore is in the driver. The Ctrl-C's
    `KeyboardInterrupt`, raised as the restore ended, skipped the handler the guard passes SIGTERM on to
    (Lightning's: its requeue was lost)."""
    limits = PowerLimits()
    limits.apply(devices.visible_boards(), 250, None)
    driver_set(sim, monkeypatch, once(lambda: os.kill(os.getpid(), signal.SIGINT), PREVIOUS_MW), landed_first=True)
    try:
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
    finally:
        limits.guard.uninstall()
    assert sim.limit_mw(sim.gpus[0]) == PREVIOUS_MW and sigterm_seen == [signal.SIGTERM]


def test_a_ctrl_c_while_signals_are_being_held_puts_every_handler_back(monkeypatch, sigterm_seen) -> None:
    """The hold swaps every handler for a placeholder, SIGHUP before SIGINT before SIGTERM: a Ctrl-C between
    two swaps raised out of the setup and left the ones swapped on the placeholder for good (a later SIGHUP
    then neither restored nor ended the process)."""
    from energy_core.power import exit_guard

    before = {signum: signal.getsignal(signum) for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)}
    real, swaps = signal.signal, []

    def interrupted(signum, handler):
        swaps.append(signum)
        if len(swaps) == 2:  # the second swap of the setup: as a Ctrl-C arriving between two
            raise KeyboardInterrupt
        return real(signum, handler)

    monkeypatch.setattr(signal, "signal", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with exit_guard.signals_held():
            pass
    monkeypatch.setattr(signal, "signal", real)
    assert {signum: signal.getsignal(signum) for signum in before} == before and exit_guard._holds == []


def test_one_board_that_hangs_leaves_the_others_limits_to_be_put_back(two_boards, monkeypatch) -> None:
    """A board fallen off the bus: its call does not return. The other board's calls are its own (they were
    refused as the same library's), so the end's restore puts its limit back at once."""
    sim = two_boards
    monkeypatch.setattr(deadline, "DRIVER_WAIT_S", 0.2)
    limits = PowerLimits()
    limits.apply(devices.visible_boards(), None, None)
    lost, healthy = limits.capped
    assert limits.set(healthy, 300_000) == 300_000  # a search rung on the healthy board
    release = threading.Event()
    real = sim.nvmlDeviceSetPowerManagementLimit

    def set_limit(gpu, mw: int) -> None:
        if gpu is sim.gpus[0]:
            release.wait(30)
        real(gpu, mw)

    monkeypatch.setattr(pynvml, "nvmlDeviceSetPowerManagementLimit", set_limit)
    try:
        with pytest.raises(deadline.DriverHung, match="GPU-1's power limit did not return"):
            limits.set(lost, 300_000)
        said = limits.restore()
        assert "GPU 1: power limit restored to 350 W." in said and sim.limit_mw(sim.gpus[1]) == PREVIOUS_MW
        assert list(journal_entries()) == ["GPU-1"] and limits.capped == [lost]
    finally:
        release.set()
        assert eventually(lambda: not limits.capped)  # the late change lands and is undone
        limits.guard.uninstall()
    assert [sim.limit_mw(g) for g in sim.gpus] == [PREVIOUS_MW, PREVIOUS_MW] and journal_entries() == {}


@pytest.mark.parametrize("slow", ["read", "set"])
def test_a_restore_whose_own_call_outlives_its_wait_is_finished_when_it_returns(sim, monkeypatch, slow) -> None:
    """The end's restore: its read, or its set, returns after the wait. Nothing followed it up: the cap stayed
    on (a read), or the board stayed listed, journalled and locked against other runs (a set)."""
    monkeypatch.setattr(deadline, "DRIVER_WAIT_S", 0.3)
    run = PowerCapRun(watts=250)
    run.begin(Ranks())
    name = "nvmlDeviceSetPowerManagementLimit" if slow == "set" else "nvmlDeviceGetPowerManagementLimit"
    real, done = getattr(sim, name), []

    def late(gpu, *mw):
        if not done and (slow == "read" or mw == (PREVIOUS_MW,)):
            done.append(1)
            time.sleep(1.0)
        return real(gpu, *mw)

    monkeypatch.setattr(pynvml, name, late)
    try:
        notices = [n.text for n in run.finish()]
        assert any("the power cap is still on" in n for n in notices), notices
        assert run.limits is not None
        limits = run.limits
        assert eventually(lambda: not limits.capped and journal_entries() == {})
        assert sim.limit_mw(sim.gpus[0]) == PREVIOUS_MW
        assert limits.restore() == ["GPU 0: power limit restored to 350 W."]  # said late, by the next call
    finally:
        if run.limits is not None:
            run.limits.guard.uninstall()


def test_a_late_change_is_undone_when_a_restore_s_read_hung_after_it(sim, monkeypatch) -> None:
    """A struggling driver: the search's change reads slowly, then its set hangs; a restore from another
    thread reads, and hangs too. The set lands first: putting the limit back was refused (the read still
    hung) and never tried again, so the late 300 W stayed on the board."""
    monkeypatch.setattr(deadline, "DRIVER_WAIT_S", 0.5)
    limits = PowerLimits()
    limits.apply(devices.visible_boards(), None, None)
    (capped,) = limits.capped
    set_release, read_release = threading.Event(), threading.Event()
    real_set, real_get = sim.nvmlDeviceSetPowerManagementLimit, sim.nvmlDeviceGetPowerManagementLimit
    reads: list[int] = []

    def get(gpu):
        reads.append(1)
        if len(reads) == 1:
            time.sleep(0.3)  # slow, within the wait
        elif len(reads) == 2:
            read_release.wait(30)  # the restore's read: the driver is wedged
        return real_get(gpu)

    def set_limit(gpu, mw: int) -> None:
        if mw == 300_000:
            set_release.wait(30)
        real_set(gpu, mw)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerManagementLimit", get)
    monkeypatch.setattr(pynvml, "nvmlDeviceSetPowerManagementLimit", set_limit)

    def train() -> None:
        try:
            limits.set(capped, 300_000)
        except deadline.DriverHung:
            pass

    trainer = threading.Thread(target=train)
    trainer.start()
    time.sleep(0.1)
    restorer = threading.Thread(target=limits.restore)
    restorer.start()
    try:
        restorer.join(20)
        trainer.join(20)
        assert not restorer.is_alive() and not trainer.is_alive()
    finally:
        set_release.set()  # the driver answers: the set lands first ...
        time.sleep(0.2)
        read_release.set()  # ... the read a moment later
        assert eventually(lambda: not limits.capped and sim.limit_mw(sim.gpus[0]) == PREVIOUS_MW)
        limits.guard.uninstall()
    assert journal_entries() == {}


def test_a_late_change_returning_during_a_slow_restore_is_not_taken_for_an_administrator_s(
    two_boards, monkeypatch
) -> None:
    """Board 1's change hangs; the end's restore holds the lock longer than one call's wait (board 0 answers
    slowly, within the wait); board 1's call returns meanwhile. Its follow-up went on without the lock, and
    the restore read the run's own late 300 W as an administrator's change: left on the board, let go,
    unjournalled. The follow-up now waits for the lock."""
    sim = two_boards
    monkeypatch.setattr(deadline, "DRIVER_WAIT_S", 0.5)
    limits = PowerLimits()
    limits.apply(devices.visible_boards(), None, None)
    _, late = limits.capped
    g0, g1 = sim.gpus
    real_set, real_get = sim.nvmlDeviceSetPowerManagementLimit, sim.nvmlDeviceGetPowerManagementLimit
    release, slow = threading.Event(), threading.Event()
    read_back_slowly: list[int] = []

    def set_limit(gpu, mw: int) -> None:
        if gpu is g1 and mw == 300_000:
            release.wait(30)
        if gpu is g0 and slow.is_set():
            time.sleep(0.4)
        real_set(gpu, mw)

    def get(gpu):
        if gpu is g0 and slow.is_set():
            time.sleep(0.4)
        if gpu is g1 and slow.is_set() and threading.current_thread().name == deadline.THREAD_NAME:
            if not read_back_slowly:  # the follow-up's read, from the returned call's thread
                read_back_slowly.append(1)
                time.sleep(0.45)
        return real_get(gpu)

    monkeypatch.setattr(pynvml, "nvmlDeviceSetPowerManagementLimit", set_limit)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerManagementLimit", get)
    with pytest.raises(deadline.DriverHung):
        limits.set(late, 300_000)
    slow.set()
    threading.Timer(0.05, release.set).start()  # the driver answers just after the restore began
    try:
        said = limits.restore()
        assert not any("someone changed it" in line for line in said), said
        assert eventually(lambda: not limits.capped and sim.limit_mw(g1) == PREVIOUS_MW)
    finally:
        release.set()
        limits.guard.uninstall()
    assert [sim.limit_mw(g) for g in sim.gpus] == [PREVIOUS_MW, PREVIOUS_MW] and journal_entries() == {}


def test_a_sigterm_during_the_first_cap_s_change_is_taken_after_it(sim, monkeypatch) -> None:
    """SIGTERM at its default action: the first cap's guard, installed inside the change's signal hold, took
    effect at once, not at the hold's end (only handlers set in Python were held), so its restore ran in the
    middle of the change (350 W put back before the 250 W landed, then again). Now it comes after the change,
    restores once, and takes the default action (here recorded, not taken)."""
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    killed: list[int] = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: killed.append(signum))  # the default action, recorded

    def to_the_main_thread() -> None:  # where it interrupts the wait for this call: its handler runs meanwhile
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
        time.sleep(0.3)

    driver_set(sim, monkeypatch, once(to_the_main_thread, 250_000), landed_first=False)
    limits, before = PowerLimits(), len(sim.gpus[0].limit_history)
    try:
        with pytest.raises(SystemExit):  # the guard's, where the default action did not end the process
            limits.apply(devices.visible_boards(), 250, None)
    finally:
        limits.guard.uninstall()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert killed == [signal.SIGTERM] and [mw for _, mw in sim.gpus[0].limit_history[before:]] == [250_000, PREVIOUS_MW]
    assert sim.limit_mw(sim.gpus[0]) == PREVIOUS_MW and journal_entries() == {} and limits.capped == []
