"""Board locks: one process holds a board across users, the kernel ends a hold with its process,
and nothing planted in the shared directory is followed, blocks, or keeps a run from its cap.

In one process (root's view of a shared directory); the runs of a real second user are
in test_shared_machine.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from energy_core.power import PowerCapRun, PowerLimits, board_lock
from energy_core.power.board_lock import BoardLock, Holder, UnusableLock, lock_name
from tests.helpers import ROOT
from tests.helpers.shared_machine import PREVIOUS_MW, journal_entries, limits_set, plant


@pytest.fixture
def shared(tmp_path, monkeypatch):
    """A sticky world-writable directory, as /dev/shm."""
    folder = tmp_path / "shm"
    folder.mkdir()
    folder.chmod(0o1777)
    monkeypatch.setenv(board_lock.LOCKS_ENV, str(folder))
    return folder


def test_a_board_is_held_by_one_open_file_at_a_time(shared) -> None:
    first = board_lock.take("GPU-1")
    assert isinstance(first, BoardLock)
    assert board_lock.take("GPU-1") == Holder(os.getpid(), os.geteuid())  # another hold, even in this process
    assert isinstance(board_lock.take("GPU-2"), BoardLock)  # other boards are free
    first.release()
    first.release()  # idempotent
    again = board_lock.take("GPU-1")
    assert isinstance(again, BoardLock)
    again.release()
    assert (shared / lock_name("GPU-1")).stat().st_mode & 0o777 == 0o444  # every user can open it to lock


def test_a_hold_ends_with_its_process_however_it_ends(shared) -> None:
    script = "import time; from energy_core.power import board_lock as b; b.take('GPU-1'); print(1, flush=True); "
    script += "time.sleep(600)"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert child.stdout.readline() == "1\n"
    assert board_lock.take("GPU-1") == Holder(child.pid, os.geteuid())
    child.send_signal(signal.SIGKILL)
    child.wait()
    held = board_lock.take("GPU-1")  # no stale hold after a SIGKILL: the kernel dropped the lock
    assert isinstance(held, BoardLock)
    held.release()


def test_a_process_forked_from_the_holder_neither_lets_the_hold_go_nor_keeps_it(shared) -> None:
    # A forked child (a DataLoader worker, a user's os.fork) shares the lock's open file: its release (a
    # capped run's exit path, run in the child) dropped the parent's hold, and a child that outlived a killed
    # parent kept the board held by a dead pid, so no later run could recover or cap it.
    script = "import os, time; from energy_core.power import board_lock as b; held = b.take('GPU-1')\n"
    script += "if os.fork() == 0:\n    held.release(); print('released', flush=True); time.sleep(600)\n"
    script += "time.sleep(600)"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)  # fmt: skip
    try:
        assert child.stdout.readline() == "released\n"
        assert board_lock.take("GPU-1") == Holder(child.pid, os.geteuid())  # still the parent's
        child.send_signal(signal.SIGKILL)
        child.wait()
        held = board_lock.take("GPU-1")  # the forked child, alive, does not keep the dead parent's hold
        assert isinstance(held, BoardLock)
        held.release()
    finally:
        os.killpg(child.pid, signal.SIGKILL)


@pytest.mark.parametrize("plant", ["symlink", "fifo", "hardlink", "directory"])
def test_whatever_is_planted_at_a_lock_name_is_refused_never_followed_or_waited_on(shared, tmp_path, plant) -> None:
    victim = tmp_path / "victim"
    victim.write_text("secret")
    path = shared / lock_name("GPU-1")
    {"symlink": lambda: path.symlink_to(victim), "fifo": lambda: os.mkfifo(path),
     "hardlink": lambda: os.link(victim, path), "directory": path.mkdir}[plant]()  # fmt: skip
    with pytest.raises(UnusableLock, match=str(path)):
        board_lock.take("GPU-1")
    assert victim.read_text() == "secret"


@pytest.mark.parametrize(("mode", "owner", "why"), [(0o777, 0, "writable by others and not sticky"),
                                                    (0o1777, 4242, "is owned by uid 4242")])  # fmt: skip
def test_a_directory_others_could_change_is_refused(shared, mode, owner, why) -> None:
    if os.geteuid() != 0 and owner != os.geteuid():
        pytest.skip("only root can give a directory to another user")
    shared.chmod(mode)
    os.chown(shared, owner, -1)
    with pytest.raises(UnusableLock, match=why):
        board_lock.take("GPU-1")


def test_a_board_without_a_usable_lock_is_still_capped_with_one_message(shared, sim) -> None:
    (shared / lock_name("GPU-1")).symlink_to("/etc/passwd")
    run = PowerCapRun(watts=250)
    notices = [n.text for n in run.start()]
    assert any("are not held against other users' runs here" in n and "symbolic link" in n for n in notices), notices
    assert sim.limit_mw(sim.gpus[0]) == 250_000 and run.cap_w == 250.0
    run.finish()
    assert limits_set(sim) == [PREVIOUS_MW, 250_000, PREVIOUS_MW] and journal_entries() == {}


def test_a_board_held_elsewhere_is_not_capped_and_recovery_waits_for_it(shared, sim) -> None:
    """A held board is another run's, even without an entry in this user's journal (another
    user's run); a killed run's entry for it is kept until that run lets it go."""
    other = board_lock.take("GPU-1")  # another user's run holding the board at its 250 W cap
    sim._store_limit(sim.gpus[0], 250_000)
    gone = {"previous_mw": PREVIOUS_MW, "set_mw": 250_000, "pid": 2**30 + 7, "host": os.uname().nodename}
    plant(**{"GPU-1": gone})  # and a run of this user that was killed with the same cap before
    run = PowerCapRun(watts=200)
    notices = [n.text for n in run.start()]
    assert (
        f"GPU-1: held by pid {os.getpid()}; the limit pid {2**30 + 7} left is recovered once that run has ended."
        in notices
    )
    assert notices[-1].startswith(
        f"Already capped by another run on this host: GPU 0 (GPU-1) at 250 W by pid {os.getpid()}."
    )
    assert run.cap_w is None and sim.limit_mw(sim.gpus[0]) == 250_000 and "GPU-1" in journal_entries()
    run.finish()
    assert isinstance(other, BoardLock)
    other.release()  # that run ends (its own restore is its business); recovery may now judge the entry
    assert "Restored the power limit of GPU-1 to 350 W" in PowerLimits().recover()[0]
    assert sim.limit_mw(sim.gpus[0]) == PREVIOUS_MW and journal_entries() == {}


def test_a_limit_changed_under_a_run_is_left_as_it_is(sim) -> None:
    run = PowerCapRun(watts=250)
    run.start()
    sim.set_limit_mw(sim.gpus[0], 280_000)  # an administrator, mid-run
    notices = run.finish()
    assert [(n.level, n.text) for n in notices] == [
        (
            "warn",
            "GPU 0: the power limit is 280 W, not the 250 W this run set: someone changed it since; left as it is.",
        )
    ]
    assert sim.limit_mw(sim.gpus[0]) == 280_000 and journal_entries() == {}
    again = PowerCapRun(watts=250)  # the board is free again
    assert again.start()[-1].text.startswith("Power cap in force") and again.finish()
