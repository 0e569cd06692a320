"""GPU power caps: set at train start, restored on every way out, recovered after a kill.

A power limit set through NVML (``nvmlDeviceSetPowerManagementLimit``, mW, root or
CAP_SYS_ADMIN) outlives the process while persistence mode is on, so whoever sets it must
put it back. `PowerLimits` does, in this order of defence:

1. `PowerLimits.restore` at train end and on exceptions (the adapters call it);
2. SIGTERM/SIGINT handlers that restore first, then behave as before (the previous
   handler, or the default: KeyboardInterrupt for SIGINT, SystemExit for SIGTERM);
3. ``atexit``;
4. a journal on disk, written *before* each change, of limits changed and not yet
   restored (board UUID, previous and new limit, pid, host). `PowerLimits.recover` (run
   at the next cap's start, or ``energy-report --restore-power-limits``) puts back the
   limits of processes that are gone (SIGKILL, OOM kill) when the board still carries
   the limit they set.

The limit restored is the one in force before (not the maximum, not the default).
"""

from __future__ import annotations

import atexit
import fcntl
import json
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pynvml

from energy_core.nvidia import VisibleGpu, visible_gpus

JOURNAL_ENV = "ENERGY_CALLBACKS_POWER_JOURNAL"
DEFAULT_JOURNAL = Path("/var/tmp/energy-callbacks/power-limits.json")
PERMISSION_HINT = (
    "Setting GPU power limits needs root or CAP_SYS_ADMIN (NVML_ERROR_NO_PERMISSION). Run the job as root, "
    "grant the capability (e.g. `sudo setcap cap_sys_admin+ep $(readlink -f $(which python))`), or ask an "
    "administrator to set the cap with `sudo nvidia-smi -i <gpu> -pl <watts>`."
)


def journal_path() -> Path:
    return Path(os.environ.get(JOURNAL_ENV, DEFAULT_JOURNAL))


def check_cap_arguments(
    watts: float | str | None, fraction: float | None, gpus: str | Sequence[int]
) -> tuple[float | str | None, float | None, str | tuple[int, ...]]:
    """Validate PowerCap arguments; ValueError names the argument and the allowed range."""
    if (watts is None) == (fraction is None):
        raise ValueError("give exactly one of watts (W, or 'auto') and fraction (of the default limit, in (0, 1])")
    if isinstance(watts, str):
        if watts != "auto":
            raise ValueError(f"watts must be a positive number of watts or 'auto', got {watts!r}")
    elif watts is not None:
        try:
            watts = float(watts)
        except (TypeError, ValueError):
            raise ValueError(f"watts must be a positive number of watts or 'auto', got {watts!r}") from None
        if not math.isfinite(watts) or watts <= 0:
            raise ValueError(f"watts must be a positive finite number of watts or 'auto', got {watts!r}")
    if fraction is not None:
        try:
            fraction = float(fraction)
        except (TypeError, ValueError):
            fraction = math.nan
        if not (0.0 < fraction <= 1.0):
            raise ValueError(f"fraction must be in (0, 1] (a share of each GPU's default limit), got {fraction!r}")
    if isinstance(gpus, str):
        if gpus != "all":
            raise ValueError(f"gpus must be 'all' or a list of visible GPU indices, got {gpus!r}")
        return watts, fraction, gpus
    indices = tuple(gpus)
    if not indices or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in indices):
        raise ValueError(f"gpus must be 'all' or a non-empty list of GPU indices >= 0, got {gpus!r}")
    if len(set(indices)) != len(indices):
        raise ValueError(f"gpus has repeated indices: {gpus!r}")
    return watts, fraction, indices


@dataclass
class CappedGpu:
    """One board whose limit this process changed.

    Args:
        gpu: The board.
        previous_mw: The limit in force before, restored at the end.
        min_mw, max_mw: The board's allowed range.
        default_mw: The board's default limit.
        applied_mw: The limit read back after the last change.
    """

    gpu: VisibleGpu
    previous_mw: int
    min_mw: int
    max_mw: int
    default_mw: int
    applied_mw: int


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PowerLimits:
    """Sets and restores GPU power limits, with a journal that outlives the process.

    Args:
        journal: The journal file; defaults to ``$ENERGY_CALLBACKS_POWER_JOURNAL`` or
            ``/var/tmp/energy-callbacks/power-limits.json``.

    Example:
        >>> limits = PowerLimits()                              # doctest: +SKIP
        >>> capped = limits.apply(gpus, watts=None, fraction=0.8)   # doctest: +SKIP
        >>> limits.restore()                                     # doctest: +SKIP
    """

    def __init__(self, journal: Path | None = None) -> None:
        self.journal = journal or journal_path()
        self.capped: list[CappedGpu] = []
        self._lock = threading.RLock()
        self._handlers_installed = False
        self._previous_handlers: dict[int, Any] = {}

    # ------------------------------------------------------------------ journal
    @contextmanager
    def _journal(self) -> Iterator[dict[str, Any]]:
        """The journal's entries, locked against other processes, written back on exit."""
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                entries = json.loads(self.journal.read_text()) if self.journal.exists() else {}
            except (OSError, ValueError):
                entries = {}
            yield entries
            tmp = self.journal.with_suffix(".tmp")
            tmp.write_text(json.dumps(entries, indent=1))
            os.replace(tmp, self.journal)

    def recover(self) -> list[str]:
        """Restore limits left behind by processes of this host that are gone.

        A limit is put back only if the board still carries the limit the dead process
        set (otherwise someone changed it since, or the driver was reloaded: the entry
        is dropped and the board left alone). Returns one message per board handled.
        """
        messages = []
        pynvml.nvmlInit()
        host = socket.gethostname()
        with self._journal() as entries:
            for uuid, entry in list(entries.items()):
                if entry.get("host") != host or _alive(int(entry.get("pid", 0))):
                    continue
                try:
                    handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
                    current = int(pynvml.nvmlDeviceGetPowerManagementLimit(handle))
                    if current == int(entry["set_mw"]):
                        pynvml.nvmlDeviceSetPowerManagementLimit(handle, int(entry["previous_mw"]))
                        messages.append(
                            f"Restored the power limit of {uuid} to {entry['previous_mw'] / 1000:g} W "
                            f"(left at {current / 1000:g} W by pid {entry['pid']}, which is gone)."
                        )
                    else:
                        messages.append(f"{uuid}: limit changed since pid {entry['pid']} set it; left as it is.")
                except pynvml.NVMLError as err:
                    messages.append(f"{uuid}: could not restore the power limit ({err}); left in the journal.")
                    continue
                del entries[uuid]
        return messages

    # ------------------------------------------------------------------ apply
    def plan(self, gpus: Sequence[VisibleGpu], watts: float | None, fraction: float | None) -> list[tuple]:
        """Read each board's range and compute the target (mW); ValueError before any change."""
        planned = []
        for gpu in gpus:
            handle = gpu.handle
            min_mw, max_mw = (int(v) for v in pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle))
            default_mw = int(pynvml.nvmlDeviceGetPowerManagementDefaultLimit(handle))
            current_mw = int(pynvml.nvmlDeviceGetPowerManagementLimit(handle))
            if watts is not None:
                target = int(round(watts * 1000))
            elif fraction is not None:
                target = int(round(fraction * default_mw))
            else:  # register the board only (the cap finder changes it later)
                target = current_mw
            if not min_mw <= target <= max_mw:
                if watts is not None:
                    raise ValueError(
                        f"watts={watts:g} is outside the allowed range of GPU {gpu.cuda_index} ({gpu.uuid}): "
                        f"[{min_mw / 1000:g}, {max_mw / 1000:g}] W"
                    )
                raise ValueError(
                    f"fraction={fraction:g} gives {target / 1000:g} W, outside the allowed range of GPU "
                    f"{gpu.cuda_index} ({gpu.uuid}): [{min_mw / 1000:g}, {max_mw / 1000:g}] W, i.e. fraction in "
                    f"[{min_mw / default_mw:.3g}, {max_mw / default_mw:.3g}] of its {default_mw / 1000:g} W default"
                )
            planned.append((gpu, current_mw, min_mw, max_mw, default_mw, target))
        return planned

    def apply(self, gpus: Sequence[VisibleGpu], watts: float | None, fraction: float | None) -> list[CappedGpu]:
        """Cap every board; journal first, then set, then read back.

        With neither ``watts`` nor ``fraction`` the boards are only registered (journalled
        at their current limit) for the cap finder to change.

        Raises:
            ValueError: a target outside a board's range (nothing has been changed).
            PermissionError: NVML refused (no root/CAP_SYS_ADMIN); nothing was changed.
        """
        planned = self.plan(gpus, watts, fraction)
        self.install_exit_handlers()
        try:
            for gpu, current_mw, min_mw, max_mw, default_mw, target in planned:
                capped = CappedGpu(gpu, current_mw, min_mw, max_mw, default_mw, current_mw)
                self.set(capped, target)
        except PermissionError:
            self.restore()  # all or nothing
            raise
        return self.capped

    def set(self, capped: CappedGpu, target_mw: int) -> int:
        """Set one board's limit (journalled); returns the limit read back, in mW."""
        with self._lock:
            with self._journal() as entries:
                entry = entries.get(capped.gpu.uuid)
                if entry is None or int(entry.get("pid", 0)) != os.getpid():
                    entry = {"previous_mw": capped.previous_mw, "pid": os.getpid(), "host": socket.gethostname()}
                entry.update(set_mw=target_mw, time=time.time())
                entries[capped.gpu.uuid] = entry
            try:
                pynvml.nvmlDeviceSetPowerManagementLimit(capped.gpu.handle, target_mw)
            except pynvml.NVMLError_NoPermission:
                with self._journal() as entries:
                    entries.pop(capped.gpu.uuid, None)
                raise PermissionError(PERMISSION_HINT) from None
            if capped not in self.capped:
                self.capped.append(capped)
            capped.applied_mw = int(pynvml.nvmlDeviceGetPowerManagementLimit(capped.gpu.handle))
            return capped.applied_mw

    def restore(self) -> list[str]:
        """Put back every limit this process changed. Idempotent, safe from any thread."""
        messages = []
        with self._lock:
            for capped in list(self.capped):
                try:
                    pynvml.nvmlDeviceSetPowerManagementLimit(capped.gpu.handle, capped.previous_mw)
                except pynvml.NVMLError as err:
                    messages.append(f"GPU {capped.gpu.cuda_index}: restoring the power limit failed ({err}).")
                    continue
                self.capped.remove(capped)
                messages.append(
                    f"GPU {capped.gpu.cuda_index}: power limit restored to {capped.previous_mw / 1000:g} W."
                )
                with self._journal() as entries:
                    entries.pop(capped.gpu.uuid, None)
        return messages

    # ------------------------------------------------------------------ every way out
    def install_exit_handlers(self) -> None:
        """atexit, and SIGTERM/SIGINT handlers that restore and then behave as before."""
        if self._handlers_installed:
            return
        self._handlers_installed = True
        atexit.register(self.restore)
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.restore()
        previous = self._previous_handlers.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise SystemExit(128 + signum)

    def uninstall_exit_handlers(self) -> None:
        """Put the previous signal handlers back (after a normal restore)."""
        if threading.current_thread() is threading.main_thread():
            for signum, previous in self._previous_handlers.items():
                if signal.getsignal(signum) == self._on_signal:
                    signal.signal(signum, previous)
        self._previous_handlers.clear()
        atexit.unregister(self.restore)
        self._handlers_installed = False


def select_gpus(gpus: str | tuple[int, ...]) -> list[VisibleGpu]:
    """The visible boards named by ``gpus``; ValueError for an unknown index."""
    pynvml.nvmlInit()
    visible = visible_gpus()
    if gpus == "all":
        return visible
    known = {g.cuda_index: g for g in visible}
    unknown = [i for i in gpus if i not in known]
    if unknown:
        raise ValueError(
            f"gpus: no visible GPU with index {unknown}; visible indices are "
            f"{sorted(known) if known else 'none'} (0 to {len(visible) - 1})"
        )
    return [known[i] for i in gpus]
