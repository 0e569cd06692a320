"""When the energy was used: a run's energy slices over time, the same run started at another hour,
and when a time-shifted run computed.

A run record's window, epoch and summary lines carry the cumulative energy and the training
seconds at each boundary, and its header the wall time of the start, so the run is a list of
`Slice`: the kWh used between two boundaries and when.
`started_at_other_hours` moves those slices, unchanged, to start at each hour of a
recorded intensity series (the what-if of a start time) and charges each slice's kWh x PUE
at the intensity in force at its midpoint: the record holds the energy at its boundaries
only, so a change of intensity inside a slice is off by half that slice's energy at most
(the monitors themselves charge at every hardware reading).

Example:
    >>> from energy_core.carbon.factor import Fixed
    >>> run = Run.of([{"type": "header", "time": 0.0, "carbon": {"pue": 1.0}},
    ...               {"type": "window", "elapsed_s": 3600.0, "metrics": {"energy/total_kwh": 2.0}}])
    >>> [round(s.kwh, 3) for s in slices(run)]
    [2.0]
    >>> round(co2e_g(slices(run), Fixed(100.0, "given"), pue=1.0, shift_s=0.0), 1)
    200.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from energy_core.carbon.factor import Factor, Series
from energy_core.output import units_text as show
from energy_core.report.runs import BOUNDARIES, Run, figure, pue, utc
from energy_core.units import J_PER_KWH

HOURS = 24
WHAT_IF_HEAD = ["start", "CO2e", "vs as run"]


@dataclass(frozen=True)
class Slice:
    """The energy used between two boundaries of a run (unix times), in kWh (before PUE)."""

    start: float
    end: float
    kwh: float

    @property
    def middle(self) -> float:
        return (self.start + self.end) / 2


def slices(run: Run) -> list[Slice]:
    """The run's energy between successive boundaries (window, epoch and summary lines), in
    time order: the header's wall time plus each line's training seconds (the meter's clock).
    Empty without the header's time."""
    header = run.header
    if figure(header, "time") is None:
        return []
    resumed = header.get("resumed_from") or {}
    energy = resumed.get("energy_j") or {}
    last_kwh = sum(energy.values()) / J_PER_KWH  # a checkpoint's share (numbers: checked when read)
    base_s = figure(resumed, "fit_s") or 0.0  # the lines' seconds include the checkpoint's too
    start = began = float(header["time"])
    found: list[Slice] = []
    points = run.points
    for i in points.rows(*BOUNDARIES):
        seconds, kwh = points.seconds[i], points.kwh[i]
        if math.isnan(seconds) or math.isnan(kwh):
            continue
        end = began + seconds - base_s
        if end > start and kwh - last_kwh >= 0:
            found.append(Slice(start, end, kwh - last_kwh))
            start, last_kwh = end, kwh
    return found


def pue_of(run: Run) -> float | None:
    """The PUE the run was charged with: 1.0 when the record does not say, None when it says a figure
    that cannot be one (`energy_core.report.runs.pue`: below 1, above `MAX_PUE`, not a number)."""
    carbon = run.header.get("carbon")
    if not isinstance(carbon, dict) or "pue" not in carbon:
        return 1.0
    return pue(carbon)


def co2e_g(run_slices: list[Slice], intensity: Factor, pue: float, shift_s: float) -> float:
    """Grams CO2e of these slices moved by ``shift_s`` seconds, each at its midpoint's intensity."""
    return sum(s.kwh * pue * intensity.peek(s.middle + shift_s).value for s in run_slices)


def start_hours(series: Series) -> list[float]:
    """The first `HOURS` whole hours (unix times) from the series' first row: the start times tried."""
    first = series.times[0] - series.times[0] % 3600
    return [first + hour * 3600 for hour in range(HOURS)]


def started_at_other_hours(run: Run, series: Series) -> list[list[str]]:
    """Rows of `WHAT_IF_HEAD`: the run as it ran (priced on ``series``), then started at each
    of the first `HOURS` whole hours of the series, each CO2e "-" where the header's PUE cannot be
    one (`pue_of`). Empty when the run logged no energy."""
    run_slices = slices(run)
    if not run_slices:
        return []
    run_pue, began = pue_of(run), run_slices[0].start
    inside = series.covers(began, run_slices[-1].end)
    where = "" if inside else " (outside the series: its end values)"
    if run_pue is None:  # a damaged header: no CO2e to show, at any hour
        return [["as run, " + utc(began) + where, "-", "-"]] + [[utc(start), "-", "-"] for start in start_hours(series)]
    as_run = co2e_g(run_slices, series, run_pue, 0.0)
    rows = [["as run, " + utc(began) + where, show.mass(as_run / 1000), "-"]]
    for start in start_hours(series):
        grams = co2e_g(run_slices, series, run_pue, start - began)
        change = f"{(grams / as_run - 1) * 100:+.0f}%" if as_run > 0 else "-"
        rows.append([utc(start), show.mass(grams / 1000), change])
    series.take_notices()  # a shifted run past the series' ends uses its end values: said in the page's note
    return rows


def _timeline(run: Run) -> tuple[float, float] | None:
    """(unix time of training second 0, unix time of the run's end), or None without the header's time."""
    began = figure(run.header, "time")
    if began is None:
        return None
    base = began - (figure(run.header.get("resumed_from"), "fit_s") or 0.0)
    return base, max(began, run.last_time) if run.last_time == run.last_time else began


def computing(run: Run) -> list[tuple[float, float]]:
    """When a time-shifted run computed, in training seconds (the windows' ``elapsed_s``): from its
    start to each pause or requeue, and from each resume to the next; [] for a run never paused."""
    timeline = _timeline(run)
    shifts = [line for line in run.shifts if figure(line, "at") is not None]
    if timeline is None or not shifts:
        return []
    base, end = timeline
    stretches: list[tuple[float, float]] = []
    since: float | None = figure(run.header, "time")
    for line in shifts:
        at = float(line["at"])
        if line.get("event") in ("pause", "requeue") and since is not None:
            stretches.append((since - base, at - base))
            since = None
        elif line.get("event") == "resume" and since is None:
            since = at
    if since is not None:
        stretches.append((since - base, end - base))
    return [(a, b) for a, b in stretches if b > a]


def intensity_used(run: Run) -> list[tuple[float, float]]:
    """Every carbon intensity the run was charged at (its ``factor`` lines) from when it held, in
    training seconds (0 for one that held before the start), pauses included; [] without the header's time."""
    timeline = _timeline(run)
    if timeline is None:
        return []
    base, _ = timeline
    return [(max(0.0, since - base), value) for since, value in run.intensities]
