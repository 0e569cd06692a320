"""Estimated CPU energy where RAPL cannot be read: TDP x utilisation.

The TDP comes from codecarbon's bundled ``hardware/cpu_power.csv`` when the CPU model is
listed, else 85 W per socket (codecarbon's own constant for unknown CPUs). Utilisation is
the whole machine's busy fraction from ``psutil.cpu_times()`` between two samples. The
result is a model, not a measurement: the source is flagged ``estimated`` and every
report says so.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

import psutil

from energy_core.codecarbon_data import load_csv
from energy_core.devices.source import EnergySource, Reading, SourceInfo
from energy_core.notices import Notice

DEFAULT_TDP_W = 85.0
_NOISE = re.compile(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@\s*[\d.]+\s*ghz|\d+-core", re.IGNORECASE)


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


def _busy_and_total() -> tuple[float, float]:
    times = psutil.cpu_times()
    total = sum(times)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


class EstimatedCpuSource(EnergySource):
    """Estimated CPU energy: TDP x sockets x utilisation, integrated between samples.

    Args:
        tdp_w: Thermal design power of one socket, in watts.
        sockets: Number of CPU packages.
        model: CPU model name, for the record.
    """

    def __init__(self, tdp_w: float, sockets: int, model: str) -> None:
        self.tdp_w = tdp_w
        self.sockets = sockets
        self._joules = 0.0
        self._last_t: float | None = None
        self._last_busy, self._last_total = _busy_and_total()
        self.info = SourceInfo(
            name="cpu0",
            kind="cpu",
            method="tdp-x-utilisation",
            estimated=True,
            detail=f"{model}, {sockets} x {tdp_w:g} W TDP",
        )

    def read(self, now: float) -> Reading:
        busy, total = _busy_and_total()
        if self._last_t is not None and total > self._last_total:
            utilisation = min(1.0, max(0.0, (busy - self._last_busy) / (total - self._last_total)))
            self._joules += self.tdp_w * self.sockets * utilisation * (now - self._last_t)
        self._last_t, self._last_busy, self._last_total = now, busy, total
        return Reading(joules=self._joules)


def estimate_cpu() -> tuple[EstimatedCpuSource, list[Notice]]:
    """An estimated CPU source and the one warning that says it is an estimate."""
    model, sockets = cpu_model()
    tdp = lookup_tdp(model)
    where = "codecarbon's CPU table" if tdp is not None else f"default {DEFAULT_TDP_W:g} W: model not listed"
    tdp = DEFAULT_TDP_W if tdp is None else tdp
    source = EstimatedCpuSource(tdp, sockets, model)
    text = (
        f"CPU energy is ESTIMATED as TDP x utilisation ({model}: {sockets} x {tdp:g} W, {where}), "
        "not read from a hardware counter."
    )
    return source, [Notice("warn", text)]
