"""Power limits on a shared machine: another local user attacks a root run; two runs share a GPU.

The attacker is a real second uid (`tests.scripts.other_user`, created with ``useradd``
when missing) working in a sticky 1777 directory that stands in for ``/var/tmp``, where
the journal used to live. The root run points ``$ENERGY_CALLBACKS_POWER_JOURNAL`` there.
Skipped, with the reason, where the tests do not run as root or no user can be made.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from energy_core.power import PowerCapError, PowerCapRun
from energy_core.power.board_lock import lock_name
from energy_core.report.cli import main as report_main
from tests.helpers.shared_machine import (
    DEADLINE_S,
    PREVIOUS_MW,
    admin_limit,
    attacker,
    board,
    cap_runner,
    child_env,
    driver_state,
    journal_entries,
    limit_of,
    limits_set,
    read_json,
    wait_for,
)
from tests.scripts.other_user import ensure_user

SECRET = "root's secret, 0600\n"


@pytest.fixture(scope="module")
def other_user() -> tuple[int, int]:
    found = ensure_user()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture
def sticky():
    """A sticky world-writable directory, like /var/tmp (not under pytest's 0700 tree)."""
    path = Path(tempfile.mkdtemp(prefix="ec-sticky-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def victims(tmp_path) -> list[Path]:
    """Root-only files the attacker would like root to overwrite."""
    folder = tmp_path / "root-only"
    folder.mkdir(mode=0o700)
    paths = [folder / "shadow", folder / "authorized_keys"]
    for path in paths:
        path.write_text(SECRET)
        path.chmod(0o600)
    return paths


def _plant(kind: str, folder: Path, victims: list[Path]) -> list[list]:
    journal = str(folder / "power-limits.json")
    entry = {"previous_mw": 100_000, "pid": 999_999, "host": os.uname().nodename, "set_mw": PREVIOUS_MW}
    return {
        "S1-lock-link": [["symlink", str(victims[0]), str(folder / "power-limits.lock")]],
        "S2-tmp-link": [["symlink", str(victims[1]), str(folder / "power-limits.tmp")]],
        "S4-entry": [["write", journal, json.dumps({"GPU-1": entry})]],
        "S4d-list": [["write", journal, "[]"]],
        "S4d-300k-entries": [["bulk", journal, 300_000]],
    }[kind]


@pytest.mark.parametrize("kind", ["S1-lock-link", "S2-tmp-link", "S4-entry", "S4d-list", "S4d-300k-entries"])
@pytest.mark.parametrize("mode", [0o755, 0o777], ids=["0755", "0777"])
def test_a_directory_another_user_prepared_is_refused(
    other_user, sticky, victims, sim_gpus, monkeypatch, capsys, kind, mode
) -> None:
    sim = sim_gpus(board())
    admin_limit(sim)
    folder = sticky / "energy-callbacks"
    lines = attacker(other_user, ["mkdir", str(folder), mode], *_plant(kind, folder, victims))
    assert all(line.startswith("ok ") for line in lines), lines
    monkeypatch.setenv("ENERGY_CALLBACKS_POWER_JOURNAL", str(folder / "power-limits.json"))

    run = PowerCapRun(watts=250)
    notices = run.start()  # as root
    run.finish()
    assert len(notices) == 1 and f"is owned by uid {other_user[0]}" in notices[0].text, notices
    assert "Training continues uncapped" in notices[0].text
    with pytest.raises(PowerCapError, match=f"owned by uid {other_user[0]}"):
        PowerCapRun(watts=250, strict=True).start()
    assert report_main(["--restore-power-limits"]) == 1
    assert f"owned by uid {other_user[0]}" in capsys.readouterr().err
    assert limits_set(sim) == [PREVIOUS_MW]  # never set: not to 100 W, not to anything
    for victim in victims:
        assert victim.read_text() == SECRET and victim.stat().st_uid == 0  # neither truncated nor replaced


def test_a_journal_root_made_is_closed_to_other_users_and_recovers(other_user, sticky, monkeypatch, capsys) -> None:
    """S4/S5: root makes the directory first (0700); the other user can neither plant an
    entry nor swap the journal for {}, and after a SIGKILL recovery finds root's entry."""
    folder = sticky / "energy-callbacks"
    monkeypatch.setenv("ENERGY_CALLBACKS_POWER_JOURNAL", str(folder / "power-limits.json"))
    state = driver_state(sticky / "driver.json")
    status = sticky / "root-status.json"
    child = cap_runner(state, status)
    wait_for(lambda: limit_of(state) == 250_000 and (read_json(status) or {}).get("steps"), "the root run's cap", child)
    assert folder.stat().st_mode & 0o777 == 0o700 and folder.stat().st_uid == 0
    planted = json.dumps({"GPU-child": {"previous_mw": 100_000, "set_mw": 250_000, "pid": 1, "host": "h"}})
    lines = attacker(
        other_user,
        ["write", str(folder / "power-limits.json"), planted],
        ["swap", str(folder / "power-limits.json"), "{}", str(sticky / "stop")],
        ["symlink", "/etc/shadow", str(folder / "power-limits.tmp")],
    )
    assert all(line.startswith("refused ") and "PermissionError" in line for line in lines), lines
    child.kill()  # SIGKILL: only the journal can help now
    child.communicate(timeout=DEADLINE_S)
    assert limit_of(state) == 250_000 and journal_entries()["GPU-child"]["previous_mw"] == PREVIOUS_MW

    from tests.doubles.sim_nvml import SimGpu, SimNvml, install

    install(monkeypatch, SimNvml([SimGpu("GPU-child", min_limit_mw=100_000, max_limit_mw=450_000)], state_file=state))
    assert report_main(["--restore-power-limits"]) == 0
    assert "Restored the power limit of GPU-child to 350 W" in capsys.readouterr().out
    assert limit_of(state) == PREVIOUS_MW and journal_entries() == {}


def _user_env(other_user, sticky: Path, journal: str | None) -> dict[str, str]:
    home = sticky / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    os.chown(home, *other_user)
    env = child_env(HOME=str(home))
    env.pop("XDG_STATE_HOME", None)
    env.pop("ENERGY_CALLBACKS_POWER_JOURNAL")
    if journal is not None:
        env["ENERGY_CALLBACKS_POWER_JOURNAL"] = journal
    return env


@pytest.mark.slow  # about 9 s of a second user's training process
@pytest.mark.timeout(300)
def test_another_user_run_with_a_journal_root_left_unwritable_trains_on(other_user, sticky) -> None:
    """Item 5: a first root run left the shared journal directory 0755; a later user
    without permission gets one message and trains; strict refuses before the fit."""
    shared = sticky / "energy-callbacks"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    (shared / "power-limits.lock").write_text("")
    (shared / "power-limits.json").write_text("{}")
    state = driver_state(sticky / "driver.json")
    env = _user_env(other_user, sticky, str(shared / "power-limits.json"))
    user = f"{other_user[0]}:{other_user[1]}"
    for strict in (False, True):
        status = sticky / "home" / f"status-{strict}.json"
        options = ["--as", user, "--no-permission", "--steps", "5", *(["--strict"] if strict else [])]
        child = cap_runner(state, status, *options, env=env)
        output, _ = child.communicate(timeout=DEADLINE_S)
        seen = read_json(status)
        assert seen is not None, output
        assert len(seen["notices"]) == (0 if strict else 1), seen
        if strict:
            assert child.returncode == 3 and seen["error"] == "PowerCapError" and seen["steps"] == 0, output
            assert "is owned by uid 0" in seen["message"]
        else:
            assert child.returncode == 0 and seen["finished"] and seen["steps"] == 5, output
            assert "is owned by uid 0" in seen["notices"][0] and "Training continues uncapped" in seen["notices"][0]
    assert limit_of(state) == PREVIOUS_MW and (shared / "power-limits.json").read_text() == "{}"


@pytest.mark.slow  # about 5 s of a second user's process
@pytest.mark.timeout(300)
def test_another_user_default_journal_is_their_own(other_user, sticky) -> None:
    state = driver_state(sticky / "driver.json")
    env = _user_env(other_user, sticky, None)
    status = sticky / "home" / "status.json"
    user = f"{other_user[0]}:{other_user[1]}"
    child = cap_runner(state, status, "--as", user, "--no-permission", "--steps", "5", env=env)
    output, _ = child.communicate(timeout=DEADLINE_S)
    seen = read_json(status)
    assert child.returncode == 0 and seen["steps"] == 5, output
    (notice,) = seen["notices"]
    assert "needs root or CAP_SYS_ADMIN" in notice and "Training continues uncapped" in notice
    folder = sticky / "home" / ".local" / "state" / "energy-callbacks"
    assert folder.stat().st_uid == other_user[0] and folder.stat().st_mode & 0o777 == 0o700
    assert not (folder / "power-limits.json").exists() or json.loads((folder / "power-limits.json").read_text()) == {}


@pytest.mark.timeout(400)
@pytest.mark.slow  # 9 s each; the board lock's rules run by default, in process (test_board_lock.py)
@pytest.mark.parametrize("first_to_end", ["first", "second"])
def test_two_processes_capping_one_gpu_leave_the_administrator_limit(sticky, first_to_end) -> None:
    state = driver_state(sticky / "driver.json")
    runs = {}
    for name, watts in (("first", "250"), ("second", "300")):
        status, stop = sticky / f"{name}.json", sticky / f"stop-{name}"
        child = cap_runner(state, status, "--watts", watts, "--stop", str(stop))
        runs[name] = (child, status, stop)
        wait_for(lambda status=status: (read_json(status) or {}).get("steps"), f"the {name} run's first step", child)
    first, second = read_json(runs["first"][1]), read_json(runs["second"][1])
    assert first["cap_w"] == 250.0 and second["cap_w"] is None
    (busy,) = second["notices"]
    assert busy.startswith(
        f"Already capped by another run on this host: GPU 0 (GPU-child) at 250 W by pid {first['pid']}"
    )
    assert limit_of(state) == 250_000
    then = "second" if first_to_end == "first" else "first"
    for name, limit_after in ((first_to_end, PREVIOUS_MW if first_to_end == "first" else 250_000), (then, PREVIOUS_MW)):
        child, status, stop = runs[name]
        stop.touch()
        output, _ = child.communicate(timeout=DEADLINE_S)
        assert child.returncode == 0 and read_json(status)["finished"], output
        assert limit_of(state) == limit_after, output
    assert journal_entries() == {}


@pytest.mark.slow  # about 5 s of child processes
@pytest.mark.timeout(200)
def test_a_run_that_ignores_sighup_keeps_its_cap(sticky) -> None:
    """Under nohup SIGHUP is ignored: the run goes on, and so must its cap."""
    state = driver_state(sticky / "driver.json")
    status, stop = sticky / "status.json", sticky / "stop"
    child = cap_runner(state, status, "--stop", str(stop), ignore_sighup=True)
    wait_for(lambda: limit_of(state) == 250_000 and (read_json(status) or {}).get("steps"), "the cap", child)
    child.send_signal(signal.SIGHUP)
    steps = read_json(status)["steps"]
    wait_for(lambda: read_json(status)["steps"] >= steps + 10, "ten more steps after SIGHUP", child)
    assert limit_of(state) == 250_000  # still capped while it trains
    stop.touch()
    output, _ = child.communicate(timeout=DEADLINE_S)
    assert child.returncode == 0 and limit_of(state) == PREVIOUS_MW, output


@pytest.mark.timeout(400)
@pytest.mark.slow  # 9 s each: two child processes of two users; the lock's rules run by default (test_board_lock.py)
@pytest.mark.parametrize("first_to_end", ["user", "root"])
def test_two_users_capping_one_gpu_leave_the_administrator_limit(other_user, sticky, monkeypatch, first_to_end) -> None:
    """Issue 25, item 2: a user with CAP_SYS_ADMIN caps the board at 250 W (its journal in its
    home), then root asks for 200 W (root's journal). Root used to take 250 W for the limit
    before its cap: when the user ended first, the board went back to 350 W while root still
    reported a 200 W cap, and when root ended, the board stayed at 250 W for good. The board
    is held across users now: root leaves it to the user's cap and says so."""
    monkeypatch.setenv("ENERGY_CALLBACKS_BOARD_LOCKS", str(sticky))  # shared by every user, sticky, like /dev/shm
    driver = sticky / "driver"
    driver.mkdir()
    driver.chmod(0o777)  # the simulated driver's limits, which both processes may set
    state = driver_state(driver / "driver.json")
    state.chmod(0o666)
    uid, gid = other_user
    home = sticky / "home"
    env = _user_env(other_user, sticky, None)  # the user's own journal, in its home
    runs = {
        "user": (home / "user.json", home / "stop-user", ["--as", f"{uid}:{gid}", "--cap-sys-admin", "--watts", "250"]),
        "root": (sticky / "root.json", sticky / "stop-root", ["--watts", "200"]),
    }
    children = {}
    for name, (status, stop, options) in runs.items():
        children[name] = cap_runner(state, status, *options, "--stop", str(stop), env=env if name == "user" else None)
        wait_for(
            lambda status=status: (read_json(status) or {}).get("steps", 0) >= 5, f"{name}'s steps", children[name]
        )
    user, root = read_json(runs["user"][0]), read_json(runs["root"][0])
    assert user["uid"] == uid and user["cap_w"] == 250.0 and limit_of(state) == 250_000
    (busy,) = root["notices"]
    assert busy.startswith(
        f"Already capped by another run on this host: GPU 0 (GPU-child) at 250 W by pid {user['pid']} (uid {uid})."
    )
    assert root["cap_w"] is None  # what root reports is what the board carries: the user's cap, not root's
    then = "root" if first_to_end == "user" else "user"
    for name, board_after in ((first_to_end, 250_000 if first_to_end == "root" else PREVIOUS_MW), (then, PREVIOUS_MW)):
        status, stop, _ = runs[name]
        stop.touch()
        output, _ = children[name].communicate(timeout=DEADLINE_S)
        assert children[name].returncode == 0 and read_json(status)["finished"], output
        assert limit_of(state) == board_after, output
    assert journal_entries() == {}


def test_a_lock_held_by_a_user_who_cannot_set_limits_keeps_no_run_from_its_cap(
    other_user, sticky, sim_gpus, monkeypatch
) -> None:
    """Any user can lock a file they can read: a holder that could not set a power limit is
    not a run, and does not keep root's run from capping (one message names it)."""
    sim = sim_gpus(board())
    admin_limit(sim)
    monkeypatch.setenv("ENERGY_CALLBACKS_BOARD_LOCKS", str(sticky))
    stop = sticky / "stop-holding"
    holder = attacker(other_user, ["hold", str(sticky / lock_name("GPU-1")), str(stop)], wait=False)
    assert isinstance(holder, subprocess.Popen)
    try:
        assert holder.stdout.readline().startswith("ok hold"), holder.communicate()[0]
        run = PowerCapRun(watts=250)
        notices = [n.text for n in run.start()]
        said = f"is locked by pid {holder.pid} of uid {other_user[0]}, which cannot set power limits"
        assert len([n for n in notices if said in n]) == 1, notices
        assert run.cap_w == 250.0 and sim.limit_mw(sim.gpus[0]) == 250_000
        run.finish()
    finally:
        stop.touch()
        holder.communicate(timeout=DEADLINE_S)
    assert limits_set(sim) == [PREVIOUS_MW, 250_000, PREVIOUS_MW] and journal_entries() == {}
