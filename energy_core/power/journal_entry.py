"""JournalEntry: one board's line in the power-limit journal, checked field by field before use.

The journal is JSON keyed by board UUID; each entry says the limit in force before the
first cap (``previous_mw``), the limit set (``set_mw``), the limit the board carried
before that change (``from_mw``: a kill between the journal and the driver leaves that one
on the board), and the process that set it:
``pid``, ``host``, ``uid``, and ``start`` (the process's start time in clock ticks since
boot, so that a reused pid is not taken for the process that wrote the entry), plus a
``token`` naming the `PowerLimits` object within that process and a ``version``.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

VERSION = 2
MAX_MW = 10_000_000  # 10 kW: no board's limit comes near; anything above is not a limit
MAX_PID = 2**31 - 1


def this_host() -> str:
    """The host name entries are tied to (limits belong to this machine's boards)."""
    return socket.gethostname()


def process_start(pid: int) -> int | None:
    """A process's start time (clock ticks since boot, from ``/proc``), or None where
    it cannot be read (not Linux, no such process)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
        if fields[0] == b"Z":
            return -1  # a zombie: ended, not yet reaped
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _int(raw: dict[str, Any], key: str, low: int, high: int) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key} is not an integer ({type(value).__name__})")
    if not low <= value <= high:
        raise ValueError(f"{key}={value} is outside [{low}, {high}]")
    return value


def _text(raw: dict[str, Any], key: str, most: int, required: bool) -> str:
    value = raw.get(key, None if required else "")
    if not isinstance(value, str) or (required and not value) or len(value) > most or not value.isprintable():
        raise ValueError(f"{key} is not a printable string of 1 to {most} characters")
    return value


def check_uuid(uuid: Any) -> str:
    """A board UUID as a journal key: a printable string without spaces, at most 128 characters.

    Raises:
        ValueError: anything else.
    """
    if not isinstance(uuid, str) or not 0 < len(uuid) <= 128 or not uuid.isprintable() or " " in uuid:
        raise ValueError("the key is not a board UUID")
    return uuid


@dataclass(frozen=True)
class JournalEntry:
    """One board's change, as journalled before the limit is set.

    Args:
        previous_mw: The limit before the first cap, restored at the end.
        set_mw: The limit set.
        pid, host, uid: The process that set it.
        start: That process's start time (`process_start`), None where unknown.
        token: Which `PowerLimits` object of that process owns the board.
        time: When it was written (seconds since the epoch).
        from_mw: The limit the board carried before the change to ``set_mw`` (None in
            entries written before the field existed).

    Examples:
        >>> entry = JournalEntry.parse("GPU-1", {"previous_mw": 350000, "set_mw": 250000, "pid": 7,
        ...                                      "host": "h", "uid": 0}, uid=0)
        >>> entry.previous_mw, entry.token
        (350000, '')
    """

    previous_mw: int
    set_mw: int
    pid: int
    host: str
    uid: int
    start: int | None = None
    token: str = ""
    time: float = 0.0
    from_mw: int | None = None

    @classmethod
    def parse(cls, uuid: Any, raw: Any, uid: int) -> JournalEntry:
        """Check one entry read from the journal of user ``uid``.

        An entry without ``uid`` (written before the field existed) counts as written by
        ``uid``, the journal file's owner: only that user (or root) could have written it.

        Raises:
            ValueError: the reason it cannot be trusted.
        """
        check_uuid(uuid)
        if not isinstance(raw, dict):
            raise ValueError(f"the entry is a JSON {type(raw).__name__}, not an object")
        written_by = raw.get("uid", uid)
        if written_by != uid:
            raise ValueError(f"it names uid {written_by!r}, not this journal's user (uid {uid})")
        start = raw.get("start")
        if start is not None and (not isinstance(start, int) or isinstance(start, bool) or start < 0):
            raise ValueError("start is not a non-negative integer")
        stamp = raw.get("time", 0.0)
        if not isinstance(stamp, (int, float)) or isinstance(stamp, bool):
            raise ValueError("time is not a number")
        from_mw = None if raw.get("from_mw") is None else _int(raw, "from_mw", 1, MAX_MW)
        return cls(
            previous_mw=_int(raw, "previous_mw", 1, MAX_MW),
            set_mw=_int(raw, "set_mw", 1, MAX_MW),
            pid=_int(raw, "pid", 1, MAX_PID),
            host=_text(raw, "host", 255, required=True),
            uid=uid,
            start=start,
            token=_text(raw, "token", 64, required=False),
            time=float(stamp),
            from_mw=from_mw,
        )

    @classmethod
    def mine(cls, previous_mw: int, set_mw: int, token: str, from_mw: int | None = None) -> JournalEntry:
        """The entry this process writes for a board it caps (``from_mw``: while the board
        still carries that limit, before the change to ``set_mw``)."""
        pid = os.getpid()
        start = process_start(pid)
        return cls(previous_mw, set_mw, pid, this_host(), os.geteuid(), start, token, time.time(), from_mw)

    def carried(self) -> tuple[int, ...]:
        """The limits that a board carrying this entry's cap can have: ``set_mw``, and ``from_mw``
        too (a process killed during the change: it may not have reached the driver)."""
        return (self.set_mw,) if self.from_mw is None else (self.set_mw, self.from_mw)

    def to_json(self) -> dict[str, Any]:
        """The entry as written to the journal."""
        return {
            "version": VERSION,
            "previous_mw": self.previous_mw,
            "set_mw": self.set_mw,
            "pid": self.pid,
            "host": self.host,
            "uid": self.uid,
            "start": self.start,
            "token": self.token,
            "time": self.time,
            **({} if self.from_mw is None else {"from_mw": self.from_mw}),
        }

    def here(self) -> bool:
        """Written on this host (a journal in a shared home may hold other hosts' entries)."""
        return self.host == this_host()

    def alive(self) -> bool:
        """Whether the process that wrote the entry still runs (this host's entries only):
        its pid exists, is not a zombie, and started when the entry says."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, another user's
        except (OverflowError, OSError):
            return False
        started = process_start(self.pid)
        if started == -1:
            return False
        return self.start is None or started is None or started == self.start
