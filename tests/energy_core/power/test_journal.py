"""The power-limit journal trusts nothing another user could have written.

Everything here goes through the code a capped run uses (`PowerCapRun.start`,
`PowerLimits`, ``energy-report``); ownership is real (files chowned to another uid where
the tests run as root), never mocked.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

import pytest

from energy_core.power import JournalError, PowerCapError, PowerCapRun, PowerLimits, journal, journal_path
from energy_core.power.journal import JOURNAL_ENV, Journal, default_journal_dir
from energy_core.power.journal_entry import JournalEntry
from energy_core.report.cli import main as report_main
from tests.helpers.shared_machine import PREVIOUS_MW, journal_entries, limits_set

OTHER_UID = 4242  # any uid but ours: root can give files to it without an account
SECRET = "root's secret, 0600\n"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another uid needs root")


@pytest.fixture
def runs():
    """Start caps like a run does; every one is finished (limits restored) afterwards."""
    started: list[PowerCapRun] = []

    def start(**cap):
        run = PowerCapRun(**{"watts": 250, **cap})
        started.append(run)
        return run, run.start()

    yield start
    for run in started:
        run.finish()


@pytest.fixture
def victim(tmp_path) -> Path:
    """A root-only file an attacker would like root to overwrite."""
    path = tmp_path / "victim" / "shadow"
    path.parent.mkdir(mode=0o700)
    path.write_text(SECRET)
    path.chmod(0o600)
    return path


def test_default_location_is_per_user_and_private(monkeypatch, tmp_path) -> None:
    assert default_journal_dir(0) in (Path("/run/energy-callbacks"), Path("/var/lib/energy-callbacks"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_journal_dir(1000) == tmp_path / "state" / "energy-callbacks"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")  # the XDG spec: ignore a relative path
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_journal_dir(1000) == tmp_path / "home" / ".local" / "state" / "energy-callbacks"
    monkeypatch.delenv(JOURNAL_ENV)
    assert journal_path() == default_journal_dir() / "power-limits.json"


def test_a_new_journal_is_created_private(tmp_path, sim, runs) -> None:
    path = tmp_path / "state" / "energy-callbacks" / "power-limits.json"
    with Journal(path).entries() as entries:
        entries["GPU-1"] = JournalEntry.mine(PREVIOUS_MW, 250_000, token="t")
    assert path.parent.stat().st_mode & 0o777 == 0o700
    for name in ("power-limits.json", "power-limits.lock"):
        st = (path.parent / name).stat()
        assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["GPU-1"]["uid"] == os.geteuid()


@pytest.mark.parametrize(
    ("value", "message"), [("", "is set but empty"), ("  ", "is set but empty"), ("rel/j.json", "not an absolute")]
)
def test_a_bad_journal_variable_is_one_message_never_an_abort(monkeypatch, sim, runs, value, message) -> None:
    monkeypatch.setenv(JOURNAL_ENV, value)
    run, notices = runs()
    assert len(notices) == 1 and notices[0].level == "warn"
    assert message in notices[0].text and "Training continues uncapped" in notices[0].text
    assert run.cap_w is None and limits_set(sim) == [PREVIOUS_MW]
    with pytest.raises(PowerCapError, match=f"{message}.*strict=True: the run does not start uncapped"):
        runs(strict=True)
    assert limits_set(sim) == [PREVIOUS_MW]


def _unsafe(form: str, folder: Path, victim: Path) -> str:
    """Make the journal's directory unsafe in one way; the message expected."""
    folder.mkdir(mode=0o700)
    if form == "dir-symlink":
        real = folder.with_name("real")
        folder.rmdir()
        real.mkdir(mode=0o700)
        folder.symlink_to(real)
        return "is a symbolic link"
    if form in ("dir-world-writable", "dir-group-writable"):
        mode = 0o1777 if form == "dir-world-writable" else 0o770
        folder.chmod(mode)
        return f"is writable by group or others \\(mode {mode:04o}\\)"
    if form == "dir-other-owner":
        os.chown(folder, OTHER_UID, OTHER_UID)
        folder.chmod(0o755)  # as a first run of another user would leave it
        return f"is owned by uid {OTHER_UID}, not by this process's user"
    if form in ("lock-symlink", "tmp-symlink", "journal-symlink"):
        name = {"lock-symlink": "power-limits.lock", "tmp-symlink": "power-limits.tmp"}.get(form, "power-limits.json")
        (folder / name).symlink_to(victim)
        return f"{name} is a symbolic link"
    if form == "foreign-file":
        (folder / "planted").write_text("{}")
        os.chown(folder / "planted", OTHER_UID, OTHER_UID)
        return f"planted is owned by uid {OTHER_UID}"
    if form == "group-writable-journal":
        (folder / "power-limits.json").write_text("{}")
        (folder / "power-limits.json").chmod(0o664)
        return "power-limits.json is writable by group or others"
    if form == "fifo-lock":  # opening a FIFO could block for ever
        os.mkfifo(folder / "power-limits.lock", 0o600)
        return "power-limits.lock is not a regular file"
    if form == "journal-is-a-directory":
        (folder / "power-limits.json").mkdir()
        return "power-limits.json is a directory, not a file"
    assert form == "dir-is-a-file"
    folder.rmdir()
    folder.write_text("")
    return "is not a directory"


UNSAFE = [
    "dir-symlink",
    "dir-world-writable",
    "dir-group-writable",
    pytest.param("dir-other-owner", marks=as_root),
    "lock-symlink",
    "tmp-symlink",
    "journal-symlink",
    pytest.param("foreign-file", marks=as_root),
    "group-writable-journal",
    "fifo-lock",
    "journal-is-a-directory",
    "dir-is-a-file",
]


@pytest.mark.parametrize("form", UNSAFE)
def test_an_unsafe_journal_is_refused_with_one_message(tmp_path, monkeypatch, sim, runs, victim, form) -> None:
    folder = tmp_path / "shared" / "energy-callbacks"
    folder.parent.mkdir()
    victim.write_text(json.dumps({"GPU-1": {"previous_mw": 100_000, "set_mw": 350_000, "pid": 2**30, "host": "h"}}))
    victim.chmod(0o600)
    before = victim.read_text()
    message = _unsafe(form, folder, victim)
    monkeypatch.setenv(JOURNAL_ENV, str(folder / "power-limits.json"))

    run, notices = runs()
    assert len(notices) == 1 and notices[0].level == "warn", notices
    assert notices[0].text.startswith("Power cap not applied: ")
    assert re.search(message, notices[0].text), notices[0].text
    assert run.cap_w is None and limits_set(sim) == [PREVIOUS_MW]  # never touched
    with pytest.raises(PowerCapError, match=message):
        runs(strict=True)
    assert report_main(["--restore-power-limits"]) == 1
    assert victim.read_text() == before and victim.stat().st_mode & 0o777 == 0o600  # not truncated, not replaced
    assert limits_set(sim) == [PREVIOUS_MW]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[]", "holds a JSON list, not an object keyed by board UUID"),
        ('"GPU-1"', "holds a JSON str"),
        ("{", "is not valid JSON"),
        ("[" * 60_000, "is not valid JSON"),  # nesting that would blow the parser's stack
        (b"\xff\xfe{}", "is not valid JSON"),
        (json.dumps({f"GPU-{i}": {} for i in range(300)}), "holds 300 entries"),
        (json.dumps({f"GPU-{i}": {"pid": 999_999} for i in range(300_000)}), "is larger than 65536 bytes"),
    ],
)
def test_damaged_content_is_set_aside_and_the_cap_goes_on(sim, runs, content, problem) -> None:
    path = journal_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content if isinstance(content, bytes) else content.encode()
    path.write_bytes(data)
    run, notices = runs()
    (warning,) = [n.text for n in notices if n.level == "warn"]
    assert warning.startswith(f"The power-limit journal {path} {problem}")
    assert warning.endswith(": set aside as power-limits.damaged.")
    assert run.cap_w == 250.0 and journal_entries()["GPU-1"]["previous_mw"] == PREVIOUS_MW
    assert path.with_suffix(".damaged").read_bytes() == data  # kept for a human to look at
    assert len(path.read_bytes()) < 2000  # the planted bulk is gone from the journal
    run.finish()
    assert sim.limit_mw(sim.gpus[0]) == PREVIOUS_MW and journal_entries() == {}


def test_with_strict_a_damaged_journal_stops_the_run_before_any_change(sim, runs) -> None:
    path = journal_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[]")
    with pytest.raises(PowerCapError, match="holds a JSON list.*strict=True"):
        runs(strict=True)
    assert limits_set(sim) == [PREVIOUS_MW] and path.with_suffix(".damaged").read_text() == "[]"
    run, _ = runs(strict=True)  # set aside: the next strict run caps
    assert run.cap_w == 250.0


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"pid": "4242"}, "pid is not an integer (str)"),
        ({"pid": True}, "pid is not an integer (bool)"),
        ({"pid": 0}, "pid=0 is outside [1, 2147483647]"),
        ({"pid": -1}, "pid=-1 is outside"),
        ({"previous_mw": 1.5e5}, "previous_mw is not an integer (float)"),
        ({"set_mw": None}, "set_mw is not an integer"),
        ({"previous_mw": 10**9}, "previous_mw=1000000000 is outside"),
        ({"host": 7}, "host is not a printable string"),
        ({"host": "a\nb"}, "host is not a printable string"),
        ({"uid": OTHER_UID}, f"it names uid {OTHER_UID}, not this journal's user"),
        ({"start": "x"}, "start is not a non-negative integer"),
        ({"time": "now"}, "time is not a number"),
    ],
)
def test_invalid_entries_are_dropped_with_one_warning_each(sim, runs, entry, reason) -> None:
    good = {"previous_mw": 300_000, "set_mw": 250_000, "pid": 2**30, "host": "elsewhere"}
    path = journal_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"GPU-x": {**good, **entry}, "GPU-y": good}))
    run, notices = runs()
    (warning,) = [n.text for n in notices if n.level == "warn"]
    assert warning.startswith(f"Power-limit journal {path}: dropped the invalid entry 'GPU-x': {reason}")
    assert run.cap_w == 250.0
    assert set(journal_entries()) == {"GPU-y", "GPU-1"}  # another host's valid entry is kept


@pytest.mark.parametrize("key", ["", "GPU 1", "x" * 129, "GPU-\x00"])
def test_keys_that_are_not_uuids_are_dropped(key) -> None:
    entries, dropped, damaged = journal.parse_journal(json.dumps({key: {}}).encode(), os.geteuid())
    assert (
        entries == {}
        and damaged is None
        and dropped == [f"dropped the invalid entry {ascii(key)[:80]}: the key is not a board UUID"]
    )


def test_a_lock_held_too_long_is_an_error_not_a_hang(monkeypatch, sim) -> None:
    monkeypatch.setattr(journal, "LOCK_TIMEOUT_S", 0.2)
    path = journal_path()
    with Journal(path).entries():
        pass
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process holding it (a new open file: flock conflicts)
        with pytest.raises(JournalError, match="stayed locked by another process for 0.2 s"):
            PowerLimits().recover()
    finally:
        os.close(fd)
    assert PowerLimits().recover() == []
