"""Estimated CPU (and DRAM) energy where RAPL cannot be read, charged to this process tree only.

**CPU**: watts per busy thread x the CPU-seconds of this process and its descendants
(dataloader workers included), from psutil. Other users' processes, and other jobs on a
shared VM host, are never counted, and a process cannot be charged for more threads than
it can run on.

* watts per thread = the socket's TDP (codecarbon's ``hardware/cpu_power.csv``, or the
  ``cpu_tdp_w`` argument) / the socket's threads (twice the core count the model name
  gives, e.g. "64-Core"; else the logical CPUs per socket the OS shows);
* a model not in the table: `DEFAULT_W_PER_THREAD` (4 W, CodeCarbon 3.3's figure for an
  unknown CPU), unless ``cpu_tdp_w`` is given.

**DRAM** (only when ``devices`` names ``"dram"`` and RAPL has no DRAM domain):
`DRAM_W_PER_GB` x the resident memory of the process tree.

Both are models, not measurements: the sources are flagged ``estimated`` and every
report says so. docs/cpu_estimate.md says how far off they can be.
"""

from __future__ import annotations

import math
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from energy_core.codecarbon_data import load_csv
from energy_core.devices.source import ESTIMATED, ESTIMATED_DRAM, EnergySource, Reading, SourceInfo
from energy_core.notices import Notice

DEFAULT_W_PER_THREAD = 4.0  # CodeCarbon 3.3 for a CPU model it does not know
DRAM_W_PER_GB = 0.375  # 3 W per 8 GB (CodeCarbon before 3.0): DDR4 under load
CHILD_SCAN_S = 2.0  # how often the list of descendant processes is refreshed
_NOISE = re.compile(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@\s*[\d.]+\s*ghz|\d+-core", re.IGNORECASE)
_CORES = re.compile(r"(\d+)-core", re.IGNORECASE)


def cpu_model() -> tuple[str, int]:
    """(model name, number of sockets) of this machine."""
    name, sockets = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not name:
                name = value.strip()
            elif key == "physical id":
                sockets.add(value.strip())
    except OSError:
        pass
    return name or platform.processor() or "unknown CPU", max(1, len(sockets))


def _tokens(name: str) -> frozenset[str]:
    return frozenset(_NOISE.sub(" ", name).lower().split())


def lookup_tdp(model: str) -> float | None:
    """TDP in watts of a CPU model from codecarbon's table, or None if not listed.

    Matches exactly (case-insensitive), else on the set of words once marks such as
    ``(R)``, ``CPU`` and ``@ 2.90GHz`` are removed.
    """
    rows = load_csv("hardware/cpu_power.csv")
    wanted = model.strip().lower()
    for row in rows:
        if row["Name"].strip().lower() == wanted:
            return float(row["TDP"])
    tokens = _tokens(model)
    for row in rows:
        if _tokens(row["Name"]) == tokens:
            return float(row["TDP"])
    return None


def virtual_machine() -> bool:
    """Whether the CPU says it runs under a hypervisor (x86's ``hypervisor`` flag in /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                return "hypervisor" in value.split()
    except OSError:
        pass
    return False


def threads_per_socket(model: str, sockets: int) -> int:
    """Hardware threads of one socket: 2 x the model's "N-Core", else what the OS shows."""
    cores = _CORES.search(model)
    if cores:
        return 2 * int(cores.group(1))
    return max(1, (psutil.cpu_count(logical=True) or 1) // sockets)


def visible_cpus() -> float:
    """Logical CPUs this process may run on: its affinity, capped by a cgroup v2 CPU quota."""
    try:
        count: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = psutil.cpu_count(logical=True) or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return count


Process = tuple[int, float]  # a process as a job's ranks name it to each other: (pid, its start time)


def this_process() -> Process:
    """This process, as the other ranks of its node find it (`ProcessTree`'s ``peers``)."""
    return os.getpid(), psutil.Process().create_time()


def _opened(peers: Sequence[Process]) -> list[psutil.Process]:
    """The processes ``peers`` name that are still the ones named (the same pid and start time: a pid of
    another namespace, or reused, names another process)."""
    found = []
    for pid, started in peers:
        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - started) < 0.01:
                found.append(process)
        except psutil.Error:
            continue
    return found


class ProcessTree:
    """CPU time and resident memory of a process and its descendants, and of its peers and theirs.

    Args:
        pid: The root process (default: this one).
        clock: Seconds, for the scans and the pace of the charge (default: monotonic).
        peers: Other processes measured with it, with their descendants: the other ranks of a job's
            node, which a launcher such as torchrun starts beside this one rather than under it (a
            process found twice, one rank the child of another, counts once).

    Descendants are listed every `CHILD_SCAN_S` (a full scan reads every process's
    /proc entry); their times are read at every call. The total grows by what each
    process of the tree used since the last call (a descendant found late: all it used
    before), and by what the processes waited for since (their children's times, a
    DataLoader worker at an epoch's end, however briefly it lived), less what the tree
    already counted of those that left it meanwhile (a reaped child's time moves into its
    parent's children's times). It never goes back, and rises at most at twice the pace
    of all visible CPUs, the most the `Ledger` takes for true: a jump (a descendant found
    late, one that ended unseen) is charged over the next seconds instead of being dropped
    as a glitch. Not counted: what a descendant uses after it leaves the tree (its parent
    ended first, and it was handed to init).
    """

    def __init__(
        self, pid: int | None = None, clock: Callable[[], float] = time.monotonic, peers: Sequence[Process] = ()
    ) -> None:
        self.root = psutil.Process(pid)
        self.peers = _opened(peers)
        self.clock = clock
        self._children: list[psutil.Process] = []
        self._scanned = -math.inf
        self._seen: dict[tuple[int, float], tuple[float, float]] | None = None  # (own, waited-for) s per process
        self._used = 0.0  # what the tree used, counted so far
        self._charged = 0.0  # what the last call returned
        self._called: float | None = None  # the last call's time
        self._pace = 2 * visible_cpus()  # CPU-seconds per second the charge may rise by

    def _descendants(self, now: float) -> list[psutil.Process]:
        if now - self._scanned >= CHILD_SCAN_S:
            self._scanned = now
            found: dict[int, psutil.Process] = {}
            for top, itself in ((self.root, False), *((peer, True) for peer in self.peers)):
                try:
                    family = [top, *top.children(recursive=True)] if itself else top.children(recursive=True)
                except psutil.Error:  # ended: its time is in its parent's, where that is measured
                    continue
                found.update((process.pid, process) for process in family if process.pid != self.root.pid)
            self._children = list(found.values())
        return self._children

    def _times(self, now: float) -> dict[tuple[int, float], tuple[float, float]]:
        """(own, waited-for) CPU seconds of every process of the tree readable now, by (pid, birth)."""
        found = {(-1, 0.0): _split(self.root.cpu_times())}  # the root: key apart from any pid
        for child in self._descendants(now):
            try:
                found[(child.pid, child.create_time())] = _split(child.cpu_times())
            except psutil.Error:  # ended since the scan: in its parent's children's times once waited for
                continue
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the tree used (since each process started, at the first call), charged
        at most at the pace the CPUs allow (see the class)."""
        now = self.clock()
        found = self._times(now)
        if self._seen is None:
            self._used = sum(own + waited for own, waited in found.values())
        else:
            left = sum(sum(self._seen[key]) for key in self._seen if key not in found)
            own = waited = 0.0
            for key, (own_s, waited_s) in found.items():
                before = self._seen.get(key, (0.0, 0.0))
                own += max(own_s - before[0], 0.0)
                waited += max(waited_s - before[1], 0.0)
            self._used += own + max(waited - left, 0.0)
        self._seen = found
        if self._called is None:
            self._charged = self._used
        else:
            self._charged = min(self._used, self._charged + max(now - self._called, 0.0) * self._pace)
        self._called = now
        return self._charged

    def rss_bytes(self) -> float:
        """Resident memory of the tree's live processes."""
        total = float(self.root.memory_info().rss)
        for child in self._descendants(self.clock()):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue
        return total


def _split(times: Any) -> tuple[float, float]:
    """A process's own CPU seconds, and those of the children it waited for (psutil's ``children_*``)."""
    waited = getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
    return float(times.user + times.system), float(waited)


class EstimatedCpuSource(EnergySource):
    """Estimated CPU energy: watts per busy thread x the process tree's CPU-seconds.

    Args:
        w_per_thread: Watts charged per busy hardware thread.
        detail: How the figure was chosen, for the record.
        tree: The process tree measured (default: this process's).
    """

    def __init__(self, w_per_thread: float, detail: str, tree: ProcessTree | None = None) -> None:
        self.w_per_thread = w_per_thread
        self.tree = tree or ProcessTree()  # with the node's other ranks, where `estimate_cpu` was given them
        self.max_power_w = 2 * w_per_thread * max(1.0, visible_cpus())
        self._base_s = self.tree.cpu_seconds()
        self.info = SourceInfo(name="cpu0", kind="cpu", method="process-cpu-time-x-w-per-thread", estimated=True,
                               detail=detail)  # fmt: skip

    accuracy = ESTIMATED

    def read(self, now: float) -> Reading:
        return Reading(joules=self.w_per_thread * (self.tree.cpu_seconds() - self._base_s))


class EstimatedDramSource(EnergySource):
    """Estimated DRAM power: `DRAM_W_PER_GB` x the process tree's resident memory.

    Args:
        tree: The process tree measured (default: this process's).
    """

    def __init__(self, tree: ProcessTree | None = None) -> None:
        self.tree = tree or ProcessTree()
        detail = f"{DRAM_W_PER_GB:g} W per GB of the process tree's resident memory (3 W per 8 GB)"
        self.info = SourceInfo(name="dram0", kind="dram", method="rss-x-w-per-gb", estimated=True, detail=detail)

    accuracy = ESTIMATED_DRAM

    def read(self, now: float) -> Reading:
        return Reading(watts=DRAM_W_PER_GB * self.tree.rss_bytes() / 1e9)


def estimate_cpu(
    cpu_tdp_w: float | None = None, peers: Sequence[Process] = ()
) -> tuple[EstimatedCpuSource, list[Notice]]:
    """An estimated CPU source and the one warning that says it is an estimate.

    Args:
        cpu_tdp_w: The socket's TDP in W, instead of codecarbon's table.
        peers: The other ranks of this node, measured with this process (`ProcessTree`).
    """
    model, sockets = cpu_model()
    threads = threads_per_socket(model, sockets)
    tdp = cpu_tdp_w if cpu_tdp_w is not None else lookup_tdp(model)
    if tdp is not None:
        per_thread = tdp / threads
        origin = "cpu_tdp_w" if cpu_tdp_w is not None else "codecarbon's CPU table"
        why = f"{tdp:g} W TDP ({origin}) / {threads} threads per socket"
    else:
        per_thread = DEFAULT_W_PER_THREAD
        why = f"model not in codecarbon's table: {DEFAULT_W_PER_THREAD:g} W per thread, as CodeCarbon"
    detail = f"{model}: {per_thread:.3g} W per busy thread ({why}); {visible_cpus():g} logical CPUs visible"
    if _CORES.search(model) is None and virtual_machine():  # the threads counted are the VM's, not the socket's
        advice = (
            f" This is a virtual machine whose CPU name gives no core count: a TDP is split over the {threads} "
            f"threads it shows, not over the socket's, which overstates their share; pass cpu_tdp_w= with the "
            f"socket's TDP x {threads} / the socket's threads."
        )
    elif cpu_tdp_w is None:
        advice = " Pass cpu_tdp_w= with the socket's TDP for a better figure."
    else:
        advice = ""
    whose = "this process and the node's other ranks" if peers else "this process"
    text = (
        f"CPU energy is ESTIMATED, not read from a hardware counter (no readable RAPL): {per_thread:.3g} W per busy "
        f"thread x the CPU time of {whose} and their children ({model}: {why}).{advice}"
    )
    return EstimatedCpuSource(per_thread, detail, ProcessTree(peers=peers)), [Notice("warn", text)]


def estimate_dram(peers: Sequence[Process] = ()) -> tuple[EstimatedDramSource, list[Notice]]:
    """An estimated DRAM source and the one warning that says it is an estimate (``peers``: as `estimate_cpu`)."""
    source = EstimatedDramSource(ProcessTree(peers=peers))
    text = f"DRAM energy is ESTIMATED (no readable RAPL DRAM domain): {source.info.detail}."
    return source, [Notice("warn", text)]
