"""The folder `energy-report` writes its plots and page to, safe beside other users' files.

Records are often read in shared folders, by root too. Another user could plant a link
where the report writes (``run.report/report.html -> /root/.bashrc``) or own the folder it
would use. So the report writes only into a folder of the user running it that no one else
can write to (not world-writable, nor writable by a group other than the user's own),
opened once (``O_DIRECTORY | O_NOFOLLOW``) and checked on its descriptor,
and writes each file through that descriptor as a fresh file of its own (``O_EXCL |
O_NOFOLLOW``) renamed over the name: no link is followed, no FIFO opened for writing, no
file someone else left there rewritten in place (it is replaced, the new one the user's).

By default the folder is ``RECORD.report/`` beside the record: made fresh, or reused when it
is already such a folder. When it is anything else (a file, a link, another user's or a
shared folder), or cannot be made there, a fresh folder with an unpredictable name is made
instead (``RECORD.report-XXXXXXXX/`` beside it, else in the system's temporary folder), and
a note says where. A folder given with ``--out`` is made if missing and must pass the same
check, or the report stops with a message.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from pathlib import Path

from energy_core.notices import printable

MODE = 0o755  # a folder the report makes: no one else may write to it, whatever the umask (0 makes 0o777)


class FolderError(Exception):
    """The folder cannot be written safely; the message says why."""


class ReportFolder:
    """A folder of this user that no one else can write to, held open.

    Args:
        path: The folder, which must exist.

    Raises:
        FolderError: a link, not a folder, another user's, or writable by others.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as err:
            raise FolderError(f"{printable(path)} cannot be opened as a folder (a link is not followed): "
                              f"{err.strerror}") from None  # fmt: skip
        found = os.fstat(self.fd)
        why = ""
        if found.st_uid != os.geteuid():
            why = f"it is owned by uid {found.st_uid}, not you"
        elif found.st_mode & stat.S_IWOTH or (found.st_mode & stat.S_IWGRP and found.st_gid != os.getegid()):
            why = "others can write to it"  # (a group-writable folder of one's own group is one's own: umask 002)
        if why:
            os.close(self.fd)
            raise FolderError(f"{printable(path)} is not a folder of yours alone ({why})")

    @classmethod
    def beside(cls, record: Path) -> tuple[ReportFolder, str | None]:
        """``RECORD.report/`` beside ``record``, or a fresh folder, and a note when it is not the first."""
        wanted = record.with_suffix(".report")
        try:
            os.mkdir(wanted, MODE)
        except FileExistsError:
            try:
                return cls(wanted), None  # a report of yours, made before
            except FolderError as err:
                why = str(err)
        except OSError as err:
            why = f"{printable(wanted)} cannot be made ({err.strerror})"
        else:
            return cls(wanted), None
        try:
            fresh = tempfile.mkdtemp(prefix=wanted.name + "-", dir=record.parent)
        except OSError:
            fresh = tempfile.mkdtemp(prefix="energy-report-")
        return cls(Path(fresh)), f"{why}: the report is in {printable(fresh)} instead"

    @classmethod
    def given(cls, path: Path) -> ReportFolder:
        """A folder named with ``--out``, made if missing."""
        try:
            path.mkdir(MODE, parents=True, exist_ok=True)
        except OSError as err:
            raise FolderError(f"{printable(path)} cannot be made ({err.strerror})") from None
        return cls(path)

    def write(self, name: str, data: bytes) -> Path:
        """Create or replace the file ``name`` in the folder; returns its path. The data go to a fresh file
        of this user (``O_EXCL``) renamed over ``name``: a file someone else left there (a member of the
        folder's group) is replaced by one of this user's, never rewritten in place and left theirs.

        Raises:
            FolderError: the name is taken by a link or by something other than a file (left as it is), or
                the file cannot be made.
        """
        where = f"{name} in {printable(self.path)}"
        try:
            found = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise FolderError(f"{where} cannot be written: {err.strerror}") from None
        else:
            if stat.S_ISLNK(found.st_mode):
                raise FolderError(f"{where} cannot be written (a link is not followed): it is a link")
            if not stat.S_ISREG(found.st_mode):
                raise FolderError(f"{where} is not a regular file: not written")
        fresh = f".{name}.{secrets.token_hex(6)}"
        try:
            fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=self.fd)  # fmt: skip
        except OSError as err:
            raise FolderError(f"{where} cannot be written: {err.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(fresh, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(fresh, dir_fd=self.fd)
            raise FolderError(f"{where} cannot be written: {err.strerror}") from None
        return self.path / name

    def close(self) -> None:
        os.close(self.fd)
