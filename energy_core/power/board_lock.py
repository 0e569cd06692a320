"""BoardLock: one run holds a GPU board's power limit at a time on this host, whichever user runs it.

The journal is each user's own (no other user may write it), but a power limit belongs
to the board: root and a user given CAP_SYS_ADMIN can both set it, each with a journal
the other never reads. So the hold is kept on the board itself: an exclusive ``flock``
on one file per board in a directory every user shares (``/dev/shm``: a sticky,
world-writable tmpfs, emptied at boot like the limits; ``$ENERGY_CALLBACKS_BOARD_LOCKS``
names another), taken before the cap is set and released after the limit is put back.
The kernel drops a lock when its process ends, however it ends (SIGKILL included): a
hold is never stale. A process forked from the holder (a DataLoader worker, a user's
``os.fork``) closes its copies of the descriptors at once, so it neither keeps the board
held after its parent is gone nor lets the parent's hold go.

Nothing in the file is read or written. Who holds the lock the kernel says
(``/proc/locks``), and a holder counts only if it could set a power limit at all (root,
or CAP_SYS_ADMIN in ``/proc/PID/status``): any user can lock a file they can read, so a
lock held by a process that cannot set limits is not a run's, and is ignored with one
message. The file is opened without following links (``O_NOFOLLOW``), created
(``O_CREAT | O_EXCL``, mode 0444) only when missing, never opened with ``O_CREAT`` over
another user's file, and must be a regular file with one link; a directory others can
write must be sticky. Where no lock can be used safely, `take` says why
(`UnusableLock`) and the caller goes on without one.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import os
import re
import stat
import weakref
from dataclasses import dataclass
from pathlib import Path

LOCKS_ENV = "ENERGY_CALLBACKS_BOARD_LOCKS"
DEFAULT_DIR = Path("/dev/shm")
CAP_SYS_ADMIN = 21  # linux/capability.h: what setting a GPU's power limit needs, short of root
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: a planted FIFO never blocks
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


class UnusableLock(Exception):
    """A board's lock cannot be used safely here; the message says why."""


@dataclass(frozen=True)
class Holder:
    """The process that holds a board: ``pid`` (None where ``/proc/locks`` does not name it,
    e.g. from another PID namespace) and its effective ``uid`` (None where unknown)."""

    pid: int | None
    uid: int | None


class BoardLock:
    """This process's hold on one board: an open descriptor with an exclusive ``flock``.

    Args:
        uuid: The board.
        fd: The lock file's descriptor, locked.
    """

    def __init__(self, uuid: str, fd: int) -> None:
        self.uuid = uuid
        self._fd = fd
        _HOLDS.add(self)
        _watch_forks()

    def release(self) -> None:
        """Let the board go (idempotent). The lock is dropped for every process sharing the
        descriptor, not only closed here."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass  # closing below drops it all the same, where nothing else shares it
        os.close(fd)

    def _disown(self) -> None:
        """In a forked child: close this process's copy of the descriptor (the hold stays the parent's)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


_HOLDS: weakref.WeakSet[BoardLock] = weakref.WeakSet()  # this process's holds


@functools.cache
def _watch_forks() -> None:
    """Once, at the first hold: every process forked from this one disowns the holds it inherits."""
    os.register_at_fork(after_in_child=_disown_inherited)


def _disown_inherited() -> None:
    for held in list(_HOLDS):
        held._disown()


def locks_dir() -> Path:
    """Where the boards' lock files live: ``$ENERGY_CALLBACKS_BOARD_LOCKS``, else ``/dev/shm``.

    Raises:
        UnusableLock: the variable is set but empty or not an absolute path.
    """
    value = os.environ.get(LOCKS_ENV)
    if value is None:
        return DEFAULT_DIR
    if not value.strip() or not os.path.isabs(value):
        raise UnusableLock(f"${LOCKS_ENV}={value!r} is not an absolute path")
    return Path(value)


def lock_name(uuid: str) -> str:
    """The lock file's name for a board: its UUID where that is a plain file name, else a hash of it."""
    key = uuid if _SAFE_NAME.fullmatch(uuid) else hashlib.sha256(uuid.encode()).hexdigest()[:40]
    return f"energy-callbacks-board-{key}.lock"


def take(uuid: str) -> BoardLock | Holder:
    """Hold the board ``uuid``, or say which process that could set its limit holds it.

    Raises:
        UnusableLock: the lock cannot be used safely (the directory or the file is not
            what it must be, or its holder could not set a power limit).
    """
    folder = locks_dir()
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise UnusableLock(f"{folder}: {err.strerror or err}") from None
    try:
        _check_dir(folder, os.fstat(dir_fd))
        name = lock_name(uuid)
        for _ in range(3):  # a holder that lets go between our try and its lookup: try again
            fd = _open_file(folder / name, name, dir_fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return BoardLock(uuid, fd)
            except BlockingIOError:
                pid = _holder_pid(os.fstat(fd))
                os.close(fd)
            except OSError as err:
                os.close(fd)
                raise UnusableLock(f"cannot lock {folder / name}: {err.strerror or err}") from None
            if pid is None:
                continue
            uid, allowed = _privilege(pid)
            if uid is not None and not allowed:
                raise UnusableLock(
                    f"{folder / name} is locked by pid {pid} of uid {uid}, which cannot set power limits"
                )
            return Holder(pid, uid)
        return Holder(None, None)
    finally:
        os.close(dir_fd)


def _check_dir(folder: Path, st: os.stat_result) -> None:
    if st.st_uid not in (0, os.geteuid()):
        raise UnusableLock(f"the directory {folder} is owned by uid {st.st_uid}")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise UnusableLock(f"the directory {folder} is writable by others and not sticky")


def _open_file(path: Path, name: str, dir_fd: int) -> int:
    """The lock file's descriptor, read-only (enough for ``flock``), checked."""
    try:
        try:
            fd = os.open(name, _OPEN, dir_fd=dir_fd)
        except FileNotFoundError:
            try:
                fd = os.open(name, _OPEN | os.O_CREAT | os.O_EXCL, 0o444, dir_fd=dir_fd)
                os.fchmod(fd, 0o444)  # whatever the umask: every user must be able to open it
            except FileExistsError:  # made meanwhile by another run: open it as it is
                fd = os.open(name, _OPEN, dir_fd=dir_fd)
    except OSError as err:
        why = "a symbolic link" if err.errno == errno.ELOOP else (err.strerror or str(err))
        raise UnusableLock(f"{path}: {why}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise UnusableLock(f"{path} is not a regular file with one link")
    return fd


def _holder_pid(st: os.stat_result) -> int | None:
    """The pid holding a ``flock`` on this file, as ``/proc/locks`` lists it (None if it does not)."""
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as locks:
            for line in locks:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:  # waiters' lines have "->"
                    pid = int(fields[4])
                    return pid if pid > 0 else None
    except (OSError, ValueError):
        return None
    return None


def _privilege(pid: int) -> tuple[int | None, bool]:
    """A process's effective uid and whether it could set a power limit (root or CAP_SYS_ADMIN);
    (None, True) where ``/proc`` does not say (it is then taken at its word)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        uid = int(fields["Uid"].split()[1])
        caps = int(fields["CapEff"].strip(), 16)
    except (OSError, KeyError, ValueError, IndexError):
        return None, True
    return uid, uid == 0 or bool(caps >> CAP_SYS_ADMIN & 1)
