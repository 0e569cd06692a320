"""A run as `energy-report` reads it: what the tables and plots need, kept compact.

A record file is read one line at a time (`energy_core.output.record.record_lines`: damaged
lines are skipped, the first few of each kind named and the others counted). Of each run the
report keeps the header, the last summary, the last power cap and the cumulative figures at
each boundary (window, epoch and summary lines) as columns of floats, some 60 bytes a
boundary: a report on a file of a few hundred MB holds a few tens of MB, not several times
the file.

Example:
    >>> run = Run.of([{"type": "header", "time": 0.0, "carbon": {"pue": 1.0}},
    ...               {"type": "window", "step": 5, "elapsed_s": 3600.0, "metrics": {"energy/total_kwh": 2.0}}])
    >>> run.points.kwh.tolist(), run.kwh
    ([2.0], 2.0)
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from energy_core.carbon.run_factors import CARBON
from energy_core.devices import DEVICE_KINDS
from energy_core.output import keys
from energy_core.output.record import (
    EPOCH,
    FACTOR,
    HEADER,
    POWER_CAP,
    SHIFT,
    SUMMARY,
    TARGET,
    WINDOW,
    Skipped,
    record_lines,
)
from energy_core.units import (
    J_PER_KWH,
    LATEST_TIME,
    MAX_CO2E_KG,
    MAX_G_PER_KWH,
    MAX_JOULES,
    MAX_KWH,
    MAX_PUE,
    MAX_RUN_W,
    MAX_SECONDS,
)

BOUNDARIES = (WINDOW, EPOCH, SUMMARY)
NAN = math.nan
# The runs of one file a report holds: the last ones. A header line of 18 bytes opens a run that
# takes some 2 KB; a file of headers alone would otherwise take a hundred times its size.
MAX_RUNS = 100
# A loss or a metric: float32's largest. Beyond it no training logged it (a damaged record), and a plot's
# axis overflows.
MAX_METRIC = 3.4028234663852886e38


def number(value: Any) -> float | None:
    """A finite float from a record's field (None for anything else: null, a bool, a string, an
    integer of 400 digits in a field the reader does not check)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        found = float(value)
    except OverflowError:
        return None
    return found if math.isfinite(found) else None


def figure(values: Any, key: str) -> float | None:
    """A number from a line's object (None when absent, or not a `number`)."""
    return number(values.get(key) if isinstance(values, dict) else None)


def amount(values: Any, key: str, most: float = math.inf) -> float | None:
    """A figure that cannot be below zero (energy, power, CO2e, time, intensity): None when absent,
    or when it cannot be one (negative, above ``most``: a damaged record), never shown as a figure."""
    value = figure(values, key)
    return value if value is not None and 0 <= value <= most else None


def pue(values: Any) -> float | None:
    """The PUE of a line's ``carbon``: None when absent, or when it cannot be one (a damaged record: below 1,
    or above `MAX_PUE`, the range a run is given), never shown or used as a figure."""
    value = figure(values, "pue")
    return value if value is not None and 1 <= value <= MAX_PUE else None


def metric_value(values: Any, key: str) -> float | None:
    """A loss or a metric's value (either sign): None when absent, or beyond `MAX_METRIC`."""
    value = figure(values, key)
    return value if value is not None and abs(value) <= MAX_METRIC else None


def _list(value: Any) -> list[Any]:
    """A header's list, or an empty one where the record holds something else."""
    return value if isinstance(value, list) else []


def bound_of(values: Any, key: str) -> float | None:
    """The bound of the energy figure ``key`` (its ``_err``, in kWh or, for a ``_j`` key, J) from a
    line's object: None when absent, or when it cannot be one (negative, more than `MAX_JOULES`, not
    finite: a damaged record)."""
    value = figure(values, keys.err(key))
    most = MAX_JOULES if key.endswith("_j") else MAX_JOULES / J_PER_KWH
    return value if value is not None and 0 <= value <= most else None


@dataclass
class Points:
    """The run's boundaries in order, one column per figure (NaN where a line has none)."""

    kind: array = field(default_factory=lambda: array("b"))  # index in BOUNDARIES
    step: array = field(default_factory=lambda: array("d"))
    seconds: array = field(default_factory=lambda: array("d"))  # training seconds so far
    window_s: array = field(default_factory=lambda: array("d"))  # a window line's own training seconds
    kwh: array = field(default_factory=lambda: array("d"))
    kwh_err: array = field(default_factory=lambda: array("d"))  # the bound of kwh (NaN: none recorded)
    watts: array = field(default_factory=lambda: array("d"))
    watts_err: array = field(default_factory=lambda: array("d"))  # the bound of the window's mean power
    intensity: array = field(default_factory=lambda: array("d"))
    co2e_kg: array = field(default_factory=lambda: array("d"))
    gpu_kwh: array = field(default_factory=lambda: array("d"))
    cpu_kwh: array = field(default_factory=lambda: array("d"))
    dram_kwh: array = field(default_factory=lambda: array("d"))
    loss: array = field(default_factory=lambda: array("d"))
    loss_name: str | None = None  # the loss plotted: the first logged name with "loss" in it

    def add(self, line: dict[str, Any]) -> None:
        metrics = line.get("metrics") or {}
        seconds = amount(line, "elapsed_s" if line["type"] != SUMMARY else "seconds", MAX_SECONDS)
        extra = line.get("extra") or {}
        losses = {str(k): loss for k in extra if "loss" in str(k) and (loss := metric_value(extra, k)) is not None}
        if self.loss_name is None and losses and line["type"] == WINDOW:
            self.loss_name = next(iter(losses))
        self.kind.append(BOUNDARIES.index(line["type"]))
        self.step.append(_or_nan(figure(line, "step")))
        self.seconds.append(_or_nan(seconds))
        self.window_s.append(_or_nan(amount(line, "seconds", MAX_SECONDS)) if line["type"] == WINDOW else NAN)
        self.kwh.append(_or_nan(amount(metrics, keys.TOTAL_KWH, MAX_KWH)))
        self.kwh_err.append(_or_nan(bound_of(metrics, keys.TOTAL_KWH)))
        self.watts.append(_or_nan(amount(metrics, keys.TOTAL_W, MAX_RUN_W)))
        self.watts_err.append(_or_nan(_power_err(line, metrics)))
        self.intensity.append(_or_nan(amount(metrics, keys.INTENSITY, MAX_G_PER_KWH)))
        self.co2e_kg.append(_or_nan(amount(metrics, keys.CO2E_KG, MAX_CO2E_KG)))
        for kind in DEVICE_KINDS:
            getattr(self, f"{kind}_kwh").append(_or_nan(amount(metrics, keys.kind_kwh(kind), MAX_KWH)))
        self.loss.append(_or_nan(losses.get(self.loss_name or "")))

    def rows(self, *kinds: str) -> list[int]:
        """The indices of the boundaries of these kinds."""
        wanted = {BOUNDARIES.index(k) for k in kinds}
        return [i for i, k in enumerate(self.kind) if k in wanted]


def utc(t: float) -> str:
    """A unix time as the report shows it: ``2026-11-24 10:00 UTC`` (``?`` outside the dates one can show)."""
    if not 0 <= t <= LATEST_TIME:
        return "?"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _power_err(line: dict[str, Any], metrics: dict[str, Any]) -> float | None:
    """The bound of a window's mean power: its energy's bound (per step, times the steps) over its seconds."""
    per_step, steps, seconds = bound_of(metrics, keys.STEP_J), figure(line, "steps"), figure(line, "seconds")
    if per_step is None or steps is None or not seconds:
        return None
    return per_step * steps / seconds


def _or_nan(value: float | None) -> float:
    return NAN if value is None else value


@dataclass
class Run:
    """One run of a record.

    Attributes:
        header: Its header line.
        summary: Its last summary line (None: crashed or still running).
        metrics: The metrics of its last boundary (summary, else window or epoch).
        caps: Each GPU's cap of its last ``power_cap`` line.
        points: Its boundaries.
        targets: Its ``target`` lines, one per evaluation a target watched.
        shifts: Its ``shift`` lines (a time shift's plans, pauses, resumes, requeues).
        intensities: (unix time from which it held, g/kWh) of every carbon intensity it was charged at.
        last_time: The unix time of its last line.
        number: Its place among the runs of its file (0 for the first).
    """

    header: dict[str, Any]
    summary: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    caps: list[dict[str, Any]] = field(default_factory=list)
    points: Points = field(default_factory=Points)
    targets: list[dict[str, Any]] = field(default_factory=list)
    shifts: list[dict[str, Any]] = field(default_factory=list)
    intensities: list[tuple[float, float]] = field(default_factory=list)
    last_time: float = NAN
    number: int = 0

    def add(self, line: dict[str, Any]) -> None:
        kind = line["type"]
        when = figure(line, "time")
        if when is not None and not when <= self.last_time:  # NaN before the first
            self.last_time = when
        if kind == SHIFT:
            self.shifts.append(line)
        if kind == FACTOR and line.get("factor") == CARBON:
            since, value = figure(line, "since"), figure(line, "value")
            if since is not None and value is not None:
                self.intensities.append((since, value))
        if kind == POWER_CAP:
            self.caps = line.get("caps") or []
        if kind == TARGET:
            self.targets.append(line)
        if kind not in BOUNDARIES:
            return
        if kind == SUMMARY:
            self.summary = line
        if isinstance(line.get("metrics"), dict) and (kind == SUMMARY or self.summary is None):
            self.metrics = line["metrics"]
        self.points.add(line)

    @classmethod
    def of(cls, lines: Iterable[dict[str, Any]]) -> Run:
        """A run from its lines, header first (`energy_core.read_runs` gives them)."""
        found = iter(lines)
        run = cls(next(found))
        for line in found:
            run.add(line)
        return run

    @property
    def kwh(self) -> float:
        """Its total energy (0 when it logged none, or none that can be one)."""
        return amount(self.metrics, keys.TOTAL_KWH, MAX_KWH) or 0.0

    @property
    def estimated_kinds(self) -> list[str]:
        """The device kinds whose energy is an estimate (from the header's sources), in `DEVICE_KINDS` order."""
        hardware = self.header.get("hardware")
        sources = _list(hardware.get("sources")) if isinstance(hardware, dict) else []
        found = {s.get("kind") for s in sources if isinstance(s, dict) and s.get("estimated") is True
                 and isinstance(s.get("kind"), str)}  # fmt: skip
        return [kind for kind in DEVICE_KINDS if kind in found]

    @property
    def not_counted(self) -> dict[str, str]:
        """The device kinds the run's totals leave out, and why (the summary's, else the header's)."""
        for line in (self.summary or {}, self.header):
            found = line.get("not_counted")
            if isinstance(found, dict):
                return {k: str(v) for k, v in found.items() if k in DEVICE_KINDS}
        return {}

    @property
    def started(self) -> float | None:
        """Unix time of its header (its start): None when absent, or not a moment a date can show."""
        return amount(self.header, "time", LATEST_TIME)


def read(path: Path) -> tuple[list[Run], list[str]]:
    """The runs of a record file (the last `MAX_RUNS`) and notes on the lines skipped (the first few
    of each kind named, the rest counted: `Skipped`) and the runs left out, the file read one line at
    a time.

    Raises:
        OSError: ``path`` cannot be opened, is a symbolic link (not followed) or not a regular file.
    """
    runs: dict[int, Run] = {}
    skipped = Skipped()
    for index, line in record_lines(path, skipped):
        if line["type"] == HEADER:  # a header opens each run
            runs[index] = Run(line, number=index)
            if len(runs) > MAX_RUNS:
                del runs[next(iter(runs))]  # the earliest
        elif index in runs:
            runs[index].add(line)
    kept = list(runs.values())
    notes = skipped.notes()
    if kept and kept[0].number:
        notes.append(f"the first {kept[0].number} runs are not reported: at most {MAX_RUNS} runs of a file are, "
                     "the last ones")  # fmt: skip
    return kept, notes
