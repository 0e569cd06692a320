"""PrivateDir: a directory that only its owner can change, and files in it opened without following links.

Root writes the power-limit journal; if another user could create or replace anything it
opens, that user could make root truncate, overwrite or trust a file of their choosing.
So, before any use:

* the directory is opened with ``O_NOFOLLOW | O_DIRECTORY`` and checked on its
  descriptor (``fstat``): owned by the effective user, not writable by group or others;
* every entry in it is checked the same way (``lstat`` through ``dir_fd``): no symbolic
  link, no file of another owner, nothing group- or world-writable;
* files are opened relative to that descriptor (``dir_fd=``) with ``O_NOFOLLOW``, new ones
  with ``O_CREAT | O_EXCL`` and mode 0600, and checked again on their own descriptor;
* new content goes to a fresh file and replaces the old in one ``rename``.

Every failure is a `JournalError` whose message names the path and the problem.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from energy_core.power.errors import JournalError

NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: opening a FIFO never blocks


def unsafe(st: os.stat_result, euid: int) -> str | None:
    """What makes a file or directory unsafe for ``euid`` to trust, or None."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if st.st_uid != euid:
        return f"is owned by uid {st.st_uid}, not by this process's user (uid {euid})"
    if st.st_mode & 0o022:
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _fail(path: Path, err: OSError) -> JournalError:
    if err.errno == errno.ELOOP:
        return JournalError(f"{path} is a symbolic link")
    return JournalError(f"{path}: {err.strerror or err}")


class OpenDir:
    """A checked directory, held open by descriptor; every file operation goes through it.

    Args:
        path: The directory (for messages).
        fd: Its descriptor, already checked.
        euid: The user everything in it must belong to.
    """

    def __init__(self, path: Path, fd: int, euid: int) -> None:
        self.path, self.fd, self.euid = path, fd, euid

    def check_entries(self) -> None:
        """Every entry in the directory must be safe (see `unsafe`).

        Raises:
            JournalError: naming the first unsafe entry.
        """
        try:
            for name in sorted(os.listdir(self.fd)):
                try:
                    st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
                except FileNotFoundError:  # removed meanwhile (only the owner can): nothing to check
                    continue
                problem = unsafe(st, self.euid)
                if problem:
                    raise JournalError(f"{self.path / name} {problem}")
        except OSError as err:
            raise _fail(self.path, err) from None

    def _checked(self, fd: int, name: str) -> int:
        st = os.fstat(fd)
        problem = unsafe(st, self.euid)
        if problem is None and stat.S_ISDIR(st.st_mode):
            problem = "is a directory, not a file"
        elif problem is None and not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file"
        if problem:
            os.close(fd)
            raise JournalError(f"{self.path / name} {problem}")
        return fd

    def open_lock(self, name: str) -> int:
        """Open (creating it 0600 if missing, never truncating) a lock file; its descriptor.

        Raises:
            JournalError: a link, another owner, not a regular file, or an OS error.
        """
        try:
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | NO_FOLLOW, 0o600, dir_fd=self.fd)
            except FileExistsError:
                fd = os.open(name, os.O_RDWR | NO_FOLLOW, dir_fd=self.fd)
        except OSError as err:
            raise _fail(self.path / name, err) from None
        return self._checked(fd, name)

    def read(self, name: str, limit: int) -> bytes | None:
        """At most ``limit + 1`` bytes of a file (None when there is none), so an
        oversized file is seen as such without reading it all.

        Raises:
            JournalError: a link, a directory, another owner, or an OS error.
        """
        try:
            fd = os.open(name, os.O_RDONLY | NO_FOLLOW, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise _fail(self.path / name, err) from None
        fd = self._checked(fd, name)
        chunks: list[bytes] = []
        try:
            size = 0
            while size <= limit:
                chunk = os.read(fd, limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError as err:
            raise _fail(self.path / name, err) from None
        finally:
            os.close(fd)
        return b"".join(chunks)

    def replace(self, name: str, data: bytes) -> None:
        """Write ``data`` to a new 0600 file beside ``name`` and rename it over ``name``.

        Raises:
            JournalError: the temporary file or the rename failed.
        """
        tmp = Path(name).with_suffix(".tmp").name
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW, 0o600, dir_fd=self.fd)
            except FileExistsError:  # left by a killed writer of this user (the entries were checked)
                os.unlink(tmp, dir_fd=self.fd)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW, 0o600, dir_fd=self.fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as err:
            raise _fail(self.path / name, err) from None

    def set_aside(self, name: str, new_name: str) -> None:
        """Rename ``name`` to ``new_name`` (replacing it), for a human to look at later.

        Raises:
            JournalError: the rename failed.
        """
        try:
            os.replace(name, new_name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as err:
            raise _fail(self.path / name, err) from None

    def close(self) -> None:
        os.close(self.fd)


def open_private_dir(path: Path, euid: int | None = None) -> OpenDir:
    """Open ``path`` (created 0700 with its parents if missing) after checking it and
    every entry in it. Close the result when done.

    Raises:
        JournalError: the directory or an entry is unsafe, or cannot be created or opened.

    Examples:
        >>> folder = open_private_dir(Path("/tmp/energy-callbacks-doc"))   # doctest: +SKIP
        >>> folder.read("power-limits.json", 65536)                          # doctest: +SKIP
    """
    euid = os.geteuid() if euid is None else euid
    try:
        os.lstat(path)
    except FileNotFoundError:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # created meanwhile: checked below like any existing directory
        except OSError as err:
            raise JournalError(f"cannot create the directory {path}: {err.strerror or err}") from None
    except OSError as err:
        raise _fail(path, err) from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ENOTDIR:  # Linux says so for a symbolic link too
            link = os.path.islink(path)
            raise JournalError(f"{path} is {'a symbolic link' if link else 'not a directory'}") from None
        raise _fail(path, err) from None
    problem = unsafe(os.fstat(fd), euid)
    if problem:
        os.close(fd)
        raise JournalError(f"the directory {path} {problem}")
    folder = OpenDir(path, fd, euid)
    try:
        folder.check_entries()
    except JournalError:
        folder.close()
        raise
    return folder
