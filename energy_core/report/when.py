"""When the energy was used: a run's energy slices over time, the same run started at another hour,
and when a time-shifted run computed.

A run record's window, epoch and summary lines carry the cumulative energy and the training
seconds at each boundary, and its header the wall time of the start, so the run is a list of
`Slice`: the kWh used between two boundaries and when.
`started_at_other_hours` moves those slices, unchanged, to start at each hour of a
recorded intensity series (the what-if of a start time) and charges them as the monitor
does: each slice's kWh x PUE at the intensity in force at its midpoint.

Example:
    >>> from energy_core.carbon.factor import Fixed
    >>> run = [{"type": "header", "time": 0.0, "carbon": {"pue": 1.0}},
    ...        {"type": "window", "elapsed_s": 3600.0, "metrics": {"energy/total_kwh": 2.0}}]
    >>> [round(s.kwh, 3) for s in slices(run)]
    [2.0]
    >>> round(co2e_g(slices(run), Fixed(100.0, "given"), pue=1.0, shift_s=0.0), 1)
    200.0
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from energy_core.carbon.factor import Factor, Series
from energy_core.carbon.run_factors import CARBON
from energy_core.output import keys
from energy_core.output.record import EPOCH, FACTOR, HEADER, SHIFT, SUMMARY, WINDOW
from energy_core.units import J_PER_KWH

HOURS = 24
BOUNDARIES = (WINDOW, EPOCH, SUMMARY)
WHAT_IF_HEAD = ["start (UTC)", "g CO2e", "vs as run"]


@dataclass(frozen=True)
class Slice:
    """The energy used between two boundaries of a run (unix times), in kWh (before PUE)."""

    start: float
    end: float
    kwh: float

    @property
    def middle(self) -> float:
        return (self.start + self.end) / 2


def slices(run: list[dict[str, Any]]) -> list[Slice]:
    """The run's energy between successive boundaries (window, epoch and summary lines), in
    time order: the header's wall time plus each line's training seconds (the meter's clock).
    Empty without a header."""
    header = next((line for line in run if line.get("type") == HEADER), None)
    if header is None or not isinstance(header.get("time"), (int, float)):
        return []
    resumed = header.get("resumed_from") or {}
    energy = resumed.get("energy_j") or {}
    last_kwh = sum(v for v in energy.values() if isinstance(v, (int, float))) / J_PER_KWH  # a checkpoint's share
    base_s = float(resumed.get("fit_s", 0.0))  # the lines' seconds include the checkpoint's too
    start = float(header["time"])
    found: list[Slice] = []
    for line in run:
        metrics = line.get("metrics") or {}
        seconds = line.get("elapsed_s", line.get("seconds") if line.get("type") == SUMMARY else None)
        if line.get("type") not in BOUNDARIES or keys.TOTAL_KWH not in metrics or seconds is None:
            continue
        end, kwh = float(header["time"]) + seconds - base_s, metrics[keys.TOTAL_KWH] - last_kwh
        if end > start and kwh >= 0:
            found.append(Slice(start, end, kwh))
            start, last_kwh = end, metrics[keys.TOTAL_KWH]
    return found


def pue_of(run: list[dict[str, Any]]) -> float:
    """The PUE the run was charged with (1.0 when the record does not say)."""
    header = next((line for line in run if line.get("type") == HEADER), {})
    return float((header.get("carbon") or {}).get("pue", 1.0))


def co2e_g(run_slices: list[Slice], intensity: Factor, pue: float, shift_s: float) -> float:
    """Grams CO2e of these slices moved by ``shift_s`` seconds, each at its midpoint's intensity."""
    return sum(s.kwh * pue * intensity.peek(s.middle + shift_s).value for s in run_slices)


def start_hours(series: Series) -> list[float]:
    """The first `HOURS` whole hours (unix times) from the series' first row: the start times tried."""
    first = series.times[0] - series.times[0] % 3600
    return [first + hour * 3600 for hour in range(HOURS)]


def started_at_other_hours(run: list[dict[str, Any]], series: Series) -> list[list[str]]:
    """Rows of `WHAT_IF_HEAD`: the run as it ran (priced on ``series``), then started at each
    of the first `HOURS` whole hours of the series. Empty when the run logged no energy."""
    run_slices = slices(run)
    if not run_slices:
        return []
    pue, began = pue_of(run), run_slices[0].start
    as_run = co2e_g(run_slices, series, pue, 0.0)
    inside = series.covers(began, run_slices[-1].end)
    rows = [
        ["as run " + _utc(began) + ("" if inside else " (outside the series: its end values)"), f"{as_run:.4g}", "-"]
    ]
    for start in start_hours(series):
        grams = co2e_g(run_slices, series, pue, start - began)
        change = f"{(grams / as_run - 1) * 100:+.0f}%" if as_run > 0 else "-"
        rows.append([_utc(start), f"{grams:.4g}", change])
    series.take_notices()  # a shifted run past the series' ends uses its end values: said in the page's note
    return rows


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _timeline(run: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(unix time of training second 0, unix time of the run's end), or None without a header."""
    header = next((line for line in run if line.get("type") == HEADER), None)
    if header is None or not isinstance(header.get("time"), (int, float)):
        return None
    base = float(header["time"]) - float((header.get("resumed_from") or {}).get("fit_s", 0.0))
    return base, max(float(line.get("time", 0.0)) for line in run)


def computing(run: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """When a time-shifted run computed, in training seconds (the windows' ``elapsed_s``): from its
    start to each pause or requeue, and from each resume to the next; [] for a run never paused."""
    timeline = _timeline(run)
    shifts = [line for line in run if line.get("type") == SHIFT and isinstance(line.get("at"), (int, float))]
    if timeline is None or not shifts:
        return []
    base, end = timeline
    header = next(line for line in run if line.get("type") == HEADER)
    stretches: list[tuple[float, float]] = []
    since: float | None = float(header["time"])
    for line in shifts:
        if line.get("event") in ("pause", "requeue") and since is not None:
            stretches.append((since - base, float(line["at"]) - base))
            since = None
        elif line.get("event") == "resume" and since is None:
            since = float(line["at"])
    if since is not None:
        stretches.append((since - base, end - base))
    return [(a, b) for a, b in stretches if b > a]


def intensity_used(run: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Every carbon intensity the run was charged at (its ``factor`` lines) from when it held, in
    training seconds (0 for one that held before the start), pauses included; [] without a header."""
    timeline = _timeline(run)
    if timeline is None:
        return []
    base, _ = timeline
    return [
        (max(0.0, float(line["since"]) - base), float(line["value"]))
        for line in run
        if line.get("type") == FACTOR and line.get("factor") == CARBON and isinstance(line.get("since"), (int, float))
    ]
