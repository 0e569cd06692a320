"""Another local user, for the tests of power limits on shared machines.

`ensure_user` creates (or reuses) an unprivileged account; `drop_privileges` turns the
calling process into that user for good (real, effective and saved ids, no groups).
Dropping *inside* the process, after its imports, rather than ``setpriv python ...``: the
interpreter may live where only root can read it (e.g. ``/root/.pyenv``), and a
process that has dropped every id is that user, as far as the kernel's checks go.

As a script it plays the attacker: it drops to UID:GID and performs ACTIONS, a JSON list
of ``[name, args...]``, printing one line per action (``ok ...`` or ``refused ...``):

    python -m tests.scripts.other_user UID GID '[["mkdir", "/tmp/x/energy-callbacks", 493]]'

Actions: ``mkdir PATH MODE``, ``symlink TARGET LINK``, ``write PATH TEXT`` (through a
temporary file and a rename, as a swap would), ``bulk PATH N`` (a journal of N planted
entries), ``swap PATH TEXT STOP_FILE`` (keep replacing PATH with TEXT until STOP_FILE
exists; at least once), ``hold PATH STOP_FILE`` (create PATH if missing, hold an
exclusive ``flock`` on it until STOP_FILE exists; ``ok hold`` is printed once it is held).
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

USER = "energycb-other"


def ensure_user(name: str = USER) -> tuple[int, int] | str:
    """The (uid, gid) of an unprivileged account, created if missing; or why there is none."""
    if os.geteuid() != 0:
        return "the tests run as an unprivileged user: no second uid can be played"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            return "no useradd to create a second user"
        done = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            return f"useradd failed: {done.stderr.strip()}"
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        return f"{name} is root"
    return entry.pw_uid, entry.pw_gid


CAP_SYS_ADMIN = 21  # linux/capability.h
PR_SET_KEEPCAPS = 8  # linux/prctl.h
CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_privileges(uid: int, gid: int, cap_sys_admin: bool = False) -> None:
    """Become ``uid``/``gid`` for good (root only); with ``cap_sys_admin``, keep that one
    capability, as ``setcap cap_sys_admin+ep`` on the interpreter would give a user."""
    libc = ctypes.CDLL(None, use_errno=True)
    if cap_sys_admin and libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_KEEPCAPS)")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    assert os.getresuid() == (uid, uid, uid)
    if cap_sys_admin:
        header = _CapHeader(CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)(_CapData(1 << CAP_SYS_ADMIN, 1 << CAP_SYS_ADMIN, 0), _CapData(0, 0, 0))
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset(CAP_SYS_ADMIN)")


def act(name: str, *args: object) -> str:
    """Perform one attacker action; a line saying what happened."""
    try:
        if name == "mkdir":
            os.mkdir(str(args[0]), int(args[1]))
            os.chmod(str(args[0]), int(args[1]))  # whatever the umask
        elif name == "symlink":
            os.symlink(str(args[0]), str(args[1]))
        elif name == "write":
            _replace(Path(str(args[0])), str(args[1]))
        elif name == "bulk":
            entry = {"previous_mw": 100_000, "set_mw": 350_000, "pid": 999_999, "host": "h"}
            _replace(Path(str(args[0])), json.dumps({f"GPU-{i}": entry for i in range(int(args[1]))}))
        elif name == "swap":
            path, text, stop = Path(str(args[0])), str(args[1]), Path(str(args[2]))
            count = 0
            while count == 0 or not stop.exists():
                _replace(path, text)
                count += 1
                time.sleep(0.001)
            return f"ok swap {path} x{count}"
        elif name == "hold":
            path, stop = Path(str(args[0])), Path(str(args[1]))
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o444)
            fcntl.flock(fd, fcntl.LOCK_EX)
            print(f"ok hold {path}", flush=True)
            while not stop.exists():
                time.sleep(0.01)
            os.close(fd)
            return f"ok released {path}"
        else:
            return f"unknown action {name}"
    except OSError as err:
        return f"refused {name} {args[0]}: {type(err).__name__} {err.strerror}"
    return f"ok {name} {args[0]}"


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    drop_privileges(int(sys.argv[1]), int(sys.argv[2]))
    for action in json.loads(sys.argv[3]):
        print(act(*action), flush=True)
