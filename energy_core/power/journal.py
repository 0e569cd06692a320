"""The power-limit journal: limits changed and not yet restored, on disk, for recovery after a kill.

Where it lives (`journal_path`): ``$ENERGY_CALLBACKS_POWER_JOURNAL`` when set (an absolute
path; set but empty is an error, never a silent default); otherwise, for root, a 0700
directory where system daemons keep state (``/run/energy-callbacks``, emptied at boot
like the limits themselves; ``/var/lib/energy-callbacks`` where there is no ``/run``);
for other users ``$XDG_STATE_HOME/energy-callbacks`` or ``~/.local/state/energy-callbacks``.

Nothing another user could have written is trusted: the directory and every file in it
are checked before use (`open_private_dir`), the file is read only up to
`MAX_JOURNAL_BYTES`, and every entry is validated (`JournalEntry.parse`). Damaged content
(not JSON, not an object, too big) is set aside as ``<name>.damaged`` and invalid
entries are dropped; both are reported in `Journal.problems`, never raised. Every
read-modify-write holds an exclusive ``flock`` on ``<name>.lock`` (waiting at most
`LOCK_TIMEOUT_S`) and replaces the file in one ``rename``.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from energy_core.power.errors import JournalError
from energy_core.power.journal_entry import JournalEntry
from energy_core.power.private_dir import OpenDir, open_private_dir

JOURNAL_ENV = "ENERGY_CALLBACKS_POWER_JOURNAL"
JOURNAL_NAME = "power-limits.json"
MAX_JOURNAL_BYTES = 64 * 1024  # a few hundred boards; a planted giant file is not read
MAX_ENTRIES = 256
LOCK_TIMEOUT_S = 30.0
FIX = (
    f"Point ${JOURNAL_ENV} at a file in a directory that only you can write, or unset it to use "
    "the default (see docs/reliability.md)."
)
_HELD: set[tuple[str, int]] = set()  # (journal path, thread) of the transactions in progress here


def default_journal_dir(euid: int | None = None) -> Path:
    """The journal's directory when ``$ENERGY_CALLBACKS_POWER_JOURNAL`` is not set.

    Raises:
        JournalError: no home directory to keep a user's state in.
    """
    if (os.geteuid() if euid is None else euid) == 0:
        return Path("/run/energy-callbacks") if Path("/run").is_dir() else Path("/var/lib/energy-callbacks")
    state = os.environ.get("XDG_STATE_HOME", "")
    if state and os.path.isabs(state):
        return Path(state) / "energy-callbacks"
    try:
        return Path.home() / ".local" / "state" / "energy-callbacks"
    except RuntimeError as err:
        raise JournalError(f"no home directory for the power-limit journal ({err}). {FIX}") from None


def journal_path() -> Path:
    """Where the journal lives: ``$ENERGY_CALLBACKS_POWER_JOURNAL``, else the default.

    Raises:
        JournalError: the variable is set but empty or relative, or there is no home.
    """
    value = os.environ.get(JOURNAL_ENV)
    if value is None:
        return default_journal_dir() / JOURNAL_NAME
    if not value.strip():
        raise JournalError(f"${JOURNAL_ENV} is set but empty. {FIX}")
    path = Path(value)
    if not path.is_absolute():
        raise JournalError(f"${JOURNAL_ENV}={value!r} is not an absolute path. {FIX}")
    if path.suffix in (".lock", ".tmp", ".damaged"):
        raise JournalError(f"${JOURNAL_ENV}={value!r}: the suffix {path.suffix} is kept for the journal's own files")
    return path


def parse_journal(raw: bytes, uid: int) -> tuple[dict[str, JournalEntry], list[str], str | None]:
    """The valid entries of a journal's bytes, the entries dropped (one message each), and
    why the whole content is damaged (None when it is not).

    Examples:
        >>> parse_journal(b"[]", 0)[2]
        'holds a JSON list, not an object keyed by board UUID'
    """
    if len(raw) > MAX_JOURNAL_BYTES:
        return {}, [], f"is larger than {MAX_JOURNAL_BYTES} bytes"
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}, [], "is not valid JSON"
    if not isinstance(data, dict):
        return {}, [], f"holds a JSON {type(data).__name__}, not an object keyed by board UUID"
    if len(data) > MAX_ENTRIES:
        return {}, [], f"holds {len(data)} entries (at most {MAX_ENTRIES} are expected)"
    entries: dict[str, JournalEntry] = {}
    dropped = []
    for uuid, value in data.items():
        try:
            entries[uuid] = JournalEntry.parse(uuid, value, uid)
        except ValueError as err:
            dropped.append(f"dropped the invalid entry {ascii(uuid)[:80]}: {err}")
    return entries, dropped, None


class Journal:
    """Locked, checked access to the journal file.

    Args:
        path: The journal file; defaults to `journal_path` (resolved at each use).

    Attributes:
        problems: Messages about damaged content and dropped entries, until `take_problems`.

    Examples:
        >>> with Journal(Path("/tmp/ec-doc/power-limits.json")).entries() as entries:  # doctest: +SKIP
        ...     entries["GPU-1"] = JournalEntry.mine(350000, 250000, token="a1")
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self.problems: list[str] = []

    @property
    def path(self) -> Path:
        """The journal file. Raises JournalError (see `journal_path`)."""
        return self._path or journal_path()

    def in_use(self) -> bool:
        """Whether this thread is inside a transaction on this journal (a signal handler
        that interrupted it must not wait for the lock it holds)."""
        try:
            return (str(self.path), threading.get_ident()) in _HELD
        except JournalError:
            return False

    def take_problems(self) -> list[str]:
        """The problems seen since the last call."""
        problems, self.problems = self.problems, []
        return problems

    @contextmanager
    def entries(self) -> Iterator[dict[str, JournalEntry]]:
        """The journal's valid entries, locked against other processes; written back
        (only if changed) when the block ends without an exception.

        Raises:
            JournalError: the journal cannot be used safely (nothing was read or written).
        """
        path = self.path
        key = (str(path), threading.get_ident())
        if key in _HELD:
            raise JournalError(f"{path} is already in use by this thread")
        _HELD.add(key)  # from the start: a signal handler arriving now must not wait for this lock
        try:
            with self._locked(path) as (folder, entries, dirty):
                before = dict(entries)
                yield entries
                if dirty or entries != before:
                    text = json.dumps({uuid: entry.to_json() for uuid, entry in entries.items()}, indent=1)
                    folder.replace(path.name, text.encode())
        finally:
            _HELD.discard(key)

    @contextmanager
    def _locked(self, path: Path) -> Iterator[tuple[OpenDir, dict[str, JournalEntry], bool]]:
        """The checked directory, held locked, with the entries read and whether any was dropped."""
        try:
            folder = open_private_dir(path.parent)
        except JournalError as err:
            raise _unsafe(err) from None
        lock = -1
        try:
            try:
                lock = folder.open_lock(path.with_suffix(".lock").name)
            except JournalError as err:
                raise _unsafe(err) from None
            _lock(lock, path)
            try:
                entries, dirty = self._read(folder, path)
            except JournalError as err:
                raise _unsafe(err) from None
            yield folder, entries, dirty
        finally:
            if lock >= 0:
                os.close(lock)  # releases the flock
            folder.close()

    def _read(self, folder: OpenDir, path: Path) -> tuple[dict[str, JournalEntry], bool]:
        raw = folder.read(path.name, MAX_JOURNAL_BYTES)
        if raw is None:
            return {}, False
        entries, dropped, damaged = parse_journal(raw, folder.euid)
        if damaged:
            aside = path.with_suffix(".damaged")
            folder.set_aside(path.name, aside.name)
            self.problems.append(f"The power-limit journal {path} {damaged}: set aside as {aside.name}.")
            return {}, False
        self.problems += [f"Power-limit journal {path}: {message}." for message in dropped]
        return entries, bool(dropped)


def _unsafe(err: JournalError) -> JournalError:
    return JournalError(f"the power-limit journal is unsafe to use: {err}. {FIX}")


def _lock(fd: int, path: Path) -> None:
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise JournalError(f"{path} stayed locked by another process for {LOCK_TIMEOUT_S:g} s") from None
            time.sleep(0.01)
        except OSError as err:
            raise JournalError(f"cannot lock {path}: {err.strerror or err}") from None
