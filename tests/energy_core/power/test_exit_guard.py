"""The exit guard acts only in the process that installed it, and a signal that ends the process
ends it as the signal would have.

Forked DataLoader workers inherit the guard's handlers: on Ctrl-C (SIGINT to the whole
process group) each worker used to set the power limit itself, and SIGTERM ended the run
with status 1 instead of dying by the signal (143 in a shell).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from energy_core import devices
from energy_core.output.record import RunRecord
from energy_core.power import PowerLimits
from energy_core.power.exit_guard import ExitGuard
from tests.helpers import ROOT
from tests.helpers.records import read_record
from tests.helpers.shared_machine import PREVIOUS_MW, admin_limit, board, journal_entries

PATIENCE_S = 120.0


def capped_run(tmp_path: Path, workers: int) -> tuple[subprocess.Popen, Path]:
    """A capped Lightning run (its own process group, like a job in a terminal), once its cap is in force."""
    state = tmp_path / "driver.json"
    state.write_text(json.dumps({"GPU-child": PREVIOUS_MW}))
    command = [sys.executable, "-m", "tests.scripts.power_cap_child", str(state), "lightning", f"--workers={workers}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + PATIENCE_S
    while json.loads(state.read_text())["GPU-child"] != 250_000 or not workers_of(child.pid, workers):
        assert child.poll() is None, child.communicate()[0]
        assert time.monotonic() < deadline, "the run never capped its GPU and started its workers"
        time.sleep(0.05)
    return child, state


def workers_of(pid: int, count: int) -> bool:
    """Whether ``pid`` has ``count`` child processes (its DataLoader workers) yet."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return False
    return len(children) >= count


def who_set(state: Path) -> list[tuple[int, int]]:
    """(pid, mW) of every limit the simulated driver was asked to set."""
    log = Path(f"{state}.sets")
    return [tuple(map(int, line.split())) for line in log.read_text().splitlines()]  # type: ignore[misc]


@pytest.mark.slow  # 4 s each; one process's SIGTERM: test_sigterm_restores_then_ends_the_process_by_the_signal
@pytest.mark.timeout(240)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_a_signal_to_the_process_group_restores_once_from_the_process_that_capped(tmp_path, signum) -> None:
    child, state = capped_run(tmp_path, workers=2)
    os.killpg(child.pid, signum)  # what a terminal's Ctrl-C, or a scheduler's kill of the job, does
    output, _ = child.communicate(timeout=PATIENCE_S)
    assert who_set(state) == [(child.pid, 250_000), (child.pid, PREVIOUS_MW)], output  # no worker touched the limit
    assert json.loads(state.read_text())["GPU-child"] == PREVIOUS_MW and journal_entries() == {}, output
    if signum == signal.SIGTERM:
        assert child.returncode == -signal.SIGTERM, output  # died by the signal: 143 in a shell, as without a cap


@pytest.mark.timeout(240)
def test_sigterm_restores_then_ends_the_process_by_the_signal(tmp_path) -> None:
    child, state = capped_run(tmp_path, workers=0)
    child.send_signal(signal.SIGTERM)
    output, _ = child.communicate(timeout=PATIENCE_S)
    assert child.returncode == -signal.SIGTERM, output
    assert who_set(state) == [(child.pid, 250_000), (child.pid, PREVIOUS_MW)], output
    assert journal_entries() == {}


@pytest.fixture
def no_default_action(monkeypatch):
    """A signal taken again by its default action (the process would end) fails the test instead."""

    def killed(pid: int, signum: int) -> None:
        raise AssertionError(f"signal {signum} taken again by its default action: the process would end")

    monkeypatch.setattr(os, "kill", killed)


def test_guards_finished_out_of_order_pass_signals_on_and_leave_the_handlers_as_found(no_default_action) -> None:
    # Two caps in one process, the first finished first: the second guard put the first one's handler back,
    # with nothing left to pass the signal to, and a Ctrl-C then killed the process (status 130) instead of
    # raising KeyboardInterrupt.
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    restored: list[str] = []
    first, second = ExitGuard(lambda: restored.append("first")), ExitGuard(lambda: restored.append("second"))
    first.install()
    second.install()
    first.uninstall()
    handler = signal.getsignal(signal.SIGINT)
    assert callable(handler)
    with pytest.raises(KeyboardInterrupt):  # through both, as if no guard were left but the second
        handler(signal.SIGINT, None)
    assert restored[0] == "second"
    second.uninstall()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_forked_childs_exit_path_leaves_the_parents_cap_and_record_alone(sim_gpus, tmp_path) -> None:
    # A user's os.fork() in a capped run, the child leaving by sys.exit: the child's exit path (EnergyLoop's
    # __exit__, Lightning's on_exception) put the limit back under the parent still training, and wrote a
    # summary into the parent's run record. Only the process that capped, and began the run, does either.
    state = tmp_path / "driver.json"
    sim = sim_gpus(board(), state_file=state)
    admin_limit(sim)
    limits = PowerLimits()
    [capped] = limits.apply(devices.visible_boards(), 250, None)
    record = RunRecord(tmp_path / "run.jsonl")
    record.new_run()
    record.write("header")
    pid = os.fork()
    if pid == 0:  # the child: what its exit path does, then out at once (nothing of pytest's)
        try:
            limits.set(capped, 200_000)
            limits.restore()
            record.write("summary", status="exception: SystemExit")
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    assert json.loads(state.read_text())["GPU-1"] == 250_000 and "GPU-1" in journal_entries()
    assert [line["type"] for line in read_record(tmp_path / "run.jsonl")] == ["header"]
    assert limits.restore() == [f"GPU 0: power limit restored to {PREVIOUS_MW // 1000} W."]
    limits.guard.uninstall()
    assert json.loads(state.read_text())["GPU-1"] == PREVIOUS_MW


def test_a_guard_finished_off_the_main_thread_still_passes_signals_on(no_default_action) -> None:
    # EnergyLoop.close() from another thread: no handler can be set there, and the guard forgot the handlers
    # it had found while its own stayed in place, so a SIGTERM skipped the user's handler and ended the
    # process, and a Ctrl-C killed it (status 130) instead of raising KeyboardInterrupt.
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    got: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    guard = ExitGuard(lambda: None)
    try:
        guard.install()
        closer = threading.Thread(target=guard.uninstall)
        closer.start()
        closer.join()
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert got == [signal.SIGTERM]  # the user's handler, called
        with pytest.raises(KeyboardInterrupt):
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        guard.install()  # again, from the main thread: its handler is not its own previous one
        with pytest.raises(KeyboardInterrupt):
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        guard.uninstall()
        assert signal.getsignal(signal.SIGINT) is before[0]
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


def test_a_cap_set_off_the_main_thread_says_that_a_signal_will_not_put_it_back(sim) -> None:
    # Training on a worker thread: no signal handler can be set there, and a SIGTERM left the cap on the
    # board with nothing said; the documentation promised a restore on SIGTERM.
    limits = PowerLimits()
    worker = threading.Thread(target=limits.apply, args=(devices.visible_boards(), 250, None))
    worker.start()
    worker.join()
    try:
        assert sim.limit_mw(sim.gpus[0]) == 250_000
        said = [m for m in limits.take_messages() if "thread other than the main one" in m]
        assert len(said) == 1 and "SIGTERM" in said[0] and "--restore-power-limits" in said[0]
    finally:
        limits.restore()
        limits.guard.uninstall()
    assert sim.limit_mw(sim.gpus[0]) == PREVIOUS_MW


def test_a_guard_installed_again_under_another_makes_no_loop(no_default_action) -> None:
    # A installed, B over it, A finished (it stays in B's chain), then A installed again: A took B for the
    # handler it found while B passed the signal on to A, and a SIGTERM bounced between them (RecursionError),
    # the user's handler never called.
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    got: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    restored: list[str] = []
    first, second = ExitGuard(lambda: restored.append("first")), ExitGuard(lambda: restored.append("second"))
    try:
        first.install()
        second.install()
        first.uninstall()
        first.install()
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert sorted(restored) == ["first", "second"] and got == [signal.SIGTERM]
        second.uninstall()
        first.uninstall()
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


@pytest.mark.parametrize("again", [True, False], ids=["putting-handlers-back", "sending-signals"])
def test_every_item_is_done_once_whatever_one_raises_and_none_for_ever(again) -> None:
    """`signals_held` puts handlers back and sends held signals whatever a handler raises meanwhile; an item
    that raises each time is tried a bounded number of times (putting back may be done again), not for ever."""
    from energy_core.power.exit_guard import AGAIN_TRIES, _all_done

    done: list[str] = []

    def act(item: str) -> None:
        done.append(item)
        if item == "b":
            raise ValueError("fails each time")

    error = _all_done(["a", "b", "c"], act, again=again)
    assert isinstance(error, ValueError) and done == ["a", *["b"] * (AGAIN_TRIES if again else 1), "c"]
