"""CPU package and DRAM energy from Linux RAPL (``/sys/class/powercap/intel-rapl*``).

Each zone exposes ``energy_uj`` (µJ, monotone) that wraps to zero at
``max_energy_range_uj`` (Intel package about 262 kJ, AMD about 65.5 kJ: minutes at full
load), so the reader adds the range back on every wrap (`counter.WrappingCounter`).
Since Linux 5.10 (CVE-2020-8694) ``energy_uj`` is readable only by root; without access
discovery returns no sources and one notice that says how to grant it. AMD Zen exposes
its package energy through the same interface (no DRAM domain).
"""

from __future__ import annotations

import os
from pathlib import Path

from energy_core.devices.counter import WrappingCounter
from energy_core.devices.source import Accuracy, EnergySource, Reading, SourceInfo
from energy_core.notices import Notice

POWERCAP_ROOT = Path("/sys/class/powercap")

PERMISSION_HINT = (
    "RAPL energy counters ({path}) are readable only by root since Linux 5.10 "
    "(CVE-2020-8694). To measure CPU/DRAM energy, run as root or grant read access, e.g. "
    "`sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj /sys/class/powercap/intel-rapl:*:*/energy_uj` "
    "(or a udev rule). Falling back to an estimate."
)


# RAPL updates about every ms; its files count µJ; a package or DRAM draws watts even idle: 2 s without a move is a
# counter that does not count (a zone some VMs show), never 0 J
RAPL_ACCURACY = Accuracy(lag_s=0.001, quantum_j=1e-6, still_s=2.0)


def _read_int(path: Path) -> int:
    with open(path) as handle:
        return int(handle.read().strip())


class RaplSource(EnergySource):
    """Cumulative energy of one RAPL zone (a CPU package or its DRAM) in joules.

    Args:
        zone: The zone directory, e.g. ``/sys/class/powercap/intel-rapl:0``.
        kind: ``"cpu"`` for a package zone, ``"dram"`` for a DRAM zone.
        index: Package number, used in the source name (``cpu0``, ``dram0``).
    """

    def __init__(self, zone: Path, kind: str, index: int) -> None:
        self.zone = zone
        self._counter = WrappingCounter(_read_int(zone / "max_energy_range_uj"), 1e-6, self.max_power_w)
        self._counter.update(_read_int(zone / "energy_uj"), None)  # the origin; also checks it can be read
        self.info = SourceInfo(name=f"{kind}{index}", kind=kind, method="rapl", detail=str(zone))
        self.accuracy = RAPL_ACCURACY

    @property
    def wraps(self) -> int:
        """Wraps of the counter seen so far."""
        return self._counter.wraps

    def read_within_s(self) -> float | None:
        return self._counter.wrap_s

    def read(self, now: float) -> Reading:
        return self._counter.update(_read_int(self.zone / "energy_uj"), now)


def _zones(root: Path) -> list[tuple[str, int, Path]]:
    """(kind, package index, zone dir) for every package and DRAM zone under root."""
    found: dict[str, tuple[str, int, Path]] = {}
    for zone in sorted(root.glob("intel-rapl:*")):
        try:
            name = (zone / "name").read_text().strip()
        except OSError:
            continue
        package = int(zone.name.split(":")[1])
        if name.startswith("package-"):
            kind, index = "cpu", int(name.split("-")[1])
        elif name == "dram":
            kind, index = "dram", package
        else:  # core, uncore, psys: parts of a package or the whole platform
            continue
        found.setdefault(os.path.realpath(zone), (kind, index, zone))
        for sub in sorted(zone.glob("intel-rapl:*:*")):  # DRAM zones nest under the package
            try:
                if (sub / "name").read_text().strip() == "dram":
                    found.setdefault(os.path.realpath(sub), ("dram", index, sub))
            except OSError:
                continue
    return list(found.values())


def discover_rapl(kinds: set[str], root: Path | None = None) -> tuple[list[RaplSource], list[Notice]]:
    """Open RAPL sources of the requested kinds (``"cpu"``, ``"dram"``).

    Args:
        kinds: Which kinds to open.
        root: The powercap directory; defaults to `POWERCAP_ROOT`.

    Returns:
        Sources and notices. Unreadable counters give no source and one notice saying
        how to grant access.
    """
    root = POWERCAP_ROOT if root is None else root
    sources: list[RaplSource] = []
    notices: list[Notice] = []
    taken: dict[str, set[int]] = {}
    for kind, index, zone in _zones(root):
        if kind not in kinds:
            continue
        numbers = taken.setdefault(kind, set())
        if index in numbers:  # the dies of one package ("package-0-die-1"): one name each
            index = max(numbers) + 1
        numbers.add(index)
        try:
            sources.append(RaplSource(zone, kind, index))
        except PermissionError:
            if not any("readable only by root" in n.text for n in notices):
                notices.append(Notice("warn", PERMISSION_HINT.format(path=zone / "energy_uj")))
        except (OSError, ValueError) as err:
            notices.append(Notice("warn", f"RAPL zone {zone} cannot be read ({err}); skipped."))
    return sources, notices
