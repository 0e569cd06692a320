"""Helpers for the power-limit tests on a shared machine: boards, child processes, waiting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from energy_core.power import journal_path
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS_MW = 350_000  # an administrator's limit: neither the default (400 W) nor the maximum (450 W)
DEADLINE_S = 150.0  # generous: child processes start Lightning, maybe on a loaded machine


def board(uuid: str = "GPU-1") -> SimGpu:
    return SimGpu(uuid, Constant(400.0), default_limit_mw=400_000, min_limit_mw=100_000, max_limit_mw=450_000)


def admin_limit(sim: Any, mw: int = PREVIOUS_MW) -> None:
    for gpu in sim.gpus:
        sim._store_limit(gpu, mw)


def limits_set(sim: Any) -> list[int]:
    """Every limit the driver was asked to set on the first board (the administrator's first)."""
    return [mw for _, mw in sim.gpus[0].limit_history]


def plant(**entries: dict) -> None:
    """Write these entries to this user's journal, as a run that was killed would have left them."""
    path = journal_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries))


def journal_entries() -> dict:
    path = journal_path()
    return json.loads(path.read_text()) if path.exists() else {}


def read_json(path: Path) -> Any:
    """A JSON file's content, or None while it is missing."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def wait_for(condition: Callable[[], Any], what: str, *children: subprocess.Popen) -> Any:
    """Poll ``condition`` until it is truthy; fail (with the children's output) past the
    deadline or when a child ends first."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for child in children:
            if child.poll() is not None:
                raise AssertionError(f"a child ended before {what}: {child.communicate()[0]}")
        time.sleep(0.05)
    for child in children:
        child.kill()
    raise AssertionError(f"timed out waiting for {what}")


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def cap_runner(
    state: Path, status: Path, *options: str, env: dict[str, str] | None = None, ignore_sighup: bool = False
) -> subprocess.Popen:
    """Start `tests.scripts.cap_runner` (output: stdout with stderr); ``ignore_sighup`` as
    ``nohup`` would start it."""
    command = [sys.executable, "-m", "tests.scripts.cap_runner", str(state), str(status), *options]

    def nohup() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env or child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=nohup if ignore_sighup else None,
    )


def attacker(user: tuple[int, int], *actions: list[Any], wait: bool = True) -> subprocess.Popen | list[str]:
    """Run `tests.scripts.other_user` as ``user``: its output lines, or the process."""
    command = [sys.executable, "-m", "tests.scripts.other_user", str(user[0]), str(user[1]), json.dumps(actions)]
    child = subprocess.Popen(
        command, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if not wait:
        return child
    output, _ = child.communicate(timeout=DEADLINE_S)
    assert child.returncode == 0, output
    return output.splitlines()


def driver_state(path: Path, mw: int = PREVIOUS_MW) -> Path:
    """A simulated driver's limits file (readable by every user), the board at ``mw``."""
    path.write_text(json.dumps({"GPU-child": mw}))
    path.chmod(0o644)
    return path


def limit_of(state: Path) -> int:
    return int(json.loads(state.read_text())["GPU-child"])
